"""Sensitivity analysis as one call: ``--print_params``, and the loss per (conv, ratio)
written into a sensitivities file (restartable, shared by several processes)."""
import contextlib
import os
from dataclasses import dataclass

from ppdet.core.errors import UserError

__all__ = ["print_params", "SensitivityResult", "analyse_sensitivity"]


def print_params(cfg, log=print):
    """``--print_params``: every parameter with its shape, convs marked prunable or why not
    (from the pruning graph)."""
    from ppdet.engine.builder import build_model
    from ppdet.slim.prune.params import format_params
    log(format_params(build_model(cfg)))


@dataclass
class SensitivityResult:
    sensitivities: dict                 # {conv: {ratio: loss}}, the whole file
    params: list
    ratios: list
    path: str
    baseline: float


def _calibration_set(cfg, req):
    """``(training dataset, fingerprint part)`` for ``--bn_calib``, or ``(None, None)``;
    a training set too small for it is one line."""
    if not req.bn_calib:
        return None, None
    from ppdet.engine.builder import build_dataset
    from ppdet.slim.sensitivity.cache import eval_set_digest
    train = build_dataset(cfg, "train")
    need = req.bn_calib * req.batch_size
    if len(train.records) < need:
        raise UserError(f"--bn_calib {req.bn_calib} needs {need} training images (batches of "
                        f"--batch_size {req.batch_size}); {train.anno_path} holds "
                        f"{len(train.records)}: lower --bn_calib or --batch_size")
    return train, {"batches": req.bn_calib, "batch_size": req.batch_size,
                   "train set": eval_set_digest(train.records[:need])[:16]}


def _measures(req, model, pruner, cache, metric, calib_set, log):
    """``(measure or [measures], evaluator to close or None, core share, workers)``:
    fast mode's masked evaluator (one per core this process may use), or real pruning."""
    from ppdet.slim.sensitivity.analysis import CachedEvaluator, MaskedMeasure, RealPruneMeasure
    if req.mode != "fast":
        return (RealPruneMeasure(pruner, CachedEvaluator(model, cache, metric, req.batch_size),
                                 calib=calib_set), None, contextlib.nullcontext(), None)
    from ppdet.slim.sensitivity.fast_eval import MaskedEvaluator
    evaluator = MaskedEvaluator(model, cache, metric, pruner, req.batch_size,
                                threads=req.cpu_threads or 1, calib=calib_set,
                                device=req.device, log=log)
    measure = MaskedMeasure(evaluator)
    if req.cpu_threads is not None or req.device != "cpu":
        return measure, evaluator, contextlib.nullcontext(), None
    from ppdet.slim.sensitivity.cores import CoreShare
    share = CoreShare()
    return ([measure] + [MaskedMeasure(evaluator.spawn()) for _ in range(share.cores - 1)],
            evaluator, share, share.workers)


def analyse_sensitivity(cfg, req, log=print):
    """Measure the loss of pruning each selected conv by each ratio of the
    :class:`~ppdet.slim.pipelines.requests.SensitivityRequest` (restartable: pairs in the
    file are skipped). The file is checked, and refused, before the slow steps (caching
    the eval set, the baseline)."""
    req = req.check()
    from ppdet.engine.builder import build_model
    from ppdet.slim.prune.params import select_params
    model = build_model(cfg)
    params = select_params(model, req.pruned_params or "*")
    ratios = list(req.pruned_ratios)
    weights, dataset, train, store = _open_store(cfg, req)
    cache, metric, (measure, evaluator, share, workers) = _prepare_measures(
        cfg, req, model, weights, params, dataset, train, log)
    log(f"{len(params)} convs x {len(ratios)} ratios, shard {req.shard_id + 1}/{req.shards}, "
        f"{len(cache)} eval images, {req.mode} mode"
        + (" on the GPU" if req.device == "gpu" else "")
        + (f", BN recalibrated on {req.bn_calib} x {req.batch_size} training images"
           if req.bn_calib else "") + f", loss on {metric.headline} -> {store.path}")
    from ppdet.slim.sensitivity.analysis import run_sensitivity
    try:
        with share:
            if workers is not None:
                log(f"{share.cores} cores: up to {share.cores} predictors (this process and "
                    f"{share.cores - 1} worker process(es)), {share.workers()} while "
                    f"{share.peers()} sensitivity process(es) share them")
            data = run_sensitivity(measure, store, params, ratios, req.shards, req.shard_id,
                                   progress=req.progress, log=log, label=metric.headline,
                                   stop_loss=req.stop_loss, workers=workers)
    finally:
        if evaluator is not None:
            evaluator.close()
    n = sum(len(v) for v in data.values())
    log(f"wrote {store.path} ({n} measurements of {len(data)} convs in all) and "
        f"{store.meta_path}")
    return SensitivityResult(data, params, ratios, store.path, store.baseline)


def _open_store(cfg, req):
    """``(weights, eval dataset, calibration training set or None, store)``: the checks
    that need no model run, then the sensitivities file opened under its fingerprint (a
    file measured under another is refused here, before the slow steps)."""
    from ppdet.engine.builder import build_dataset, check_metric_config, image_size_for
    from ppdet.engine.checkpoint import resolve_weights
    from ppdet.slim.sensitivity.analysis import fingerprint
    from ppdet.slim.sensitivity.cache import eval_set_digest
    from ppdet.slim.sensitivity.store import SensitivityStore
    check_metric_config(cfg)
    image_size_for(cfg, "eval")          # a fixed eval size, needed to cache the eval set
    weights = resolve_weights(cfg.get("weights"))
    dataset = build_dataset(cfg, "eval")
    records = dataset.records[:req.eval_samples] if req.eval_samples else dataset.records
    if not records:
        raise UserError(f"the eval set {dataset.anno_path} holds no images")
    weights_file = weights + ".pdparams" if os.path.isfile(weights + ".pdparams") else weights
    train, calib_fp = _calibration_set(cfg, req)
    fp = fingerprint(cfg, weights_file, eval_set_digest(records), req.criterion, calib_fp,
                     records=records)
    store = SensitivityStore(req.sensitivities_file, fp, adopt=req.adopt)
    return weights, dataset, train, store


def _prepare_measures(cfg, req, model, weights, params, dataset, train, log):
    """``(eval cache, metric, _measures(...))``: the weights loaded, the pruner checked,
    the eval set cached and the BN calibration set made."""
    from ppdet.engine.builder import build_metric_for
    from ppdet.engine.checkpoint import load_weights
    from ppdet.slim.prune.pruner import FilterPruner
    from ppdet.slim.sensitivity.bn_calib import CalibSet
    from ppdet.slim.sensitivity.cache import EvalCache
    load_weights(model, weights)
    pruner = FilterPruner(model, req.criterion)
    pruner.check(params)
    transforms = cfg["EvalReader"]["sample_transforms"]
    cache = EvalCache(dataset, transforms, max_samples=req.eval_samples)
    metric = build_metric_for(cfg, cache.dataset)
    calib_set = CalibSet(train, transforms, req.bn_calib, req.batch_size,
                         progress=req.progress) if req.bn_calib else None
    return cache, metric, _measures(req, model, pruner, cache, metric, calib_set, log)
