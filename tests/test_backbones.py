"""DarkNet-53 and ResNet-18/34 for YOLOv3: structure, static-era names, PaddleDetection 2.x's
automatic conv names, and how ``--print_params`` states the shortcut groups."""
import numpy as np
import paddle
import pytest

from ppdet.core.config import load_config
from ppdet.core.errors import ConfigError, UserError
from ppdet.engine.builder import build_model
from ppdet.modeling.backbones.darknet import DarkNet
from ppdet.modeling.backbones.resnet import ResNet
from ppdet.slim.prune.params import format_params, paddledet_aliases, select_params

DARK = "configs/shapes/yolov3_darknet_shapes.yml"
R18 = "configs/shapes/yolov3_r18_shapes.yml"


def _new(cls, **kw):
    with paddle.utils.unique_name.guard():     # fixed parameter names: a fresh name scope
        return cls(**kw)


def _n(layer):
    return sum(int(np.prod(p.shape)) for p in layer.parameters())


def test_full_width_backbones_have_the_published_structure():
    dark = _new(DarkNet)
    convs = [p for p in dark.parameters() if len(p.shape) == 4]
    assert len(convs) == 52                                   # 53 layers with the fc
    assert _n(dark) == 40620640       # DarkNet-53 without its fc; BN scale+offset included
    assert dark.out_channels == [256, 512, 1024]
    r34 = _new(ResNet, depth=34)
    assert sum(len(p.shape) == 4 for p in r34.parameters()) == 33 + 4    # + 4 projections
    assert r34.out_channels == [128, 256, 512]
    x = paddle.zeros([1, 3, 96, 96])
    assert [list(f.shape) for f in _new(ResNet, depth=18, width=0.25)(x)] == \
        [[1, 32, 12, 12], [1, 64, 6, 6], [1, 128, 3, 3]]


def test_static_era_parameter_names():
    dark = {p.name for p in _new(DarkNet, width=0.125).parameters()}
    assert {"yolo_input.conv.weights", "yolo_input.downsample.conv.weights",
            "stage.2.7.1.conv.weights", "stage.3.downsample.bn.scale",
            "stage.0.0.0.bn.offset"} <= dark
    r34 = _new(ResNet, depth=34, width=0.25)
    names = {p.name for p in r34.parameters()} | {b.name for b in r34.buffers()}
    assert {"conv1_weights", "bn_conv1_scale", "res2a_branch1_weights", "res4f_branch2b_weights",
            "bn4f_branch2b_variance", "bn5a_branch1_offset"} <= names


def test_bad_hyperparameters_say_what_is_supported():
    with pytest.raises(ConfigError, match="use 53"):
        _new(DarkNet, depth=21)
    with pytest.raises(ConfigError, match="variant 'd' is not supported"):
        _new(ResNet, variant="d")
    with pytest.raises(ConfigError, match="outside the 4 stages"):
        _new(ResNet, return_idx=[1, 2, 4])


def test_freeze_at_freezes_the_stem_and_the_stages_up_to_it():
    dark = _new(DarkNet, width=0.125, stage_counts=[1, 1, 1, 1, 1], freeze_at=1)
    frozen = {p.name for p in dark.parameters() if p.stop_gradient}

    assert "yolo_input.conv.weights" in frozen and "stage.1.0.1.conv.weights" in frozen
    assert "stage.1.downsample.conv.weights" not in frozen      # after stage 1's output
    assert "stage.2.0.0.conv.weights" not in frozen


def test_paddledet_names_and_print_params():
    model = build_model(load_config("configs/yolov3_darknet53_voc.yml"))
    alias = paddledet_aliases(model)
    head = [f"conv2d_{n}.w_0" for n in list(range(52, 58)) + list(range(59, 65)) +
            list(range(66, 72))]                 # PaddleDetection's FPGM config names
    by_alias = {v: k for k, v in alias.items()}
    assert all(by_alias[h].startswith("yolo_block.") for h in head)
    assert by_alias["conv2d_58.w_0"] == "yolo_transition.0.conv.weights"
    assert by_alias["conv2d_48.w_0"] == "stage.0.downsample.conv.weights"
    assert by_alias["conv2d_2.w_0"] == "stage.0.0.0.conv.weights"
    tiny = build_model(load_config(DARK))      # 16 backbone convs: its head starts at 16
    assert select_params(tiny, "conv2d_16.w_0,conv2d_2.w_0") == \
        ["stage.0.0.0.conv.weights", "yolo_block.0.0.0.conv.weights"]
    with pytest.raises(UserError, match="name stage.0.downsample.conv.weights instead"):
        select_params(tiny, "conv2d_5.w_0")            # stage.1.0.1: tied by a shortcut


@pytest.mark.parametrize("cfg, master, tied", [
    (DARK, "stage.1.downsample.conv.weights", "stage.2.0.1.conv.weights"),
    (R18, "res3a_branch1_weights", "res3b_branch2b_weights")])
def test_print_params_states_the_shortcut_groups(cfg, master, tied):
    text = format_params(build_model(load_config(cfg)))
    line = next(ln for ln in text.splitlines() if ln.startswith(master + " "))
    assert "shortcut group: pruned together with" in line and tied in line
    line = next(ln for ln in text.splitlines() if ln.startswith(tied + " "))
    assert f"tied by a shortcut add: pruned with {master}" in line


@pytest.mark.parametrize("cfg", [DARK, R18])
def test_flops_target_prune_checkpoint_and_export(cfg, tmp_path):
    """Every prunable conv, shortcut groups included, to -30% FLOPs; the checkpoint replays
    on a fresh model and exports (the export's predictor gives the dygraph outputs)."""
    from ppdet.engine.builder import class_names_for
    from ppdet.engine.checkpoint import channel_plan, load_weights, save_checkpoint
    from ppdet.engine.export import Predictor, export_model
    from ppdet.slim.pipelines.prune import choose_ratios
    from ppdet.slim.pipelines.requests import PruneRequest
    from ppdet.slim.prune.pruner import FilterPruner, model_flops
    config = load_config(cfg)
    model = build_model(config)
    ratios, _ = choose_ratios(model, [96, 96], PruneRequest(pruned_params="*",
                                                             target_ratio=0.3))
    assert any(n.endswith(("downsample.conv.weights", "branch1_weights")) for n in ratios)
    base = model_flops(model, [96, 96])
    FilterPruner(model).prune(ratios)
    assert abs((1 - model_flops(model, [96, 96]) / base) - 0.3) <= 0.01
    save_checkpoint(model, str(tmp_path / "pruned"), plan=channel_plan(model))
    fresh = build_model(config)
    load_weights(fresh, str(tmp_path / "pruned"))
    fresh.eval()
    x = np.random.RandomState(0).uniform(-1, 1, (1, 3, 160, 160)).astype("float32")
    with paddle.no_grad():
        want = [o.numpy() for o in fresh.head_outputs(paddle.to_tensor(x))]
    out = export_model(fresh, config, str(tmp_path / "export"), class_names_for(config))
    got = Predictor(out).run(x, np.array([[160, 160]], "float32"), np.ones((1, 2), "float32"),
                             raw=True)[2]
    for g, w in zip(got, want):
        assert np.abs(g - w).max() < 1e-3 * (1 + np.abs(w).max())


@pytest.mark.parametrize("cfg, groups", [
    (DARK, ("backbone.blocks.6.conv", "backbone.blocks.7.conv1.conv")),
    (R18, ("backbone.blocks.4.short.conv", "backbone.blocks.4.branch2a.conv"))],
    ids=["darknet", "resnet18"])
def test_latency_table_times_a_shortcut_group_whole_and_prunes_it_to_a_target(cfg, groups,
                                                                              tmp_path):
    """The latency table times a shortcut group at each count on every conv it reshapes
    (the producers feeding the add and every consumer); a latency target prunes it as one
    group; the pruned model computes what the masked one does. (No timing is checked.)"""
    from helpers import head_outputs

    from ppdet.slim import latency as L
    from ppdet.slim.latency import search as latency_search
    from ppdet.slim.prune.graph import PruneGraph
    from ppdet.slim.prune.masks import masked, masks
    from ppdet.slim.prune.plan import apply_plan, make_plan
    config = load_config(cfg)
    model = build_model(config)
    model.eval()
    graph = PruneGraph.of(model)
    table = L.build_table(graph, config, str(tmp_path / "t.json"), [64, 64], step=16,
                          groups=groups, repeats=3, progress=False, log=lambda *a: None,
                          quiet=False, passes=1)
    assert table.complete
    short, inner = (graph.group(k) for k in groups)

    def convs(group):
        return {m.layer for m in group.members if m.attr == "weight" and
                len(dict(model.named_sublayers())[m.layer].weight.shape) == 4}
    assert len({m.layer for m in short.members if m.axis == 0} & convs(short)) >= 2  # the add
    for group in (short, inner):
        for count, entry in table.entries[group.key].items():
            assert set(entry) == convs(group), (group.key, count)
    full = table.predict({})
    target = full - 0.5 * (full - latency_search.steady(table).predict(
        {short.key: 16, inner.key: 16}))
    _, ratios, ms = latency_search.uniform_ratio_for_latency(
        table, graph, [short.name, inner.name], target, align=16)
    assert ms <= target and short.name in ratios
    plan = make_plan(graph, ratios)
    x = paddle.to_tensor(np.random.RandomState(0).uniform(-1, 1, (1, 3, 64, 64)), "float32")
    with masked(graph, masks(graph, plan)):
        want = head_outputs(model, x)
    layers = dict(model.named_sublayers())
    before = {m.layer: layers[m.layer].weight.shape[m.axis] for m in short.members
              if m.layer in convs(short)}
    apply_plan(graph, plan)
    cut = short.size - round(short.size * (1 - ratios[short.name]))
    assert cut > 0
    for layer, n in before.items():             # every conv of the add loses the same count
        assert layers[layer].weight.shape[[m.axis for m in short.members
                                           if m.layer == layer][0]] == n - cut, layer
    for g, w in zip(head_outputs(model, x), want):
        assert np.abs(g - w).max() <= 1e-4 * (1 + np.abs(w).max())


@pytest.mark.parametrize("teacher_cfg", [DARK, R18], ids=["darknet", "resnet18"])
def test_a_darknet_or_resnet_teaches_a_mobilenet_student(teacher_cfg, tmp_path, shapes_root):
    """tools/train.py with ``--teacher_config`` of the other backbone: the pair check
    passes (same head layout), the distillation loss is logged and nonzero, and the
    checkpoint records the teacher; the teacher's weights file is not touched."""
    import os
    import subprocess
    import sys

    from helpers import ROOT, SHAPES_CFG, snapshot

    from ppdet.engine import checkpoint as ckpt
    paddle.seed(1)
    teacher = str(tmp_path / "teacher" / "model")
    ckpt.save_checkpoint(build_model(load_config(os.path.join(ROOT, teacher_cfg))), teacher)
    before = snapshot(str(tmp_path / "teacher"))
    r = subprocess.run(
        [sys.executable, "tools/train.py", "-c", SHAPES_CFG, "-o", "epoch=1",
         "TrainDataset.sample_num=8", "TrainReader.batch_size=4", "TrainReader.worker_num=0",
         f"save_dir={tmp_path / 'out'}", "--teacher_config", teacher_cfg,
         "--teacher_weights", teacher, "--distill_weight", "10"],
        cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    line = next(ln for ln in r.stdout.splitlines() if ln.startswith("epoch 1/1"))
    distill = float(line.split("loss_distill ")[1].split(")")[0].split(",")[0])
    assert distill > 0, line
    meta = paddle.load(str(tmp_path / "out" / "yolov3_mobilenet_v1_shapes" /
                           "model_final.pdparams"))[ckpt.META_KEY]
    assert meta["distill"]["config"].endswith(os.path.basename(teacher_cfg))
    assert snapshot(str(tmp_path / "teacher")) == before
