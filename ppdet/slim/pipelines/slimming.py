"""Network slimming as one call: channels by a global BN-scale threshold, then residual
blocks, each stage saved, then fine-tuning and the before/after table."""
import os
from dataclasses import dataclass, field

import paddle

from ppdet.core.errors import UserError
from ppdet.slim.prune.costs import count_flops, count_params
from ppdet.slim.slimming import channels, layers

__all__ = ["SlimResult", "slim_and_finetune"]


@dataclass
class SlimResult:
    threshold: float
    kept: dict                          # {layer: (channels before, after)}
    removed_blocks: list                # [(path, mean |gamma|)]
    stages: list = field(default_factory=list)   # [(label, weights)]
    save_dir: str = ""
    table: str = ""                     # the before/after report, when asked for


def _prune_channels(model, req, log):
    """``(threshold, kept)``: the global threshold's channels cut, what was kept logged."""
    graph = channels.SlimGraph(model, req.prune_mode)
    blocked = [g for g in graph.groups if g.blocked]
    log(f"{len(graph.prunable)} prunable groups, {len(blocked)} left whole"
        + (":" if req.verbose else " (-v lists them)"))
    for g in blocked if req.verbose else []:
        log(f"  {g.layers[0].name if g.layers else g.master}: {g.blocked}")
    threshold, safe = channels.global_threshold(graph, req.global_percent)
    log(f"global threshold {threshold:.4f} (largest safe one: {safe:.4f}, the smallest "
        f"per-layer max |gamma|)")
    if threshold > safe:
        if req.layer_keep <= 0:
            raise UserError(f"--global_percent {req.global_percent} gives threshold "
                            f"{threshold:.4f}, above {safe:.4f}: some layer would lose every "
                            f"channel; lower --global_percent, or give --layer_keep")
        log(f"threshold above {safe:.4f}: layers with no |gamma| over it keep their "
            f"--layer_keep {req.layer_keep} share (largest gammas)")
    masks = channels.group_masks(graph, threshold, req.layer_keep, req.dw_rule)
    kept = channels.prune_channels(graph, masks)
    total = sum(b for b, _ in kept.values()) if kept else 0
    gone = sum(b - a for b, a in kept.values()) if kept else 0
    log("| layer | total channels | remaining |\n|---|---|---|")
    for name, (b, a) in kept.items():
        log(f"| {name} | {b} | {a} |")
    log(f"pruned channels: {gone} of {total} in pruned groups ({gone / max(total, 1):.1%})")
    return threshold, kept


def _write_report(cfg, result, path, log):
    from ppdet.slim.report import stage_rows, stage_table
    from ppdet.utils.atomic import atomic_write_bytes
    result.table = stage_table(stage_rows(cfg, result.stages))
    log(result.table)
    atomic_write_bytes(path, (result.table + "\n").encode())
    log(f"written to {path}")


def slim_and_finetune(cfg, req, log=print):
    """Prune channels by a global BN-scale threshold (folding removed offsets into the next
    layers), then ``req.shortcuts`` residual blocks; save ``channels`` (and ``layers``),
    fine-tune, and with ``req.report`` write the before/after table there."""
    req = req.check()
    from ppdet.engine.builder import build_model, image_size_for
    from ppdet.engine.checkpoint import channel_plan, ensure_outside, load_weights, save_checkpoint
    from ppdet.engine.distill import distillation_hooks, spec_from_args
    from ppdet.engine.trainer import Trainer, set_seed
    set_seed(int(cfg.get("seed", 0)))
    size = image_size_for(cfg, "eval")
    save_dir = os.path.join(cfg.get("save_dir", "output"), cfg["filename"] + "_slim")
    ensure_outside(cfg.get("weights"), save_dir)
    model = build_model(cfg)
    load_weights(model, cfg.get("weights"))
    # the teacher (by default the model before slimming), checked before the slimming
    hooks = distillation_hooks(spec_from_args(req, cfg.get("weights"), save_dir=save_dir),
                               cfg, model)
    layers.check_shortcuts(model, req.shortcuts)
    flops0, params0 = count_flops(model, size), count_params(model)
    threshold, kept = _prune_channels(model, req, log)
    os.makedirs(save_dir, exist_ok=True)
    result = SlimResult(threshold, kept, [], [("Before", cfg.get("weights"))], save_dir)
    settings = {"global_percent": req.global_percent, "layer_keep": req.layer_keep,
                "threshold": threshold, "dw_rule": req.dw_rule}

    def checkpoint(name, label):
        flops, params = count_flops(model, size), count_params(model)
        log(f"{label}: params {params0:,} -> {params:,} ({1 - params / params0:.1%} fewer), "
            f"FLOPs {flops0 / 1e6:.1f}M -> {flops / 1e6:.1f}M ({1 - flops / flops0:.1%} "
            f"fewer)")
        path = os.path.join(save_dir, name)
        save_checkpoint(model, path, plan=channel_plan(model), extra={"slim": settings})
        if paddle.distributed.get_rank() == 0:      # the only rank that writes
            log(f"saved {path}.pdparams")
        result.stages.append((label, path))

    checkpoint("channels", "After prune channels")
    if req.shortcuts:
        result.removed_blocks = layers.prune_layers(model, req.shortcuts)
        for path, score in result.removed_blocks:
            log(f"removed residual block {path} (mean |gamma| {score:.4f})")
        checkpoint("layers", "After prune layers")
    if req.finetune:
        Trainer(cfg, model=model, hooks=hooks, save_dir=save_dir).train(validate=req.validate)
        best = os.path.join(save_dir, "best_model")
        result.stages.append(("After finetune", best if req.validate and os.path.isfile(
            best + ".pdparams") else os.path.join(save_dir, "model_final")))
    if req.report and paddle.distributed.get_rank() == 0:
        _write_report(cfg, result, req.report, log)
    return result
