"""What the exporter writes: conv biases in the form oneDNN fuses, the same detections as
the unsimplified program, and an exported model scored like the dygraph one."""
import os
from collections import Counter

import numpy as np
import paddle
import pytest
from paddle.base import core

from ppdet.core.config import load_config
from ppdet.engine import checkpoint as ckpt
from ppdet.engine.builder import build_metric_for, build_model, build_reader
from ppdet.engine.evaluate import evaluate
from ppdet.engine.export import (
    ExportedDetector,
    Predictor,
    export_model,
    fold_conv_bias,
    read_image,
)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
YOLO_CFG = os.path.join(ROOT, "configs/shapes/yolov3_mobilenet_v1_shapes.yml")
SSD_CFG = os.path.join(ROOT, "configs/shapes/ssd_mobilenet_v1_shapes.yml")


def _program(folder, name="model.pdmodel"):
    with open(os.path.join(folder, name), "rb") as f:
        return core.ProgramDesc(f.read())


def _ops(program):
    """The ops of block 0 (they point into ``program``: keep it alive while using them)."""
    block = program.block(0)
    return [block.op(i) for i in range(block.op_size())]


def _bias_adds(program):
    """(Y input, axis) of every elementwise_add whose X is a conv output."""
    ops = _ops(program)
    conv_out = {n for op in ops if op.type() in ("conv2d", "depthwise_conv2d")
                for n in op.output_arg_names()}
    return [(op.input("Y")[0], op.attr("axis")) for op in ops
            if op.type() == "elementwise_add" and op.input("X")[0] in conv_out]


def _optimized_ops(folder, tmp):
    """Op types of the program Paddle Inference actually runs (oneDNN, after its passes)."""
    from paddle import inference
    config = inference.Config(os.path.join(folder, "model.pdmodel"),
                              os.path.join(folder, "model.pdiparams"))
    config.disable_gpu()
    config.enable_mkldnn()
    config.disable_glog_info()
    config.enable_save_optim_model(True)
    config.set_optim_cache_dir(str(tmp))
    inference.create_predictor(config)
    program = _program(str(tmp), "_optimized.pdmodel")
    return Counter(op.type() for op in _ops(program))


@pytest.fixture(scope="module")
def yolo(tmp_path_factory, trained):
    """The trained tiny YOLOv3, exported as paddle.jit.save writes it and as exported."""
    cfg = load_config(YOLO_CFG, ["EvalDataset.sample_num=24", "EvalReader.worker_num=0"])
    model = build_model(cfg)
    ckpt.load_weights(model, trained)
    tmp = tmp_path_factory.mktemp("yolo")
    raw = export_model(model, cfg, str(tmp / "raw"), list("abcd"), simplify=False)
    out = export_model(model, cfg, str(tmp / "out"), list("abcd"))
    return cfg, model, raw, out


def test_yolo_bias_folded_fused_and_detections_unchanged(tmp_path, yolo):
    _, _, raw, out = yolo
    # as paddle.jit.save writes it: reshaped biases added along the last axis
    assert len(_bias_adds(_program(raw))) == 3
    assert {axis for _, axis in _bias_adds(_program(raw))} == {-1}
    assert fold_conv_bias(_program(raw)) == 3
    # exported: the 1-D bias parameters, channel axis, no reshape2 left; folding is done
    assert sorted(_bias_adds(_program(out))) == [(f"yolo_output.{i}.conv.bias", 1)
                                                 for i in range(3)]
    program = _program(out)
    assert "reshape2" not in {op.type() for op in _ops(program)}
    assert fold_conv_bias(_program(out)) == 0
    # ... which oneDNN's passes now fuse into the convs: 3 ops fewer per run
    before, after = _optimized_ops(raw, tmp_path / "o1"), _optimized_ops(out, tmp_path / "o2")
    assert before["elementwise_add"] == 3 and after["elementwise_add"] == 0
    assert after["fused_conv2d"] == before["fused_conv2d"] + before["conv2d"]
    assert sum(after.values()) == sum(before.values()) - 3
    # the same detections and raw head outputs (memory optimisation on for the new one)
    old = Predictor(raw, memory_optim=False)
    new = Predictor(out)
    kept = 0
    for i in range(3):
        rgb = read_image(os.path.join(ROOT, f"dataset/shapes/voc/JPEGImages/val_{i:05d}.jpg"))
        (b0, n0, h0), (b1, n1, h1) = old.predict_image(rgb, raw=True), \
            new.predict_image(rgb, raw=True)
        assert n0.tolist() == n1.tolist()
        np.testing.assert_array_equal(b0[:, 0], b1[:, 0])
        np.testing.assert_allclose(b0[:, 1:], b1[:, 1:], rtol=1e-4, atol=1e-4)
        for a, b in zip(h0, h1):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
        kept += int((b1[:, 1] > 0.05).sum())
    # real detections were compared, not empty outputs (the 6-epoch fixture scores low)
    assert kept > 0


def test_ssd_head_biases_folded(tmp_path):
    cfg = load_config(SSD_CFG)
    paddle.seed(0)
    model = build_model(cfg)
    out = export_model(model, cfg, str(tmp_path), list("abcd"))
    head = model.ssd_head
    biases = sorted(conv.bias.name for conv in [*head.loc_convs, *head.conf_convs])
    assert len(biases) == 8
    assert sorted(_bias_adds(_program(out))) == [(name, 1) for name in biases]
    assert fold_conv_bias(_program(out)) == 0


def test_exported_model_scores_like_dygraph(yolo):
    cfg, model, _, out = yolo
    loader = build_reader(cfg, "eval")
    metric = build_metric_for(cfg, loader.dataset)
    ref = evaluate(model, loader, metric, progress=False)["mAP"]
    got = evaluate(ExportedDetector(out), loader, metric, progress=False)["mAP"]
    assert ref > 0.05
    assert abs(got - ref) < 1e-3
