"""Prune as chosen, save the pruned checkpoint, fine-tune; or resume that fine-tuning.

:func:`choose_ratios` is the one dispatch over the ways of choosing ratios a
:class:`~ppdet.slim.pipelines.requests.PruneRequest` can ask for: given, from a
sensitivities file (to a loss, a FLOPs target or a latency), or one uniform ratio (to a
FLOPs share or a latency).
"""
import os
from dataclasses import dataclass

import paddle

from ppdet.core.errors import UserError
from ppdet.slim.latency import search as latency_search
from ppdet.slim.latency.table import load_latency_table, table_path
from ppdet.slim.prune import search as flops_search
from ppdet.slim.prune.costs import Costs
from ppdet.slim.prune.graph import PruneGraph
from ppdet.slim.prune.params import select_params
from ppdet.slim.prune.ratios import (
    check_filters_left,
    check_sensitivities_fit,
    destructive_warnings,
    pair_ratios,
)

__all__ = ["choose_ratios", "PruneResult", "prune_and_finetune", "resume_folder",
           "resume_finetune"]


def _searched(fn, *args, **kw):
    """A search's result; a target it cannot meet is one line."""
    try:
        return fn(*args, **kw)
    except flops_search.SearchError as e:
        raise UserError(str(e)) from None


def _from_sensitivities(model, image_size, req, graph, table, target_ms):
    from ppdet.slim.sensitivity.store import load_sensitivities_file
    path = req.sensitivities_file
    if (req.loss is None) + (req.target_flops is None) + (target_ms is None) != 2:
        raise UserError("with --sensitivities_file give exactly one of --loss, "
                        "--target_flops, --target_latency or --target_speedup")
    sens = load_sensitivities_file(path)
    if req.pruned_params:
        wanted = select_params(model, req.pruned_params)
        missing = [n for n in wanted if n not in sens]
        if missing:
            raise UserError(f"{path} has no measurements for '{missing[0]}': analyse it with "
                            f"slim/sensitive/sensitive.py first")
        sens = {n: sens[n] for n in wanted}
    check_sensitivities_fit(graph, sens, path, groups=False)
    if req.loss is not None:
        ratios = flops_search.ratios_by_loss(sens, req.loss)
        if not ratios:
            raise UserError(f"no conv stays under loss {req.loss}: raise --loss")
        return ratios, f"ratios for loss <= {req.loss}"
    check_sensitivities_fit(graph, sens, path)
    if target_ms is not None:
        ratios, ms, lost = _searched(latency_search.ratios_for_latency, table, graph, sens,
                                     target_ms)
        return ratios, f"least summed loss ({lost:.4f}) within {target_ms:.2f} ms " \
            f"(predicted {_with_error(table, graph, ratios)})"
    threshold, ratios, got = _searched(flops_search.loss_for_flops, Costs(graph, image_size),
                                       sens, req.target_flops)
    return ratios, f"loss threshold {threshold:.4f} for {got:.1%} fewer FLOPs"


def _uniform_for_flops(model, image_size, req, graph, log):
    names = select_params(model, req.pruned_params)
    costs = Costs(graph, image_size)
    ratio, got = _searched(flops_search.uniform_ratio_for_flops, costs, names, req.target_ratio)
    filters = {p.name: p.shape[0] for p in model.parameters()}
    check_filters_left("--target_ratio", req.target_ratio, ratio,
                       {n: filters[n] for n in names}, req.align,
                       reduction=lambda r: flops_search.flops_reduction(
                           costs, {n: r for n in names}))
    log(f"--target_ratio {req.target_ratio:g} is a share of FLOPs: it takes filter ratio "
        f"{ratio:g} ({ratio:.0%} of the filters of each of {len(names)} convs), "
        f"which removes {got:.1%} of the FLOPs")
    for line in destructive_warnings({n: ratio for n in names}, filters):
        log(line)
    return {n: ratio for n in names}, f"uniform filter ratio {ratio:g} for {got:.1%} " \
        f"fewer FLOPs"


def choose_ratios(model, image_size, req, pruner=None, log=print, table=None, target_ms=None):
    """``({conv: ratio}, how)`` for the request's one way of choosing: explicit ratios, a
    sensitivities file with ``loss`` or ``target_flops``, or uniform pruning of
    ``pruned_params`` to ``target_ratio`` of FLOPs; with a latency ``table`` and
    ``target_ms``, to a latency (per conv from the sensitivities, or one uniform ratio
    snapped to the table's counts, or to multiples of ``align``)."""
    graph = pruner.graph if pruner is not None else PruneGraph.of(model)
    if req.sensitivities_file:
        return _from_sensitivities(model, image_size, req, graph, table, target_ms)
    if not req.pruned_params:
        raise UserError("say what to prune: --pruned_params with --pruned_ratios or "
                        "--target_ratio, or --sensitivities_file with --loss/--target_flops")
    if target_ms is not None:
        names = [n for n in select_params(model, req.pruned_params) if graph.has(n)]
        ratio, ratios, ms = _searched(latency_search.uniform_ratio_for_latency, table, graph,
                                      names, target_ms, align=req.align)
        pm = _with_error(table, graph, ratios)
        log(f"uniform filter ratio {ratio:g} for {len(names)} convs, each count snapped to "
            f"a measured fast one: predicted {pm} (target {target_ms:.2f} ms)")
        return ratios, f"uniform ratio {ratio:g} snapped to fast counts for {pm}"
    if req.target_ratio is not None:
        return _uniform_for_flops(model, image_size, req, graph, log)
    if req.pruned_ratios is None:
        raise UserError("--pruned_params needs --pruned_ratios (or --target_ratio)")
    return pair_ratios(model, req.pruned_params, req.pruned_ratios), \
        "ratios as given (paired with --pruned_params in the order typed)"


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
    history: list = None                # the fine-tuning's evaluations (with --eval)
    epoch_seconds: list = None          # wall time of each fine-tuning epoch


def _kept(graph, ratios, lat):
    from ppdet.slim.prune.costs import removed_for_ratios
    removed = removed_for_ratios(graph, ratios)
    return {k: graph.group(k).size - v for k, v in removed.items() if k in lat.sizes}


def _with_error(lat, graph, ratios):
    """The plan's prediction on the steady table, with the error it can carry."""
    from ppdet.slim.latency.error_bars import predict_plan
    return predict_plan(lat, _kept(graph, ratios, lat))


def _log_predicted(graph, ratios, lat, log, target_ms=None):
    """The latency the plan is predicted to run at, as the searches predict it, with the
    error it can carry; a warning when the table is too coarse for ``target_ms``."""
    from ppdet.slim.latency.error_bars import (
        coarse_warning,
        int8_alignment_warning,
        predict_with_error,
    )
    steady = latency_search.steady(lat)       # fitted once, for all three uses
    kept = _kept(graph, ratios, lat)
    base, ms = predict_with_error(steady, {}), predict_with_error(steady, kept)
    log(f"predicted {lat.precision.upper()} latency {ms} (unpruned {base}, "
        f"{ms.speedup(base)}) on {lat.key['device']}, {lat.key['threads']} thread(s), "
        f"{'x'.join(map(str, lat.key['input_size']))} px; {ms.detail()}")
    for warning in (coarse_warning(steady, kept, target_ms, ms),
                    int8_alignment_warning(kept, lat.sizes) if lat.precision == "int8"
                    else None):
        if warning:
            log(warning)


def _save_pruned(model, save_dir, ratios, lat, log):
    """``<save_dir>/pruned`` (rank 0 writes), and the latency table beside it under its
    default name, where export_model.py and post_quant.py look for it."""
    from ppdet.engine.checkpoint import channel_plan, save_checkpoint
    os.makedirs(save_dir, exist_ok=True)
    pruned = os.path.join(save_dir, "pruned")
    save_checkpoint(model, pruned, plan=channel_plan(model), extra={"ratios": ratios})
    if paddle.distributed.get_rank() == 0:       # the only rank that writes
        if lat is not None:
            import shutil
            target = table_path(pruned, lat.key["input_size"], lat.key["threads"],
                                precision=lat.precision)
            if os.path.abspath(target) != os.path.abspath(lat.path):
                shutil.copyfile(lat.path, target)
        log(f"pruned model (before fine-tuning): {pruned}")
    return pruned


def prune_and_finetune(cfg, req, log=print):
    """Prune the config's ``weights`` as the
    :class:`~ppdet.slim.pipelines.requests.PruneRequest` chooses, save
    ``<save_dir>/<name>_pruned/pruned`` and fine-tune there with the normal training loop
    (under the request's teacher, built and checked before the pruning)."""
    req = req.check()
    from ppdet.engine.builder import build_model, image_size_for
    from ppdet.engine.checkpoint import ensure_outside, load_weights
    from ppdet.engine.distill import distillation_hooks, spec_from_args
    from ppdet.engine.trainer import Trainer, set_seed
    from ppdet.slim.prune.costs import count_flops, count_params
    from ppdet.slim.prune.pruner import FilterPruner
    from ppdet.slim.prune.ratios import align_ratios, prune_model, summary
    set_seed(int(cfg.get("seed", 0)))
    model = build_model(cfg)
    save_dir = os.path.join(cfg.get("save_dir", "output"), cfg["filename"] + "_pruned")
    size = image_size_for(cfg, "eval")
    ensure_outside(cfg.get("weights"), save_dir)
    load_weights(model, cfg.get("weights"))
    # the teacher (by default the model as loaded, unpruned), checked before the pruning
    hooks = distillation_hooks(spec_from_args(req, cfg.get("weights"), save_dir=save_dir),
                               cfg, model)
    pruner = FilterPruner(model, req.criterion, req.idx_selector)
    lat = load_latency_table(cfg, pruner.graph, req.latency_table, req.threads,
                             required=req.wants_latency, precision=req.precision)
    target_ms = _searched(latency_search.latency_target, lat, req.target_latency,
                          req.target_speedup) if req.wants_latency else None
    ratios, how = choose_ratios(model, size, req, pruner=pruner, log=log, table=lat,
                                target_ms=target_ms)
    ratios = align_ratios(model, ratios, req.align)
    if not ratios:
        raise UserError("nothing to prune with these settings")
    if lat is not None:
        _log_predicted(pruner.graph, ratios, lat, log, target_ms)
    flops0, params0 = count_flops(model, size), count_params(model)
    kept = prune_model(model, ratios, pruner=pruner)
    flops1, params1 = count_flops(model, size), count_params(model)
    table = summary(kept, flops0, flops1, params0, params1)
    log(f"{how}:")
    log(table)
    pruned = _save_pruned(model, save_dir, ratios, lat, log)
    result = PruneResult(ratios, how, kept, (flops0, flops1), (params0, params1), save_dir,
                         pruned, table)
    if req.finetune:
        trainer = Trainer(cfg, model=model, hooks=hooks, save_dir=save_dir)
        result.history = trainer.train(validate=req.validate)
        result.epoch_seconds = trainer.epoch_seconds
    return result


def resume_folder(checkpoint):
    """The folder of a checkpoint of this script's fine-tuning, where ``-r`` goes on.

    Refused: a folder without the run's ``pruned.pdparams`` (not a run of this script), or
    one whose ``pruned.pdparams`` has another channel plan (another run's files, which
    resuming there would overwrite)."""
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
    plan rebuilds the shapes), under the teacher the checkpoint records, if any."""
    from ppdet.engine.builder import build_model
    from ppdet.engine.distill import distillation_hooks, spec_from_checkpoint
    from ppdet.engine.trainer import Trainer
    folder = resume_folder(checkpoint)
    model = build_model(cfg)
    hooks = distillation_hooks(spec_from_checkpoint(checkpoint), cfg, model)
    trainer = Trainer(cfg, model=model, hooks=hooks, save_dir=folder)
    trainer.resume(checkpoint)
    trainer.train(validate=validate)
    return folder
