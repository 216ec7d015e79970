"""Sensitivity analysis: the mAP lost when each conv loses a share of its filters.

Owns the runner (:mod:`.analysis`: pairs, measures, stop-loss, progress), the crash-safe
multi-writer sensitivities file with its sidecar (:mod:`.store`), the eval set decoded once
(:mod:`.cache`), BN recalibration (:mod:`.bn_calib`), and fast mode: one masked program
compiled once (:mod:`.fast_eval`), programs cut part-way into the model (:mod:`.cuts`),
worker processes (:mod:`.worker`) and core sharing between processes (:mod:`.cores`). May
import :mod:`ppdet.slim.prune`, ``ppdet.engine.evaluate`` / ``weights``, ``ppdet.data``,
``ppdet.modeling``, ``ppdet.core`` and ``ppdet.utils``; not latency, slimming or pipelines.
"""
from ppdet.utils.lazy import lazy_getattr

# the room's public names, imported on first use (the CLI's start-up stays lean)
_API = {
    "CachedEvaluator": "analysis",
    "CalibSet": "bn_calib",
    "CoreShare": "cores",
    "Cut": "cuts",
    "EvalCache": "cache",
    "META_SUFFIX": "store",
    "MaskedEvaluator": "fast_eval",
    "MaskedMeasure": "analysis",
    "RealPruneMeasure": "analysis",
    "SensitivityStore": "store",
    "Worker": "worker",
    "affine_correction": "bn_calib",
    "bn_layers": "bn_calib",
    "calibrated_stats": "bn_calib",
    "check_device": "fast_eval",
    "cpu_cores": "cores",
    "cuts_of": "cuts",
    "eval_set_digest": "cache",
    "fingerprint": "analysis",
    "launch_local_size": "cores",
    "legacy_eval_set_digest": "analysis",
    "load_sensitivities_file": "store",
    "make_predictor": "worker",
    "merge_files": "store",
    "merge_with_sidecars": "store",
    "norm_ratio": "store",
    "plan_pairs": "analysis",
    "prefix_states": "cuts",
    "read_meta": "store",
    "run_batches": "worker",
    "run_sensitivity": "analysis",
    "save_arrays": "worker",
    "set_stats": "bn_calib",
    "stats_of": "bn_calib",
    "stopped_by": "analysis",
    "trace_cut": "cuts",
    "using_stats": "bn_calib",
}

__getattr__ = lazy_getattr(__name__, _API)
