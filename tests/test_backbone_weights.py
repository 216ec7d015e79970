"""DarkNet / ResNet weights users have: PaddleDetection 2.x detectors, PaddleClas ImageNet
backbones, static-era names. Fixtures made by the real packages
(tools/dev/make_backbone_fixtures.py): tiny detectors with their raw outputs, and the key
layouts of the full models (filled with values computed from each key, as the generator did,
with the package's features on a fixed input)."""
import json
import os

import numpy as np
import paddle
import pytest
from helpers import script

from ppdet.core.config import load_config
from ppdet.engine import checkpoint as ckpt
from ppdet.engine import weights as W
from ppdet.engine.builder import build_model
from ppdet.modeling.backbones.darknet import DarkNet
from ppdet.modeling.backbones.resnet import ResNet
from ppdet.slim.prune.params import paddledet_aliases

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIX = os.path.join(ROOT, "tests", "fixtures", "weights")


def _keyed_values(key, shape):
    """The values the fixture generator gave each key (tools/dev/make_weight_fixtures.py)."""
    return script("tools/dev/make_weight_fixtures.py").keyed_values(key, shape)


def _keys(name):
    with open(os.path.join(FIX, name)) as f:
        return json.load(f)


def _filled(name, tmp_path):
    state = {k: paddle.to_tensor(_keyed_values(k, s)) for k, s in _keys(name).items()}
    path = str(tmp_path / name.replace("_keys.json", ".pdparams"))
    paddle.save(state, path)
    return path


@pytest.mark.parametrize("kind, tensors", [("darknet", 206), ("r18", 211)])
def test_det2x_tiny_detectors_reproduce_paddledetection_outputs(kind, tensors):
    weights = os.path.join(FIX, f"det2x_yolov3_{kind}_tiny_c4.pdparams")
    ref = np.load(weights.replace(".pdparams", "_io.npz"))
    model = build_model(load_config(os.path.join(FIX, f"yolov3_{kind}_det2x.yml")))
    assert ckpt.load_weights(model, weights) == {"source_format": "det2x"}
    m = W.match_weights(model, W.read_weights(weights))
    assert len(m.loaded) == tensors and not m.missing and not m.unused
    model.eval()
    with paddle.no_grad():
        outs = model.head_outputs(paddle.to_tensor(ref["image"]))
    for i, out in enumerate(outs):
        assert out.shape == ref[f"out{i}"].shape
        assert np.abs(out.numpy() - ref[f"out{i}"]).max() < 1e-4


def test_det2x_full_darknet53_key_layout_and_automatic_names(tmp_path):
    path = _filled("det2x_yolov3_darknet53_keys.json", tmp_path)
    model = build_model(load_config(os.path.join(ROOT, "configs/yolov3_darknet53_coco.yml")))
    m = W.match_weights(model, W.read_weights(path))
    assert not m.missing and not m.unused and not m.mismatched and len(m.loaded) == 366
    assert m.names["backbone.blocks.4.conv2.conv.weight"] == \
        "backbone.stage.1.stage.1.1.conv2.conv.weight"           # stage.1.1.1
    # PaddleDetection's own conv2d_{n} names (recorded from its model) = our aliases
    theirs = _keys("det2x_yolov3_darknet53_conv_names.json")      # auto name -> 2.x key
    ours = {v: k for k, v in paddledet_aliases(model).items()}    # auto name -> our name
    own = model.state_dict()
    by_key = {m.names[k]: own[k].name for k in m.names}           # 2.x key -> our name
    assert len(theirs) == len(ours) == 75
    assert all(by_key[theirs[n]] == ours[n] for n in theirs)


def test_det2x_resnet34_key_layout(tmp_path):
    path = _filled("det2x_resnet34_keys.json", tmp_path)
    state = paddle.load(path)
    paddle.save({f"backbone.{k}": v for k, v in state.items()}, path)
    model = build_model(load_config(os.path.join(ROOT, "configs/yolov3_r34_voc.yml")))
    m = W.match_weights(model, W.read_weights(path))
    assert m.source.kind == "det2x" and not m.mismatched and not m.unused
    assert len(m.loaded) == 185 and all(k.startswith("yolo_head") for k in m.missing)
    assert m.names["backbone.blocks.0.short.conv.weight"] == \
        "backbone.res2.res2a.short.conv.weight"


def _with_act(model, act):
    for layer in model.sublayers():
        if getattr(layer, "act", None) == "leaky":
            layer.act = act


@pytest.mark.parametrize("name, cls, kw, taps", [
    ("resnet34", ResNet, {"depth": 34}, ("feat6", "feat12", "feat15")),
    ("darknet53", DarkNet, {}, ("_basic_block_28", "_basic_block_38", "_basic_block_44"))])
def test_paddleclas_imagenet_backbones_load_and_compute_the_same(name, cls, kw, taps,
                                                                  tmp_path):
    path = _filled(f"clas2x_{name}_keys.json", tmp_path)
    ref = np.load(os.path.join(FIX, f"clas2x_{name}_io.npz"))
    with paddle.utils.unique_name.guard():
        backbone = cls(**kw)
    m = W.match_weights(backbone, W.read_weights(path))
    assert m.source.kind == "clas2x" and not m.missing and not m.mismatched
    assert {r for _, r in m.unused} == {"ImageNet classifier"}
    backbone.set_state_dict(m.state)
    if name == "darknet53":
        _with_act(backbone, "relu")       # PaddleClas's ImageNet DarkNet53 uses ReLU
    backbone.eval()
    with paddle.no_grad():
        feats = backbone(paddle.to_tensor(ref["image"]))
    for feat, key in zip(feats, taps):
        assert np.abs(feat.numpy() - ref[key]).max() < 1e-3 * max(1, np.abs(ref[key]).max())


def test_static_era_names_load_by_name(tmp_path):
    """Static-era variables are named as this toolkit's parameters: a name-keyed file of
    DarkNet and ResNet-34 names loads completely."""
    for cls, kw in ((DarkNet, {"width": 0.125}), (ResNet, {"depth": 34, "width": 0.125})):
        with paddle.utils.unique_name.guard():
            bb = cls(**kw)
        own = bb.state_dict()
        state = {v.name: paddle.to_tensor(np.full(v.shape, 0.5, "float32"))
                 for v in own.values()}
        assert any(n in state for n in ("stage.1.0.1.bn.var", "bn4a_branch1_variance"))
        path = str(tmp_path / f"{cls.__name__}.pdparams")
        paddle.save(state, path)
        m = W.match_weights(bb, W.read_weights(path))
        assert m.source.kind == "names" and len(m.loaded) == len(own) and not m.unused
