"""Training loop, checkpoints, eval/infer/export tools on the tiny YOLOv3."""
import os
import subprocess
import sys

import cv2
import numpy as np
import paddle
import pytest
from helpers import assert_same_checkpoint, small_train

from ppdet.core.config import load_config
from ppdet.engine import checkpoint as ckpt
from ppdet.engine.builder import build_model
from ppdet.engine.export import export_model, verify_export
from ppdet.slim.prune.pruner import FilterPruner

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CFG = os.path.join(ROOT, "configs/shapes/yolov3_mobilenet_v1_shapes.yml")
SMALL = small_train(32)


def _params(model):
    return {p.name: p.numpy().copy() for p in model.parameters()}


def test_resume_continues_exactly(tmp_path, shapes_root):
    """2 epochs straight == 1 epoch, then ``tools/train.py -r`` for the second (new process)."""
    def train(save, epochs, *extra):
        r = _tool("tools/train.py", "-c", CFG, "-o", *SMALL, f"epoch={epochs}",
                  f"save_dir={save}", *extra)
        assert r.returncode == 0, r.stderr[-3000:]
    train(tmp_path / "a", 2)
    train(tmp_path / "b", 1)
    stem = "yolov3_mobilenet_v1_shapes"
    assert os.path.isfile(tmp_path / "b" / stem / "1.pdparams")
    assert os.path.isfile(tmp_path / "b" / stem / "1.pdopt")
    train(tmp_path / "b", 2, "-r", str(tmp_path / "b" / stem / "1"))
    assert_same_checkpoint(tmp_path / "a" / stem / "model_final.pdparams",
                           tmp_path / "b" / stem / "model_final.pdparams")
    oa = paddle.load(str(tmp_path / "a" / stem / "model_final.pdopt"))
    ob = paddle.load(str(tmp_path / "b" / stem / "model_final.pdopt"))
    assert oa["optimizer"]["LR_Scheduler"] == ob["optimizer"]["LR_Scheduler"]


def test_config_seed_orders_the_training_data(shapes_root):
    """``seed`` (or train.py --seed) reaches the data order too, so two seeds are two runs."""
    from ppdet.engine.trainer import Trainer

    def order(*extra):
        loader = Trainer(load_config(CFG, SMALL + list(extra))).loader
        return [i for batch in loader.sampler for i, _, _ in batch]
    assert order() == order("seed=0")                 # unset means 0, as before
    assert sorted(order("seed=1")) == sorted(order())  # the same images ...
    assert order("seed=1") != order()                 # ... in another order
    assert order("seed=1") == order("seed=1")


def test_strict_loading_names_the_bad_parameter(tmp_path):
    cfg = load_config(CFG)
    model = build_model(cfg)
    ckpt.save_checkpoint(model, str(tmp_path / "m"))
    other = build_model(load_config(CFG, ["num_classes=6"]))
    with pytest.raises(ckpt.CheckpointError,
                       match="another config: parameter 'yolo_output.0.conv.bias' is \\[27\\]"):
        ckpt.load_weights(other, str(tmp_path / "m"))
    # without the recorded config shapes the strict per-parameter check still names it
    state = paddle.load(str(tmp_path / "m.pdparams"))
    state[ckpt.META_KEY].pop("config_shapes")
    paddle.save(state, str(tmp_path / "old.pdparams"))
    with pytest.raises(ckpt.CheckpointError, match="shape mismatch for 'yolo_head.outputs.0"):
        ckpt.load_weights(other, str(tmp_path / "old"))
    state = paddle.load(str(tmp_path / "m.pdparams"))
    state.pop("backbone.conv1.conv.weight")
    paddle.save(state, str(tmp_path / "cut.pdparams"))
    with pytest.raises(ckpt.CheckpointError, match="backbone.conv1.conv.weight.*missing"):
        ckpt.load_weights(build_model(cfg), str(tmp_path / "cut"))
    (tmp_path / "junk.pdparams").write_bytes(b"\x00garbage")
    with pytest.raises(ckpt.CheckpointError, match="cannot read weights"):
        ckpt.load_weights(build_model(cfg), str(tmp_path / "junk"))


def test_only_rank_zero_writes_checkpoints(tmp_path, monkeypatch):
    # the pruning tools save on every rank under paddle.distributed.launch
    model = build_model(load_config(CFG))
    monkeypatch.setattr(paddle.distributed, "get_rank", lambda *a: 1)
    ckpt.save_checkpoint(model, str(tmp_path / "m"))
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setattr(paddle.distributed, "get_rank", lambda *a: 0)
    ckpt.save_checkpoint(model, str(tmp_path / "m"))
    assert [p.name for p in tmp_path.iterdir()] == ["m.pdparams"]


def test_pruned_checkpoint_rebuilds_its_shapes(tmp_path):
    cfg = load_config(CFG)
    paddle.seed(1)
    model = build_model(cfg)
    FilterPruner(model).prune({"yolo_transition.0.conv.weights": 0.5,
                               "conv5_3_sep_weights": 0.25})
    ckpt.save_checkpoint(model, str(tmp_path / "pruned"), plan=ckpt.channel_plan(model))
    fresh = build_model(cfg)
    ckpt.load_weights(fresh, str(tmp_path / "pruned"))
    assert {p.name: p.shape for p in fresh.parameters()} == \
        {p.name: p.shape for p in model.parameters()}
    x = paddle.randn([1, 3, 96, 96])
    model.eval()
    fresh.eval()
    for a, b in zip(model.head_outputs(x), fresh.head_outputs(x)):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-5)
    # a plain state dict (no channel plan) of pruned shapes is refused, not half-loaded
    state = paddle.load(str(tmp_path / "pruned.pdparams"))
    state.pop(ckpt.META_KEY)
    paddle.save(state, str(tmp_path / "plain.pdparams"))
    with pytest.raises(ckpt.CheckpointError, match="shape mismatch"):
        ckpt.load_weights(build_model(cfg), str(tmp_path / "plain"))


def test_export_matches_dygraph_with_onednn(tmp_path, trained):
    cfg = load_config(CFG)
    model = build_model(cfg)
    ckpt.load_weights(model, trained)
    model.eval()
    out = export_model(model, cfg, str(tmp_path / "export"), ["a", "b", "c", "d"])
    assert os.path.isfile(os.path.join(out, "model.pdmodel"))
    images = [os.path.join(ROOT, "dataset/shapes/voc/JPEGImages", f"val_{i:05d}.jpg")
              for i in range(6)]
    n, boxes, box_err, score_err = verify_export(model, out, images, score_min=0.01)
    assert n == 6 and boxes > 0
    assert box_err < 1e-3 and score_err < 1e-3
    # the check itself can fail: a model that differs from the export is caught
    ckpt.load_weights(model, trained)
    FilterPruner(model).prune({"yolo_block.0.tip.conv.weights": 0.5})
    with pytest.raises(AssertionError):
        verify_export(model, out, images, score_min=0.01)


def _tool(*args):
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=600)


def test_eval_and_infer_tools(tmp_path, trained):
    r = _tool("tools/eval.py", "-c", CFG, "-o", f"weights={trained}", "EvalDataset.sample_num=24",
              "--output_eval", str(tmp_path))
    assert r.returncode == 0, r.stderr
    assert "mAP(0.50, 11point)" in r.stdout
    assert os.path.getsize(tmp_path / "bbox.json") > 2
    img = os.path.join(ROOT, "dataset/shapes/voc/JPEGImages/val_00001.jpg")
    r = _tool("tools/infer.py", "-c", CFG, "-o", f"weights={trained}", "--infer_img", img,
              "--output_dir", str(tmp_path / "drawn"), "--draw_threshold", "0.05")
    assert r.returncode == 0, r.stderr
    drawn = cv2.imread(str(tmp_path / "drawn" / "val_00001.jpg"))
    assert drawn is not None and drawn.shape == cv2.imread(img).shape
    assert np.abs(drawn.astype(int) - cv2.imread(img).astype(int)).max() > 100   # boxes drawn


@pytest.mark.parametrize("opt, message", [
    ("weights=https://paddledet.bj.bcebos.com/models/yolov3.pdparams", "offline"),
    ("weights=/nonexistent/model_final", "weights not found"),
    ("EvalDataset.dataset_dir=dataset/shapes/nowhere", "make_shapes.py"),
    ("epochs=3", "did you mean epoch"),
])
def test_tools_fail_with_one_line(opt, message, tmp_path):
    r = _tool("tools/eval.py", "-c", CFG, "-o", opt)
    assert r.returncode == 2
    assert message in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
