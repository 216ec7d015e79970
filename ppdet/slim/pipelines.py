"""What the slim/ scripts do, as library functions that return results.

- :func:`analyse_sensitivity`: loss per (conv, ratio) into a sensitivities file;
- :func:`prune_and_finetune`: choose ratios, prune, save ``pruned``, fine-tune;
- :func:`slim_and_finetune`: network slimming (channels by a global BN-scale threshold, then
  residual blocks), save each stage, fine-tune, optionally the before/after table;
- :func:`stage_rows`: the report rows (mAP, params, FLOPs, size, latency) of checkpoints.

Scripts parse and check their options, load the config and make one call. Every step
prints through ``log`` (``print`` by default); only rank 0 writes files.
"""
import os
from dataclasses import dataclass, field

from ppdet.core.errors import UserError
from ppdet.slim.latency import load_latency_table, predicted_latency  # noqa: F401

__all__ = ["SensitivityResult", "PruneResult", "SlimResult", "analyse_sensitivity",
           "prune_and_finetune", "resume_folder", "resume_finetune", "slim_and_finetune",
           "stage_rows", "print_params", "load_latency_table", "predicted_latency"]


def _rank():
    import paddle
    return paddle.distributed.get_rank()


def print_params(cfg, log=print):
    """``--print_params``: every parameter with its shape, convs marked prunable or why not
    (from the pruning graph)."""
    from ppdet.engine.builder import build_model
    from ppdet.slim.params import format_params
    log(format_params(build_model(cfg)))


# --- sensitivity analysis ----------------------------------------------------------------

@dataclass
class SensitivityResult:
    sensitivities: dict                 # {conv: {ratio: loss}}, the whole file
    params: list
    ratios: list
    path: str
    baseline: float


def analyse_sensitivity(cfg, sensitivities_file, pruned_params=None,
                        pruned_ratios=(0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9),
                        criterion="l1_norm", eval_samples=None, batch_size=16, mode="fast",
                        cpu_threads=None, shards=1, shard_id=0, adopt=False, progress=True,
                        log=print, bn_calib=0, stop_loss=None, device="cpu"):
    """Measure the loss of pruning each selected conv by each ratio (restartable: pairs in
    the file are skipped). ``mode``: ``fast`` (masked, one compiled program) or ``real``.
    ``bn_calib``: re-estimate BN statistics on that many training batches (of
    ``batch_size`` images, eval transforms) before every measurement, the baseline's too.
    ``stop_loss``: per conv, ratios in ascending order, none measured past a loss above it
    (see :func:`ppdet.slim.sensitivity.run_sensitivity`).
    ``cpu_threads``: None (default) runs one single-threaded predictor per core this process
    may use, shared with the other sensitivity processes on the machine or node
    (:class:`ppdet.slim.cores.CoreShare`); a number: one predictor with that many threads.
    ``device``: where fast mode's predictor runs, "cpu" or "gpu" (one GPU predictor; see
    :func:`ppdet.slim.fast_eval.check_device`)."""
    from ppdet.engine.builder import (
        build_dataset,
        build_metric_for,
        build_model,
        check_metric_config,
        image_size_for,
    )
    from ppdet.engine.checkpoint import load_weights, resolve_weights
    from ppdet.slim.params import select_params
    from ppdet.slim.pruner import FilterPruner
    from ppdet.slim.sensitivity import (
        CachedEvaluator,
        EvalCache,
        MaskedMeasure,
        RealPruneMeasure,
        eval_set_digest,
        fingerprint,
        run_sensitivity,
    )
    from ppdet.slim.sensitivity_store import SensitivityStore
    model = build_model(cfg)
    params = select_params(model, pruned_params or "*")
    ratios = list(pruned_ratios)
    check_metric_config(cfg)
    image_size_for(cfg, "eval")          # a fixed eval size, needed to cache the eval set
    weights = resolve_weights(cfg.get("weights"))
    dataset = build_dataset(cfg, "eval")
    records = dataset.records[:eval_samples] if eval_samples else dataset.records
    if not records:
        raise UserError(f"the eval set {dataset.anno_path} holds no images")
    weights_file = weights + ".pdparams" if os.path.isfile(weights + ".pdparams") else weights
    calib_fp = calib_set = None
    if bn_calib:
        from ppdet.slim.bn_calib import CalibSet
        train = build_dataset(cfg, "train")
        need = bn_calib * batch_size
        if len(train.records) < need:
            raise UserError(f"--bn_calib {bn_calib} needs {need} training images (batches of "
                            f"--batch_size {batch_size}); {train.anno_path} holds "
                            f"{len(train.records)}: lower --bn_calib or --batch_size")
        calib_fp = {"batches": bn_calib, "batch_size": batch_size,
                    "train set": eval_set_digest(train.records[:need])[:16]}
    fp = fingerprint(cfg, weights_file, eval_set_digest(records), criterion, calib_fp,
                     records=records)
    # the file is checked (and refused) before the slow steps: caching, baseline
    store = SensitivityStore(sensitivities_file, fp, adopt=adopt)
    load_weights(model, weights)
    pruner = FilterPruner(model, criterion)
    pruner.check(params)
    cache = EvalCache(dataset, cfg["EvalReader"]["sample_transforms"], max_samples=eval_samples)
    metric = build_metric_for(cfg, cache.dataset)
    if bn_calib:
        calib_set = CalibSet(train, cfg["EvalReader"]["sample_transforms"], bn_calib,
                             batch_size, progress=progress)
    import contextlib
    share = contextlib.nullcontext()
    workers = None
    if mode == "fast":
        from ppdet.slim.fast_eval import MaskedEvaluator
        evaluator = MaskedEvaluator(model, cache, metric, pruner, batch_size,
                                    threads=cpu_threads or 1, calib=calib_set, device=device,
                                    log=log)
        measure = MaskedMeasure(evaluator)
        if cpu_threads is None and device == "cpu":
            from ppdet.slim.cores import CoreShare
            share = CoreShare()
            workers = share.workers
            measure = [measure] + [MaskedMeasure(evaluator.spawn())
                                   for _ in range(share.cores - 1)]
    else:
        measure = RealPruneMeasure(pruner, CachedEvaluator(model, cache, metric, batch_size),
                                   calib=calib_set)
    log(f"{len(params)} convs x {len(ratios)} ratios, shard {shard_id + 1}/{shards}, "
        f"{len(cache)} eval images, {mode} mode" + (" on the GPU" if device == "gpu" else "")
        + (f", BN recalibrated on {bn_calib} x {batch_size} training images" if bn_calib
           else "") + f", loss on {metric.headline} -> {store.path}")
    try:
        with share:
            if workers is not None:
                log(f"{share.cores} cores: up to {share.cores} predictors (this process and "
                    f"{share.cores - 1} worker process(es)), {share.workers()} while "
                    f"{share.peers()} sensitivity process(es) share them")
            data = run_sensitivity(measure, store, params, ratios, shards, shard_id,
                                   progress=progress, log=log, label=metric.headline,
                                   stop_loss=stop_loss, workers=workers)
    finally:
        if mode == "fast":
            evaluator.close()
    n = sum(len(v) for v in data.values())
    log(f"wrote {store.path} ({n} measurements of {len(data)} convs in all) and "
        f"{store.meta_path}")
    return SensitivityResult(data, params, ratios, store.path, store.baseline)


# --- prune and fine-tune -------------------------------------------------------------------

@dataclass
class PruneResult:
    ratios: dict
    how: str
    kept: dict                          # {conv: (filters before, after)}
    flops: tuple                        # (before, after)
    params: tuple                       # (before, after)
    save_dir: str
    pruned: str                         # checkpoint of the pruned model, before fine-tuning
    summary: str = ""


def prune_and_finetune(cfg, pruned_params=None, pruned_ratios=None, sensitivities_file=None,
                       loss=None, target_flops=None, target_ratio=None, criterion="l1_norm",
                       idx_selector="default", align=None, finetune=True, validate=False,
                       log=print, target_latency=None, target_speedup=None,
                       latency_table=None, threads=1):
    """Prune the config's ``weights`` as chosen (exactly one way: ratios, a sensitivities
    file with ``loss`` or ``target_flops``, or ``target_ratio`` for ``pruned_params``), save
    ``<save_dir>/<name>_pruned/pruned`` and fine-tune there with the normal training loop."""
    from ppdet.engine.builder import build_model, image_size_for
    from ppdet.engine.checkpoint import (
        channel_plan,
        ensure_outside,
        load_weights,
        save_checkpoint,
    )
    from ppdet.engine.trainer import Trainer, set_seed
    from ppdet.slim.plan import count_flops, count_params
    from ppdet.slim.prune_plan import align_ratios, choose_ratios, prune_model, summary
    from ppdet.slim.pruner import FilterPruner
    set_seed(int(cfg.get("seed", 0)))
    model = build_model(cfg)
    save_dir = os.path.join(cfg.get("save_dir", "output"), cfg["filename"] + "_pruned")
    size = image_size_for(cfg, "eval")
    ensure_outside(cfg.get("weights"), save_dir)
    load_weights(model, cfg.get("weights"))
    pruner = FilterPruner(model, criterion, idx_selector)
    wants_latency = target_latency is not None or target_speedup is not None
    lat = load_latency_table(cfg, pruner.graph, latency_table, threads,
                               required=wants_latency)
    target_ms = None
    if wants_latency:
        from ppdet.slim import search
        try:
            target_ms = search.latency_target(lat, target_latency, target_speedup)
        except search.SearchError as e:
            raise UserError(str(e)) from None
    ratios, how = choose_ratios(model, size, pruned_params, pruned_ratios, sensitivities_file,
                                loss, target_flops, target_ratio, pruner=pruner, log=log,
                                table=lat, target_ms=target_ms, align=align)
    ratios = align_ratios(model, ratios, align)
    if not ratios:
        raise UserError("nothing to prune with these settings")
    if lat is not None:
        from ppdet.slim.plan import removed_for_ratios
        removed = removed_for_ratios(pruner.graph, ratios)
        kept = {k: pruner.graph.group(k).size - v for k, v in removed.items()
                if k in lat.sizes}
        from ppdet.slim.search import steady
        base, ms = lat.predict({}), steady(lat).predict(kept)   # as the searches predict
        log(f"predicted latency {ms:.2f} ms (unpruned {base:.2f} ms, {base / ms:.2f}x) on "
            f"{lat.key['device']}, {lat.key['threads']} thread(s), "
            f"{'x'.join(map(str, lat.key['input_size']))} px")
    flops0, params0 = count_flops(model, size), count_params(model)
    kept = prune_model(model, ratios, pruner=pruner)
    flops1, params1 = count_flops(model, size), count_params(model)
    table = summary(kept, flops0, flops1, params0, params1)
    log(f"{how}:")
    log(table)
    os.makedirs(save_dir, exist_ok=True)
    pruned = os.path.join(save_dir, "pruned")
    save_checkpoint(model, pruned, plan=channel_plan(model), extra={"ratios": ratios})
    if lat is not None and _rank() == 0:     # beside the pruned checkpoints too, for export
        import shutil
        target = os.path.join(save_dir, os.path.basename(lat.path))
        if os.path.abspath(target) != os.path.abspath(lat.path):
            shutil.copyfile(lat.path, target)
    if _rank() == 0:                              # the only rank that writes
        log(f"pruned model (before fine-tuning): {pruned}")
    if finetune:
        Trainer(cfg, model=model, save_dir=save_dir).train(validate=validate)
    return PruneResult(ratios, how, kept, (flops0, flops1), (params0, params1), save_dir,
                       pruned, table)


def resume_folder(checkpoint):
    """The folder of a checkpoint of this script's fine-tuning, where ``-r`` goes on.

    Refused: a folder without the run's ``pruned.pdparams`` (not a run of this script), or
    one whose ``pruned.pdparams`` has another channel plan (another run's files, which
    resuming there would overwrite)."""
    import paddle

    from ppdet.engine.checkpoint import META_KEY, CheckpointError, resolve_weights
    base = os.path.abspath(resolve_weights(checkpoint))
    folder = os.path.dirname(base)

    def plan_of(path):
        try:
            state = paddle.load(path + ".pdparams")
        except Exception as e:
            raise CheckpointError(f"cannot read weights {path}.pdparams: "
                                  f"{type(e).__name__}") from e
        meta = (state.get(META_KEY) if isinstance(state, dict) else None) or {}
        return ((meta.get("prune_plan") or {}).get("layers") or {},
                meta.get("channel_plan") or {})

    first = os.path.join(folder, "pruned")
    if not os.path.isfile(first + ".pdparams"):
        raise UserError(f"-r {checkpoint}: {folder} holds no pruned.pdparams, so it is not a "
                        f"run of slim/prune/prune.py; resume other runs with tools/train.py -r")
    if first != base and plan_of(first) != plan_of(base):
        raise UserError(f"-r {checkpoint}: {folder} holds another run's files (its "
                        f"pruned.pdparams has another channel plan); resuming there would "
                        f"overwrite them: copy the checkpoint to a folder of its own")
    return folder


def resume_finetune(cfg, checkpoint, validate=False):
    """Go on fine-tuning from a checkpoint of :func:`prune_and_finetune`, in its folder (its
    plan rebuilds the shapes)."""
    from ppdet.engine.builder import build_model
    from ppdet.engine.trainer import Trainer
    folder = resume_folder(checkpoint)
    trainer = Trainer(cfg, model=build_model(cfg), save_dir=folder)
    trainer.resume(checkpoint)
    trainer.train(validate=validate)
    return folder


# --- network slimming ---------------------------------------------------------------------

@dataclass
class SlimResult:
    threshold: float
    kept: dict                          # {layer: (channels before, after)}
    removed_blocks: list                # [(path, mean |gamma|)]
    stages: list = field(default_factory=list)   # [(label, weights)]
    save_dir: str = ""
    table: str = ""                     # the before/after report, when asked for


def slim_and_finetune(cfg, global_percent=0.2, layer_keep=0.0, shortcuts=0, prune_mode=1,
                      dw_rule="max", finetune=False, validate=False, report=None,
                      verbose=False, log=print):
    """Prune channels by a global BN-scale threshold (folding removed offsets into the next
    layers), then ``shortcuts`` residual blocks; save ``channels`` (and ``layers``), fine-tune,
    and with ``report`` write the before/after table there."""
    from ppdet.engine.builder import build_model, image_size_for
    from ppdet.engine.checkpoint import (
        channel_plan,
        ensure_outside,
        load_weights,
        save_checkpoint,
    )
    from ppdet.engine.trainer import Trainer, set_seed
    from ppdet.slim import slimming
    from ppdet.slim.plan import count_flops, count_params
    set_seed(int(cfg.get("seed", 0)))
    size = image_size_for(cfg, "eval")
    save_dir = os.path.join(cfg.get("save_dir", "output"), cfg["filename"] + "_slim")
    ensure_outside(cfg.get("weights"), save_dir)
    model = build_model(cfg)
    load_weights(model, cfg.get("weights"))
    slimming.check_shortcuts(model, shortcuts)
    flops0, params0 = count_flops(model, size), count_params(model)

    graph = slimming.SlimGraph(model, prune_mode)
    blocked = [g for g in graph.groups if g.blocked]
    log(f"{len(graph.prunable)} prunable groups, {len(blocked)} left whole"
        + (":" if verbose else " (-v lists them)"))
    for g in blocked if verbose else []:
        log(f"  {g.layers[0].name if g.layers else g.master}: {g.blocked}")
    threshold, safe = slimming.global_threshold(graph, global_percent)
    log(f"global threshold {threshold:.4f} (largest safe one: {safe:.4f}, the smallest "
        f"per-layer max |gamma|)")
    if threshold > safe:
        if layer_keep <= 0:
            raise UserError(f"--global_percent {global_percent} gives threshold "
                            f"{threshold:.4f}, above {safe:.4f}: some layer would lose every "
                            f"channel; lower --global_percent, or give --layer_keep")
        log(f"threshold above {safe:.4f}: layers with no |gamma| over it keep their "
            f"--layer_keep {layer_keep} share (largest gammas)")
    masks = slimming.group_masks(graph, threshold, layer_keep, dw_rule)
    kept = slimming.prune_channels(graph, masks)
    total = sum(b for b, _ in kept.values()) if kept else 0
    gone = sum(b - a for b, a in kept.values()) if kept else 0
    log("| layer | total channels | remaining |\n|---|---|---|")
    for name, (b, a) in kept.items():
        log(f"| {name} | {b} | {a} |")
    log(f"pruned channels: {gone} of {total} in pruned groups ({gone / max(total, 1):.1%})")
    os.makedirs(save_dir, exist_ok=True)
    result = SlimResult(threshold, kept, [], [("Before", cfg.get("weights"))], save_dir)

    def checkpoint(name, label):
        flops, params = count_flops(model, size), count_params(model)
        log(f"{label}: params {params0:,} -> {params:,} ({1 - params / params0:.1%} fewer), "
            f"FLOPs {flops0 / 1e6:.1f}M -> {flops / 1e6:.1f}M ({1 - flops / flops0:.1%} "
            f"fewer)")
        path = os.path.join(save_dir, name)
        save_checkpoint(model, path, plan=channel_plan(model), extra={"slim": {
            "global_percent": global_percent, "layer_keep": layer_keep,
            "threshold": threshold, "dw_rule": dw_rule}})
        if _rank() == 0:                          # the only rank that writes
            log(f"saved {path}.pdparams")
        result.stages.append((label, path))

    checkpoint("channels", "After prune channels")
    if shortcuts:
        result.removed_blocks = slimming.prune_layers(model, shortcuts)
        for path, score in result.removed_blocks:
            log(f"removed residual block {path} (mean |gamma| {score:.4f})")
        checkpoint("layers", "After prune layers")
    if finetune:
        Trainer(cfg, model=model, save_dir=save_dir).train(validate=validate)
        best = os.path.join(save_dir, "best_model")
        result.stages.append(("After finetune", best if validate and os.path.isfile(
            best + ".pdparams") else os.path.join(save_dir, "model_final")))
    if report and _rank() == 0:
        from ppdet.slim.report import stage_table
        from ppdet.utils.atomic import atomic_write_bytes
        result.table = stage_table(stage_rows(cfg, result.stages))
        log(result.table)
        atomic_write_bytes(report, (result.table + "\n").encode())
        log(f"written to {report}")
    return result


# --- report rows -------------------------------------------------------------------------

def stage_rows(cfg, stages):
    """``[(label, weights)]`` -> ``[(label, row)]``: mAP, params, FLOPs, size and latency
    of each checkpoint (``ppdet.slim.report.model_row``), each exported to a temporary
    folder."""
    import tempfile

    from ppdet.slim.report import model_row
    rows = []
    for label, weights in stages:
        with tempfile.TemporaryDirectory(prefix="slim_report_") as tmp:
            rows.append((label, model_row(cfg, weights, tmp)))
    return rows
