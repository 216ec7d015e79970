"""Post-training INT8 quantization of exported detectors, and running them on the CPU.

This package owns the INT8 route: ``pipeline.post_quant`` (export FP32, calibrate in a child
process, write ``<run>_int8/`` with ``precision: int8`` in its ``infer_cfg.yml``, score both
through the predictor), the child (``worker``), the CPU feature check (``cpu``), the report
rows (``report``), the mAP of an exported model (``evaluation``) and per-conv quantization
sensitivity with the FP32 skip list it chooses (``sensitivity``). Every touch of the
legacy IR (``FLAGS_enable_pir_api``, ``ProgramDesc``) and of Paddle's quantization internals
(``PostTrainingQuantization``, the INT8 Paddle Inference config) lives in ``legacy_ir`` and
nowhere else. It may import ``ppdet.core``, ``ppdet.data``, ``ppdet.engine``, ``ppdet.utils``
and ``ppdet.metrics``; it imports nothing else from ``ppdet.slim``, and nothing under
``ppdet.engine`` imports it except ``Predictor``, lazily, for a model marked INT8.
"""
