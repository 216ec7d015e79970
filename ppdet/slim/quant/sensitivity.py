"""Quantization sensitivity per conv, and the fewest convs to keep in FP32 for a loss budget.

For each conv two mAPs through the INT8 predictor (the eval set of the config):
``kept_fp32`` (every other conv quantized, this one FP32) and ``only_quantized`` (this
one INT8, every other FP32). From them, with the FP32 and the all-INT8 mAPs: ``gain`` =
kept_fp32 - all-INT8 (what keeping it in FP32 buys back) and ``loss`` = FP32 -
only_quantized (what quantizing it alone costs). The FP32 export and the calibration set
are built once; each measurement is one calibration in the child process plus one
evaluation.

The results file (JSON) is rewritten atomically after every conv and records what it was
measured for (weights, algo, calibration samples, eval set): a rerun continues where it
stopped, and a file measured for something else is refused, never mixed.
``choose_fp32`` then keeps in FP32 the convs with the largest gain, one at a time, each
step measured, until the INT8 mAP is within ``max_loss`` of FP32 (greedy: the fewest convs
this order finds, not a proven minimum).
"""
import dataclasses
import json
import os
import shutil
import tempfile

import numpy as np
import yaml

from ppdet.core.errors import UserError
from ppdet.engine import legacy_ir

__all__ = ["QuantSensitivity", "choose_fp32", "skip_for_max_loss"]

VERSION = 1


class QuantSensitivity:
    """A prepared FP32 export + calibration set for one checkpoint, measuring INT8 variants."""

    def __init__(self, req, log=print):
        """``req``: the :class:`~ppdet.slim.quant.pipeline.QuantRequest` every variant is
        calibrated as (its ``skip`` is what each measurement varies)."""
        from ppdet.slim.quant.pipeline import check_request
        req = dataclasses.replace(req, output_dir=tempfile.gettempdir(), skip=(), folder=None)
        dataset = check_request(req)
        self.cfg, self.req, self.log = req.cfg, req, log
        self.tmp = tempfile.mkdtemp(prefix="quant_sens_")
        try:
            self._prepare(req.cfg, req.weights, dataset, req.algo, req.calib_samples,
                          req.calib_batch_size)
        except BaseException:
            self.close()
            raise

    def _prepare(self, cfg, weights, dataset, algo, calib_samples, calib_batch_size):
        from ppdet.engine.builder import build_model, class_names_for
        from ppdet.engine.checkpoint import load_weights
        from ppdet.engine.export import export_model
        from ppdet.slim.quant.pipeline import calibration_feeds
        model = build_model(cfg)
        load_weights(model, weights)
        self.fp32_dir = export_model(model, cfg, os.path.join(self.tmp, "fp32"),
                                     class_names_for(cfg))
        self.convs = list(legacy_ir.conv_weight_shapes(self.fp32_dir))
        calib = calibration_feeds(cfg, dataset, calib_samples)
        n = len(calib["image"]) // calib_batch_size * calib_batch_size
        self.calib_path = os.path.join(self.tmp, "calib.npz")
        np.savez(self.calib_path, **{k: v[:n] for k, v in calib.items()})
        self.fingerprint = {"version": VERSION, "weights": os.path.abspath(weights),
                            "algo": algo, "calib_samples": n,
                            "eval": str((cfg.get("EvalDataset") or {}).get("anno_path")),
                            "eval_samples": (cfg.get("EvalDataset") or {}).get("sample_num", -1)}

    def close(self):
        shutil.rmtree(self.tmp, ignore_errors=True)

    def fp32_map(self):
        from ppdet.slim.quant.evaluation import exported_map
        return exported_map(self.cfg, self.fp32_dir, self.req.threads)[0]

    def int8_map(self, skip=()):
        """mAP of the INT8 model with the convs in ``skip`` kept in FP32."""
        from ppdet.slim.quant.evaluation import exported_map
        from ppdet.slim.quant.pipeline import calibrate
        out = tempfile.mkdtemp(prefix="variant_", dir=self.tmp)
        try:
            calibrate(self.fp32_dir, out, self.calib_path, self.req.algo,
                       self.req.calib_batch_size, tuple(skip))
            with open(os.path.join(self.fp32_dir, "infer_cfg.yml")) as f:
                infer_cfg = yaml.safe_load(f)
            infer_cfg["precision"] = "int8"
            with open(os.path.join(out, "infer_cfg.yml"), "w") as f:
                yaml.safe_dump(infer_cfg, f)
            return exported_map(self.cfg, out, self.req.threads)[0]
        finally:
            shutil.rmtree(out, ignore_errors=True)

    def measure(self, path, convs=None):
        """Per-conv sensitivities into ``path`` (resumed when it holds some); returns the
        file's content."""
        convs = list(convs) if convs else self.convs
        unknown = [c for c in convs if c not in self.convs]
        if unknown:
            raise UserError(f"'{unknown[0]}' is not a conv weight of this model "
                            f"(e.g. {self.convs[-1]})")
        data = _load(path, self.fingerprint)
        if data is None:
            data = {"meta": self.fingerprint, "fp32": self.fp32_map(),
                    "int8": self.int8_map(), "convs": {}}
            _save(path, data)
        for i, conv in enumerate(convs):
            if conv in data["convs"]:
                continue
            kept = self.int8_map([conv])
            alone = self.int8_map([c for c in self.convs if c != conv])
            data["convs"][conv] = {"kept_fp32": kept, "only_quantized": alone,
                                   "gain": kept - data["int8"],
                                   "loss": data["fp32"] - alone}
            _save(path, data)
            self.log(f"[{i + 1}/{len(convs)}] {conv}: kept FP32 {kept:.2f}, only it INT8 "
                     f"{alone:.2f} (FP32 {data['fp32']:.2f}, all INT8 {data['int8']:.2f})")
        return data


def _load(path, fingerprint):
    if not os.path.exists(path):
        return None
    try:
        with open(path) as f:
            data = json.load(f)
        meta = data["meta"]
        data["convs"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise UserError(f"{path} is not a quantization sensitivity file ({e}): give another "
                        f"path") from e
    if meta != fingerprint:
        diff = sorted(k for k in set(meta) | set(fingerprint) if meta.get(k) != fingerprint.get(k))
        raise UserError(f"{path} was measured for another {', '.join(diff)}: give another "
                        f"path, or delete it to start over")
    return data


def _save(path, data):
    from ppdet.utils.atomic import atomic_write_bytes
    atomic_write_bytes(path, (json.dumps(data, indent=1, sort_keys=True) + "\n").encode())


def choose_fp32(sens, data, max_loss, log=print):
    """The convs to keep in FP32, largest measured ``gain`` first, until the INT8 mAP is
    within ``max_loss`` points of FP32; returns ``(skip list, its INT8 mAP)``. Raises
    ``UserError`` when keeping every measured conv in FP32 still does not reach it."""
    target = data["fp32"] - max_loss
    if data["int8"] >= target:
        return [], data["int8"]
    order = sorted(data["convs"], key=lambda c: -data["convs"][c]["gain"])
    skip = []
    for conv in order:
        skip.append(conv)
        got = sens.int8_map(skip)
        log(f"FP32 for {len(skip)} conv(s) (+{conv}): INT8 mAP {got:.2f} "
            f"(target {target:.2f})")
        if got >= target:
            return skip, got
    raise UserError(f"no skip list of the {len(order)} measured convs keeps the INT8 mAP "
                    f"within {max_loss:g} of FP32 ({data['fp32']:.2f})")


def skip_for_max_loss(req, path, max_loss, convs=None, log=print):
    """Measure (or resume) the sensitivities in ``path`` for the request's checkpoint and
    calibration, then ``choose_fp32``."""
    sens = QuantSensitivity(req, log)
    try:
        data = sens.measure(path, convs)
        if max_loss is None:
            return None, data
        return choose_fp32(sens, data, max_loss, log)[0], data
    finally:
        sens.close()
