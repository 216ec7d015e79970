"""Measured latency on a deploy target, per pruning group, and pruning to a latency.

Owns the table and its prediction model (:mod:`.table`), what an entry times (:mod:`.specs`),
timing under Paddle Inference (:mod:`.timing`; FP32, or INT8 programs quantized through
``ppdet.engine.legacy_ir``), the quiet-machine gate (:mod:`.gate`), the resumable build
(:mod:`.build`), the latency-target searches (:mod:`.search`) and the error a prediction
carries, with the too-coarse-table check (:mod:`.error_bars`). May import
:mod:`ppdet.slim.prune`, ``ppdet.engine`` (builder, export, latency), ``ppdet.core`` and
``ppdet.utils``; not sensitivity, slimming or pipelines.
"""
from ppdet.utils.lazy import lazy_getattr

# the room's public names, imported on first use (the CLI's start-up stays lean)
_API = {
    "CALIB_FRACTIONS": "build",
    "CALIB_ROUNDS": "build",
    "COARSE_TOL": "error_bars",
    "FORMAT": "table",
    "INSTANCES": "timing",
    "INT8_ALIGN": "error_bars",
    "Int8Pieces": "timing",
    "LatencyTable": "table",
    "LatencyTableError": "table",
    "OLD_FORMATS": "table",
    "PASSES": "build",
    "PRECISIONS": "table",
    "Predicted": "error_bars",
    "QuietGate": "gate",
    "STAT": "timing",
    "build_table": "build",
    "calibration_plans": "build",
    "coarse_warning": "error_bars",
    "counts_for": "table",
    "device_name": "table",
    "fit_residual": "error_bars",
    "group_specs": "specs",
    "int8_alignment_warning": "error_bars",
    "interpolation_error": "error_bars",
    "item_id": "build",
    "key_precision": "table",
    "latency_target": "search",
    "load_latency_table": "table",
    "measure_plans": "build",
    "measured_line": "error_bars",
    "predict_with_error": "error_bars",
    "predict_plan": "error_bars",
    "predicted_latency": "error_bars",
    "quiet_gate": "gate",
    "ratios_for_latency": "search",
    "run_overhead": "timing",
    "solve_measured": "search",
    "steady": "search",
    "structure_digest": "table",
    "table_path": "table",
    "table_precision": "table",
    "target_key": "table",
    "time_program": "timing",
    "time_specs": "timing",
    "timing_noise": "error_bars",
    "uniform_ratio_for_latency": "search",
    "work_items": "build",
}

__getattr__ = lazy_getattr(__name__, _API)
