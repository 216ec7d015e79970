"""Post-training INT8 quantization of exported detectors.

This room owns the INT8 route: ``pipeline.post_quant`` (export FP32, calibrate in a child
process, write ``<run>_int8/`` with ``precision: int8`` in its ``infer_cfg.yml``, score both
through the predictor), the report rows (``report``), the mAP of an
exported model (``evaluation``) and per-conv quantization sensitivity with the FP32 skip list
it chooses (``sensitivity``). Every touch of the legacy IR and of Paddle's quantization
internals (``FLAGS_enable_pir_api``, ``ProgramDesc``, ``PostTrainingQuantization``, the INT8
Paddle Inference config) lives in :mod:`ppdet.engine.legacy_ir`, beside the predictor that
needs it at deploy time, and the CPU feature check in :mod:`ppdet.engine.cpu_features`. It
may import ``ppdet.core``, ``ppdet.data``, ``ppdet.engine``, ``ppdet.metrics`` and
``ppdet.utils``; nothing else of ``ppdet.slim``, and only the scripts import it.
"""
