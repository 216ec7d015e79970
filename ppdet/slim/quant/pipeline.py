"""Post-training quantization, end to end: ``post_quant(QuantRequest) -> QuantResult``.

1. The checkpoint is rebuilt with its channel plan (a pruned one keeps its pruned shapes)
   and exported in FP32 (legacy ``model.pdmodel``) to a staging folder beside the target.
2. ``calib_samples`` images of the config's TrainDataset, through the EvalReader's
   transforms, are written there as one ``calib.npz``.
3. A child process (``legacy_ir.quantize_programs``, PIR off in its environment before
   paddle is imported) calibrates and writes the INT8 program; this process never changes
   its IR.
4. The INT8 program is checked (quantized convs present, conv weight shapes equal the FP32
   export's), ``infer_cfg.yml`` gets ``precision: int8``, and the folder is swapped into
   ``<output_dir>/<run>_int8/`` whole (``ppdet.utils.atomic.atomic_dir``).
5. FP32 and INT8 mAP through the predictor on the config's eval set (``evaluation``).

Every option is checked (``QuantRequest.check``, then the data in ``check_request``) before
the first slow step; a failure leaves
the previous ``<run>_int8/`` as it was.
"""
import contextlib
import os
import shutil
import tempfile
from dataclasses import dataclass

import numpy as np
import yaml

from ppdet.core.errors import UserError
from ppdet.engine import legacy_ir
from ppdet.utils.cli import ArgsRequest, arg_field

__all__ = ["QuantRequest", "QuantResult", "check_request", "post_quant", "calibration_feeds",
           "calibrate", "int8_folder_name"]

_INPUTS = ("image", "im_shape", "scale_factor")


@dataclass
class QuantRequest(ArgsRequest):
    """``slim/quant/post_quant.py``: quantize ``weights`` (built from ``from_args`` with
    ``cfg``, ``weights`` and ``skip`` given), calibrating on ``calib_samples`` TrainDataset
    images with ``algo``."""
    cfg: dict
    weights: str
    output_dir: str = "output_inference"
    algo: str = "hist"
    calib_samples: int = 32
    calib_batch_size: int = 8
    skip: tuple = ()                 # conv weight names kept in FP32
    evaluate: bool = arg_field("no_eval", invert=True, default=True)   # mAPs via predictor
    threads: int = arg_field("cpu_threads", default=1)
    folder: str = None               # the output folder (default <output_dir>/<run>_int8)
    log: object = print

    def check(self):
        """The options alone, before the data or the model are touched."""
        from ppdet.engine.checkpoint import resolve_weights
        from ppdet.utils.cli import check_range, check_writable_dir
        if self.algo not in legacy_ir.ALGOS:
            raise UserError(f"--algo {self.algo} is not one of {', '.join(legacy_ir.ALGOS)} "
                            f"(Paddle's names)")
        check_range("--calib_samples", self.calib_samples, 1, integer=True)
        check_range("--calib_batch_size", self.calib_batch_size, 1, integer=True)
        check_range("--threads", self.threads, 1, integer=True)
        if self.calib_samples < self.calib_batch_size:
            raise UserError(f"--calib_samples {self.calib_samples} is smaller than one batch "
                            f"(--calib_batch_size {self.calib_batch_size})")
        check_writable_dir("--output_dir", self.output_dir)
        if not self.weights:
            raise UserError("no weights: give -o weights=PATH (a trained or pruned "
                            "checkpoint)")
        resolve_weights(self.weights)
        self.skip = tuple(self.skip)
        return self


@dataclass
class QuantResult:
    out_dir: str
    calib_samples: int
    quantized_convs: list
    quant_ops: dict
    conv_shapes: dict
    fp32_map: float = None
    int8_map: float = None
    metric: str = None


def int8_folder_name(cfg, weights, meta=None):
    from ppdet.utils.outputs import run_name
    return run_name(cfg, weights, meta) + "_int8"


def check_request(req):
    """The request's options, then its data (before anything slow); returns the
    calibration dataset."""
    from ppdet.engine.builder import build_dataset, check_metric_config
    req.check()
    if req.evaluate:
        check_metric_config(req.cfg)
    dataset = build_dataset(req.cfg, "train")
    n = len(dataset.records)
    if n < req.calib_batch_size:
        raise UserError(f"the calibration set (TrainDataset, {dataset.anno_path}) has {n} "
                        f"images, fewer than one batch of {req.calib_batch_size}")
    return dataset


def calibration_feeds(cfg, dataset, samples):
    """``{image, im_shape, scale_factor}`` arrays of the first ``samples`` images of
    ``dataset`` through the EvalReader's transforms (deployment's preprocessing)."""
    from ppdet.engine.builder import build_reader
    loader = build_reader(cfg, "eval", dataset=dataset)
    parts, n = {k: [] for k in _INPUTS}, 0
    for batch in loader:
        for k in _INPUTS:
            parts[k].append(np.asarray(batch[k], "float32"))
        n += len(batch["image"])
        if n >= samples:
            break
    return {k: np.concatenate(v)[:samples] for k, v in parts.items()}


def calibrate(fp32_dir, out_dir, calib_path, algo, batch_size, skip=()):
    """Calibrate ``fp32_dir`` on ``calib_path`` into ``out_dir`` in the child process
    (``legacy_ir.quantize_programs``); returns the line post_quant logs."""
    n, = legacy_ir.quantize_programs([{"fp32_dir": fp32_dir, "out_dir": out_dir,
                                       "calib": calib_path, "batch_size": batch_size,
                                       "skip": list(skip)}], algo)
    return f"calibrated on {n} batches of {batch_size} ({algo})"


def _check_int8_program(fp32_dir, int8_dir, skip):
    convs, counts = legacy_ir.quantized_ops(int8_dir)
    before, after = legacy_ir.conv_weight_shapes(fp32_dir), legacy_ir.conv_weight_shapes(int8_dir)
    if before != after:
        bad = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
        raise RuntimeError(f"INT8 program's conv shapes differ from the FP32 export's at "
                           f"{bad[:3]}")
    if not convs:
        raise RuntimeError("the INT8 program holds no quantized conv")
    kept = [s for s in skip if s in convs]
    if kept:
        raise RuntimeError(f"convs asked to stay FP32 were quantized: {kept[:3]}")
    return convs, counts, after


def _conv_weights(model):
    # the convs' own (a removed block's folded constant is 4-D too, and no conv)
    import paddle
    return [m.weight.name for m in model.sublayers() if isinstance(m, paddle.nn.Conv2D)]


def post_quant(req):
    """Export, calibrate, check, write ``<run>_int8/``, score: a ``QuantResult``."""
    dataset = check_request(req)
    from ppdet.engine.builder import build_model, class_names_for
    from ppdet.engine.checkpoint import load_weights
    from ppdet.engine.export import export_model
    model = build_model(req.cfg)
    meta = load_weights(model, req.weights)           # the channel plan rebuilds the shapes
    unknown = [s for s in req.skip if s not in _conv_weights(model)]
    if unknown:
        raise UserError(f"--skip names '{unknown[0]}', which is not a conv weight of this "
                        f"model (e.g. {_conv_weights(model)[-1]})")
    target = req.folder or os.path.join(req.output_dir,
                                        int8_folder_name(req.cfg, req.weights, meta))
    parent = os.path.dirname(os.path.abspath(target))
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=f".{os.path.basename(target)}.", suffix=".tmp",
                               dir=parent)
    try:
        fp32_dir, int8_dir = os.path.join(staging, "fp32"), os.path.join(staging, "int8")
        export_model(model, req.cfg, fp32_dir, class_names_for(req.cfg))
        req.log(f"exported FP32 ({len(legacy_ir.conv_weight_shapes(fp32_dir))} convs)")
        calib = calibration_feeds(req.cfg, dataset, req.calib_samples)
        n = len(calib["image"]) // req.calib_batch_size * req.calib_batch_size
        calib_path = os.path.join(staging, "calib.npz")
        np.savez(calib_path, **{k: v[:n] for k, v in calib.items()})
        req.log(f"calibrating on {n} TrainDataset images (eval transforms), algo {req.algo}")
        req.log(calibrate(fp32_dir, int8_dir, calib_path, req.algo, req.calib_batch_size,
                          req.skip))
        convs, counts, shapes = _check_int8_program(fp32_dir, int8_dir, req.skip)
        with open(os.path.join(fp32_dir, "infer_cfg.yml")) as f:
            infer_cfg = yaml.safe_load(f)
        infer_cfg["precision"] = "int8"
        infer_cfg["quantization"] = {"algo": req.algo, "calib_samples": n,
                                     "fp32_convs": list(req.skip),
                                     "weights": os.path.abspath(req.weights)}
        with open(os.path.join(int8_dir, "infer_cfg.yml"), "w") as f:
            yaml.safe_dump(infer_cfg, f, sort_keys=False)
        from ppdet.engine.export import Predictor, check_model_dir
        from ppdet.utils.atomic import atomic_dir
        # the INT8 predictor must load it before it replaces anything: oneDNN's INT8
        # passes refuse some graphs (MobileNetV1-SSD on Paddle 3.3.1), one line then
        Predictor(int8_dir, cpu_threads=req.threads)
        with atomic_dir(target, verify=check_model_dir) as tmp:    # whole, or not at all
            for name in os.listdir(int8_dir):
                os.replace(os.path.join(int8_dir, name), os.path.join(tmp, name))
        req.log(f"INT8 model written to {target}/ ({len(convs)} of {len(shapes)} convs "
                f"quantized)")
        result = QuantResult(target, n, convs, counts, shapes)
        if req.evaluate:
            from ppdet.slim.quant.evaluation import exported_map
            result.fp32_map, result.metric = exported_map(req.cfg, fp32_dir, req.threads)
            result.int8_map, _ = exported_map(req.cfg, target, req.threads)
        return result
    finally:
        with contextlib.suppress(OSError):
            shutil.rmtree(staging)
