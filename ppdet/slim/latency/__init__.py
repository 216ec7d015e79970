"""Measured latency on a deploy target, per pruning group, and pruning to a latency.

Owns the table and its prediction model (:mod:`.table`), what an entry times (:mod:`.specs`),
timing under Paddle Inference (:mod:`.timing`), the quiet-machine gate (:mod:`.gate`), the
resumable build (:mod:`.build`) and the latency-target searches (:mod:`.search`). May import
:mod:`ppdet.slim.prune`, ``ppdet.engine`` (builder, export, latency), ``ppdet.core`` and
``ppdet.utils``; not sensitivity, slimming or pipelines.
"""
from ppdet.utils.lazy import lazy_getattr

# the room's public names, imported on first use (the CLI's start-up stays lean)
_API = {
    "CALIB_FRACTIONS": "build",
    "CALIB_ROUNDS": "build",
    "FORMAT": "table",
    "INSTANCES": "timing",
    "LatencyTable": "table",
    "LatencyTableError": "table",
    "OLD_FORMATS": "table",
    "PASSES": "build",
    "QuietGate": "gate",
    "STAT": "timing",
    "build_table": "build",
    "calibration_plans": "build",
    "counts_for": "table",
    "device_name": "table",
    "group_specs": "specs",
    "item_id": "build",
    "latency_target": "search",
    "load_latency_table": "table",
    "measure_plans": "build",
    "predicted_latency": "table",
    "quiet_gate": "gate",
    "ratios_for_latency": "search",
    "run_overhead": "timing",
    "solve_measured": "search",
    "steady": "search",
    "structure_digest": "table",
    "table_path": "table",
    "target_key": "table",
    "time_program": "timing",
    "time_specs": "timing",
    "uniform_ratio_for_latency": "search",
    "work_items": "build",
}

__getattr__ = lazy_getattr(__name__, _API)
