"""Network slimming on YOLOv3-MobileNetV2: groups, masks, exact channel pruning, layer
pruning, sparsity training and the slim_prune tool."""
import json
import os
import subprocess
import sys

import numpy as np
import paddle
import pytest
from helpers import head_outputs, random_bn_model, slimming_bn

from ppdet.core.config import load_config
from ppdet.engine.builder import build_model
from ppdet.engine.checkpoint import channel_plan, load_weights, save_checkpoint
from ppdet.slim import slimming
from ppdet.slim.prune.pruner import model_flops
from ppdet.slim.slimming.sparsity import BNSparsity, sparsity_from_config
from ppdet.utils.cli import UserError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CFG = os.path.join(ROOT, "configs/shapes/yolov3_mobilenet_v2_shapes.yml")
SIZE = [160, 160]


def _model(seed=0):
    return random_bn_model(CFG, seed, slimming_bn)


_outputs = head_outputs


def _close(a, b):
    return all(np.abs(u - v).max() <= 1e-4 * (1 + np.abs(u).max()) for u, v in zip(a, b))


def test_mobilenet_v2_names_shortcuts_and_feature_channels():
    model = build_model(load_config(CFG))
    names = {p.name for p in model.parameters()}
    for name in ("conv1_1_weights", "conv2_1_dwise_weights", "conv2_1_linear_bn_scale",
                 "conv3_1_expand_weights", "conv8_1_linear_bn_variance"):
        assert name in names
    assert "conv2_1_expand_weights" not in names          # t = 1: no expansion conv
    blocks = slimming.residual_blocks(model)
    assert len(blocks) == 10                              # 1+2+3+2+2 repeats with a shortcut
    assert model.backbone.out_channels == [16, 48, 160]
    outs = model.head_outputs(paddle.randn([1, 3, 96, 96]))
    assert [list(o.shape[2:]) for o in outs] == [[3, 3], [6, 6], [12, 12]]


def test_groups_tie_shortcuts_and_depthwise_and_block_padded_consumers():
    model = build_model(load_config(CFG))
    g0 = {g.master: g for g in slimming.SlimGraph(model, 0).groups}
    g1 = {g.master: g for g in slimming.SlimGraph(model, 1).groups}
    stage = g1["conv4_1_linear_weights"]                  # three blocks added together
    assert [m.name for m in stage.layers] == ["conv4_1_linear", "conv4_2_linear",
                                              "conv4_3_linear"]
    assert stage.shortcut and stage.blocked is None
    assert "tied by a shortcut" in g0["conv4_1_linear_weights"].blocked
    expand = g0["conv4_2_expand_weights"]                 # expand and its depthwise conv
    assert [m.name for m in expand.layers] == ["conv4_2_expand", "conv4_2_dwise"]
    assert expand.blocked is None and expand.consumers == ["conv4_2_linear_weights"]
    assert "3x3 conv yolo_block.0.0.1" in g0["yolo_block.0.0.0.conv.weights"].blocked
    assert g0["yolo_block.0.0.1.conv.weights"].blocked is None
    scales0 = {p.name for p in slimming.SlimGraph(model, 0).scales()}
    scales1 = {p.name for p in slimming.SlimGraph(model, 1).scales()}
    assert "conv4_2_linear_bn_scale" in scales1 - scales0
    assert "yolo_block.0.0.0.bn.scale" not in scales1


@pytest.mark.parametrize("dw_rule", ["max", "intersection"])
def test_pruned_model_equals_masked_model(dw_rule):
    model = _model()
    x = paddle.randn([2, 3, 128, 160])
    original = _outputs(model, x)
    graph = slimming.SlimGraph(model, 1)
    threshold, safe = slimming.global_threshold(graph, 0.4)
    assert threshold <= safe
    masks = slimming.group_masks(graph, threshold, 0.3, dw_rule)
    slimming.zero_scales(graph, masks)
    masked = _outputs(model, x)
    assert not _close(original, masked)                   # the masks do remove something
    flops = model_flops(model, SIZE)
    kept = slimming.prune_channels(graph, masks)
    shapes = {p.name: p.shape for p in model.parameters()}
    for master, keep in masks.items():
        group = next(g for g in graph.prunable if g.master == master)
        for layer in group.layers:
            assert kept[layer.name] == (len(keep), int(keep.sum()))
            assert shapes[layer.conv.weight.name][0] == int(keep.sum())
    assert shapes["conv4_2_expand_weights"][1] == int(masks["conv4_1_linear_weights"].sum())
    assert model_flops(model, SIZE) < 0.8 * flops
    assert _close(masked, _outputs(model, x))             # exact, before any fine-tuning


def test_layer_masks_keep_a_share_and_the_threshold_is_checked():
    model = _model()
    graph = slimming.SlimGraph(model, 1)
    layer = graph.prunable[0].layers[0]
    gamma = np.abs(layer.bn.weight.numpy())
    keep = slimming.layer_masks(layer, float(gamma.max()) + 1, 0.5)
    assert keep.sum() == int(np.ceil(len(gamma) * 0.5))
    assert gamma[keep].min() >= gamma[~keep].max()        # the largest ones stay
    _, safe = slimming.global_threshold(graph, 0.0)
    assert safe == min(float(np.abs(m.bn.weight.numpy()).max())
                       for g in graph.prunable for m in g.layers)
    with pytest.raises(UserError, match="global_percent"):
        slimming.global_threshold(graph, 1.0)
    with pytest.raises(UserError, match="dw_rule"):
        slimming.group_masks(graph, 0.1, 0.5, "union")


def test_depthwise_rules():
    model = _model()
    graph = slimming.SlimGraph(model, 1)
    group = next(g for g in graph.prunable if g.master == "conv4_2_expand_weights")
    expand, dwise = group.layers
    n = expand.bn.weight.shape[0]
    a = np.full(n, 0.01, "float32")
    a[: n // 2] = 1.0                                     # expand keeps the first half
    b = np.full(n, 0.01, "float32")
    b[n // 4: n // 4 + 3 * n // 8] = 1.0                  # dwise keeps fewer, overlapping
    expand.bn.weight.set_value(a)
    dwise.bn.weight.set_value(b)
    union = slimming.group_masks(graph, 0.5, 0.0, "intersection")[group.master]
    assert np.array_equal(union, (a > 0.5) | (b > 0.5))
    larger = slimming.group_masks(graph, 0.5, 0.0, "max")[group.master]
    assert np.array_equal(larger, a > 0.5)
    b2 = np.concatenate([np.full(n // 2 - 2, 0.01), np.ones(n - n // 2 + 2)]).astype("float32")
    dwise.bn.weight.set_value(b2)
    assert np.array_equal(slimming.group_masks(graph, 0.5, 0.0, "max")[group.master], b2 > 0.5)


def test_layer_pruning_removes_the_weakest_blocks_and_checkpoints_rebuild(tmp_path):
    model = _model()
    blocks = slimming.residual_blocks(model)
    weakest = min(blocks, key=lambda b: b[2])[0]
    for path, layer, _ in blocks:                          # make one block clearly weakest
        if path == weakest:
            layer.linear.bn.weight.set_value(layer.linear.bn.weight.numpy() * 0.01)
    graph = slimming.SlimGraph(model, 1)
    masks = slimming.group_masks(graph, slimming.global_threshold(graph, 0.3)[0], 0.5)
    slimming.prune_channels(graph, masks)
    flops = model_flops(model, SIZE)
    removed = slimming.prune_layers(model, 2)
    assert removed[0][0] == weakest and len(removed) == 2
    assert model_flops(model, SIZE) < flops
    x = paddle.randn([1, 3, 96, 128])
    out = _outputs(model, x)
    path = str(tmp_path / "slim")
    save_checkpoint(model, path, plan=channel_plan(model))
    fresh = build_model(load_config(CFG))
    meta = load_weights(fresh, path)
    assert meta["removed_layers"] == [p for p, _ in removed]
    fresh.eval()
    assert _close(out, _outputs(fresh, x))
    with pytest.raises(UserError, match="residual blocks"):
        slimming.prune_layers(model, 99)


class _FakeTrainer:
    def __init__(self, model, save_dir):
        self.model, self.save_dir, self.rank = model, save_dir, 0
        self.cfg = {"epoch": 4}
        self.start_epoch, self.epoch, self.step_in_epoch, self.steps_per_epoch = 0, 0, 0, 10


def test_sparsity_hook_adds_s_sign_gamma_to_prunable_scales_and_logs(tmp_path):
    model = _model()
    model.train()
    trainer = _FakeTrainer(model, str(tmp_path))
    hook = BNSparsity(s=0.5, prune_mode=0)
    hook.before_train(trainer)
    params = {p.name: p for p in model.parameters()}
    tracked = {p.name for p in hook.scales}
    assert "conv4_2_expand_bn_scale" in tracked and "conv4_2_linear_bn_scale" not in tracked
    for p in params.values():
        p.clear_gradient()
    loss = sum((o ** 2).mean() for o in model.head_outputs(paddle.randn([2, 3, 64, 64])))
    loss.backward()
    before = {n: params[n].grad.numpy().copy() for n in
              ("conv4_2_expand_bn_scale", "conv4_2_linear_bn_scale")}
    hook.after_backward(trainer)
    gamma = params["conv4_2_expand_bn_scale"].numpy()
    np.testing.assert_allclose(params["conv4_2_expand_bn_scale"].grad.numpy(),
                               before["conv4_2_expand_bn_scale"] + 0.5 * np.sign(gamma),
                               rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(params["conv4_2_linear_bn_scale"].grad.numpy(),
                                  before["conv4_2_linear_bn_scale"])
    hook.after_epoch(trainer, 0)
    log = json.loads((tmp_path / "bn_sparsity.json").read_text())
    assert sum(log["epochs"][0]["hist"]) == sum(p.shape[0] for p in hook.scales)
    assert (tmp_path / "bn_sparsity.png").stat().st_size > 1000
    assert BNSparsity(0.5, s_decay="linear").s_at(0.75) == pytest.approx(0.125)
    assert sparsity_from_config({"sparsity": {"enable": False}}) is None
    assert sparsity_from_config({}, sr=True, s=1e-3, prune=1).prune_mode == 1
    with pytest.raises(UserError, match="sparsity.rate"):
        sparsity_from_config({"sparsity": {"rate": 1}}, sr=True)


def _run(*args):
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=900)


@pytest.mark.long
def test_sparsity_training_then_slim_prune_tool(tmp_path, shapes_root):
    """The seed's workflow end to end on a few images: --sr training, slim_prune with
    channels + one residual block, a short fine-tune, and the stage table."""
    save = str(tmp_path)
    quick = ["TrainDataset.sample_num=16", "EvalDataset.sample_num=8", "epoch=1",
             f"save_dir={save}"]
    r = _run("tools/train.py", "-c", CFG, "-o", *quick, "--sr", "--s", "0.001", "--prune", "1")
    assert r.returncode == 0, r.stderr
    sparse = os.path.join(save, "yolov3_mobilenet_v2_shapes_sparse")
    assert os.path.isfile(os.path.join(sparse, "model_final.pdparams"))
    assert json.load(open(os.path.join(sparse, "bn_sparsity.json")))["epochs"]
    weights = os.path.join(sparse, "model_final")
    r = _run("slim/prune/slim_prune.py", "-c", CFG, "-o", f"weights={weights}", *quick,
             "--global_percent", "0.99")
    assert r.returncode == 2 and "lower --global_percent" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    r = _run("slim/prune/slim_prune.py", "-c", CFG, "-o", f"weights={weights}", *quick,
             "--global_percent", "0.3", "--shortcuts", "99")
    assert r.returncode == 2 and "use 0..10" in r.stderr
    assert not os.path.exists(os.path.join(save, "yolov3_mobilenet_v2_shapes_slim"))
    report = str(tmp_path / "slim.md")
    r = _run("slim/prune/slim_prune.py", "-c", CFG, "-o", f"weights={weights}", *quick,
             "--global_percent", "0.3", "--layer_keep", "0.5", "--shortcuts", "1",
             "--finetune", "--report", report)
    assert r.returncode == 0, r.stderr
    assert "removed residual block backbone.blocks." in r.stdout
    assert "| layer | total channels | remaining |" in r.stdout
    assert "After prune layers: params" in r.stdout
    table = open(report).read()
    for label in ("Before", "After prune channels", "After prune layers", "After finetune"):
        assert label in table
    slim_dir = os.path.join(save, "yolov3_mobilenet_v2_shapes_slim")
    r = _run("tools/eval.py", "-c", CFG, "-o", f"weights={slim_dir}/model_final",
             "EvalDataset.sample_num=8")
    assert r.returncode == 0, r.stderr
    assert "mAP(0.50, 11point)" in r.stdout
    # pruning again from the tool's own output would overwrite it: refused, file intact
    channels = os.path.join(slim_dir, "channels.pdparams")
    before = open(channels, "rb").read()
    r = _run("slim/prune/slim_prune.py", "-c", CFG, "-o", f"weights={slim_dir}/channels",
             f"save_dir={save}", "--global_percent", "0.3", "--layer_keep", "0.5")
    assert r.returncode == 2 and "output folder" in r.stderr
    assert open(channels, "rb").read() == before


def test_slim_checkpoints_refuse_other_configs_and_feed_pretraining(tmp_path):
    from ppdet.engine.checkpoint import CheckpointError, ensure_outside
    from ppdet.engine.trainer import load_pretrain
    model = _model()
    graph = slimming.SlimGraph(model, 1)
    slimming.prune_channels(graph, slimming.group_masks(
        graph, slimming.global_threshold(graph, 0.3)[0], 0.5))
    slimming.prune_layers(model, 1)
    path = str(tmp_path / "slim")
    save_checkpoint(model, path, plan=channel_plan(model))
    wider = build_model(load_config(CFG, ["MobileNetV2.scale=1.0"]))
    with pytest.raises(CheckpointError, match="another config"):
        load_weights(wider, path)
    fresh = build_model(load_config(CFG))          # e.g. a second round of --sr from it
    load_pretrain(fresh, path)
    assert {p.name: p.shape for p in fresh.parameters()} == \
        {p.name: p.shape for p in model.parameters()}
    with pytest.raises(CheckpointError, match="output folder"):
        ensure_outside(path, str(tmp_path))
    ensure_outside(path, str(tmp_path / "elsewhere"))


def test_bad_sparsity_and_loss_settings_are_one_line_errors():
    from ppdet.core.config import ConfigError
    from ppdet.modeling.losses.ssd_loss import SSDLoss
    with pytest.raises(UserError, match="sparsity.enable"):
        sparsity_from_config({"sparsity": {"enable": "false"}})
    with pytest.raises(UserError, match="sparsity.s must be a number"):
        sparsity_from_config({"sparsity": {"s": "abc"}}, sr=True)
    with pytest.raises(UserError, match="prune mode must be 0, 1 or 2"):
        sparsity_from_config({"sparsity": {"prune": 3}}, sr=True)
    with pytest.raises(ConfigError, match="neg_overlap"):
        SSDLoss(overlap_threshold=0.4, neg_overlap=0)
    r = _run("tools/train.py", "-c", CFG, "--s", "0.001")
    assert r.returncode == 2 and "add --sr" in r.stderr


@pytest.mark.parametrize("cfg", ["configs/shapes/yolov3_darknet_shapes.yml",
                                 "configs/shapes/yolov3_r18_shapes.yml"])
def test_removed_blocks_fold_their_offsets_exactly_and_still_prune(cfg, tmp_path):
    """A block whose add-feeding BN scales are zero becomes ``act(x + c)``: same outputs;
    the checkpoint rebuilds it; its channels still prune with the shortcut group."""
    from ppdet.slim.prune.graph import PruneGraph
    from ppdet.slim.prune.masks import masked, masks
    from ppdet.slim.prune.plan import apply_plan, make_plan
    model = random_bn_model(cfg, 0, slimming_bn)
    path, block, _ = slimming.residual_blocks(model)[-2]
    block.add_bn.weight.set_value(np.zeros(block.add_bn.weight.shape, "float32"))
    x = paddle.randn([1, 3, 96, 96])
    want = _outputs(model, x)
    assert slimming.prune_layers(model, 1)[0][0] == path      # scales 0: the weakest
    assert _close(want, _outputs(model, x))
    unfolded = random_bn_model(cfg, 0, slimming_bn)
    dict(unfolded.named_sublayers())[path].add_bn.weight.set_value(
        np.zeros(block.add_bn.weight.shape, "float32"))
    slimming.prune_layers(unfolded, 1, fold=False)           # an identity loses the offsets
    assert not _close(want, _outputs(unfolded, x))
    save_checkpoint(model, str(tmp_path / "layers"), plan=channel_plan(model))
    fresh = build_model(load_config(os.path.join(ROOT, cfg)))
    assert load_weights(fresh, str(tmp_path / "layers"))["removed_shifts"]
    fresh.eval()
    assert _close(want, _outputs(fresh, x))
    graph = PruneGraph(fresh)                                  # the shift joins its group
    group = next(g for g in graph.groups if any(m.layer == path for m in g.members))
    plan = make_plan(graph, {group.name: 0.5})
    with masked(graph, masks(graph, plan)):
        ref = _outputs(fresh, x)
    apply_plan(graph, plan)
    assert list(dict(fresh.named_sublayers())[path].weight.shape)[1] == group.size // 2
    assert _close(ref, _outputs(fresh, x))


@pytest.mark.parametrize("cfg", ["configs/shapes/yolov3_darknet_shapes.yml",
                                 "configs/shapes/yolov3_r18_shapes.yml"])
def test_fast_sensitivity_masks_a_removed_block_like_pruning(cfg, tmp_path, shapes_root):
    """Sensitivity's masked programs on a checkpoint with removed blocks: the folded
    constant's mask is as long as its channels (axis 1 of its weight), and pruning its
    group under masks detects what the pruned model detects."""
    from helpers import masked_setup

    from ppdet.slim.prune.plan import apply_plan
    from ppdet.slim.sensitivity.fast_eval import MaskedEvaluator
    model = random_bn_model(cfg, 0, slimming_bn)
    path = slimming.prune_layers(model, 1)[0][0]
    save_checkpoint(model, str(tmp_path / "layers"), plan=channel_plan(model))
    keep_all = tmp_path / "keep_all.yml"        # a random model's scores are all low
    keep_all.write_text(f"_BASE_: ['{os.path.join(ROOT, cfg)}']\nYOLOBox:\n  conf_thresh: 0.0\n"
                        f"MultiClassNMS:\n  score_threshold: 0.0\n")
    _, fresh, cache, metric, pruner = masked_setup(str(keep_all), str(tmp_path / "layers"), 8)
    group = next(g for g in pruner.graph.groups if any(m.layer == path for m in g.members))
    ratios = {group.name: 0.5}
    ev = MaskedEvaluator(fresh, cache, metric, pruner, 8)
    try:
        masked_dets = ev.detections(ev.masks_for(ratios))
    finally:
        ev.close()
    apply_plan(pruner.graph, pruner.plan(ratios))
    ev = MaskedEvaluator(fresh, cache, metric, type(pruner)(fresh), 8)
    try:
        pruned_dets = ev.detections(ev.masks_for(None))
    finally:
        ev.close()
    assert masked_dets.keys() == pruned_dets.keys()
    assert sum(len(np.asarray(v)) for v in masked_dets.values()) > 0
    for k in masked_dets:
        np.testing.assert_allclose(np.asarray(masked_dets[k]), np.asarray(pruned_dets[k]),
                                   rtol=1e-4, atol=1e-3, err_msg=str(k))


@pytest.mark.parametrize("cfg", ["configs/shapes/yolov3_darknet_shapes.yml",
                                 "configs/shapes/yolov3_r18_shapes.yml"])
def test_flops_of_a_layer_pruned_model_are_paddleslims(cfg):
    """After a block is removed, and after its channels are then cut too, the graph's
    FLOPs count equals paddleslim's count of the model (ResNet's ReLU after the folded
    constant included)."""
    from ppdet.slim import compat
    from ppdet.slim.prune import graph as graph_mod
    from ppdet.slim.prune.costs import Costs
    from ppdet.slim.prune.graph import PruneGraph
    from ppdet.slim.prune.plan import apply_plan, make_plan
    model = random_bn_model(cfg, 0, slimming_bn)
    path = slimming.prune_layers(model, 1)[0][0]
    graph = PruneGraph(model)
    size = [96, 96]
    costs = Costs(graph, size)

    def paddleslim():
        return int(compat.dygraph_flops(graph_mod._RawOutputs(model), [1, 3, *size]))
    assert costs.flops() == paddleslim()
    group = next(g for g in graph.groups if any(m.layer == path for m in g.members))
    plan = make_plan(graph, {group.name: 0.5})
    apply_plan(graph, plan)
    assert costs.flops(plan) == paddleslim()


def test_prune_mode_2_folds_into_3x3_convs_exactly_inside_the_image():
    """DarkNet: a block's 1x1 conv feeds its 3x3 conv. Mode 2 prunes it; the 3x3 conv's
    output equals the masked model's everywhere but on its 1-pixel border."""
    model = random_bn_model("configs/shapes/yolov3_darknet_shapes.yml", 0, slimming_bn)
    assert "3x3" in next(g.blocked for g in slimming.SlimGraph(model, 1).groups
                         if g.master == "stage.2.0.0.conv.weights")
    graph = slimming.SlimGraph(model, 2)
    g = next(g for g in graph.prunable if g.master == "stage.2.0.0.conv.weights")
    assert len(graph.prunable) > 2 * len(slimming.SlimGraph(model, 1).prunable)
    keep = np.ones(g.channels, bool)
    keep[::2] = False
    block = dict(model.named_sublayers())["backbone.blocks.5"]
    seen = {}
    hook = block.conv2.register_forward_post_hook(
        lambda layer, inputs, out: seen.__setitem__("out", out.numpy()))
    x = paddle.randn([1, 3, 96, 96])
    slimming.zero_scales(graph, {g.master: keep})
    _outputs(model, x)
    want = seen["out"]
    kept = slimming.prune_channels(graph, {g.master: keep})
    assert kept["stage.2.0.0"] == (16, 8)
    _outputs(model, x)
    hook.remove()
    got = seen["out"]
    inner = (slice(None), slice(None), slice(1, -1), slice(1, -1))
    np.testing.assert_allclose(got[inner], want[inner], atol=1e-4 * (1 + np.abs(want).max()))
    assert np.abs(got - want).max() > 1e-3            # the border is where it is not exact


def test_a_removed_blocks_constant_trains_after_pretrain_loading_and_resume(tmp_path,
                                                                            shapes_root):
    """The folded constant (``Shift``) is a parameter the checkpoint creates on load: the
    optimizer is rebuilt over it, so fine-tuning moves it, from ``pretrain_weights=`` (a
    second --sr round) and after ``-r``."""
    from helpers import small_train

    from ppdet.engine.trainer import Trainer
    from ppdet.modeling.surgery import Shift
    cfg_path = os.path.join(ROOT, "configs/shapes/yolov3_darknet_shapes.yml")
    model = random_bn_model(cfg_path, 0, slimming_bn)
    path, block, _ = slimming.residual_blocks(model)[-2]
    block.add_bn.weight.set_value(np.zeros(block.add_bn.weight.shape, "float32"))
    slimming.prune_layers(model, 1)
    save_checkpoint(model, str(tmp_path / "layers"), plan=channel_plan(model))

    def shift(trainer):
        layer = dict(trainer.model.named_sublayers())[path]
        assert isinstance(layer, Shift) and not layer.weight.stop_gradient
        return layer.weight

    run = str(tmp_path / "run")
    opts = small_train(8) + ["LearningRate.base_lr=0.01"]
    with paddle.utils.unique_name.guard():
        trainer = Trainer(load_config(cfg_path, opts + ["epoch=1"]), save_dir=run)
        trainer.load_pretrain(str(tmp_path / "layers"))
        before = shift(trainer).numpy().copy()
        trainer.train()
    after = shift(trainer).numpy().copy()
    assert np.abs(after - before).max() > 0
    # optimizer state keys carry unique-name counters: resume as a new process would
    with paddle.utils.unique_name.guard():
        again = Trainer(load_config(cfg_path, opts + ["epoch=2"]), save_dir=run)
        again.resume(os.path.join(run, "model_final"))
        assert np.array_equal(shift(again).numpy(), after)
        again.train()
    assert np.abs(shift(again).numpy() - after).max() > 0


def test_latency_check_of_a_layer_pruned_model_measures_but_does_not_predict(monkeypatch,
                                                                             tmp_path):
    """The latency table times the full-depth model: for a model with removed blocks the
    check prints the measured time and says why there is no prediction."""
    import types

    from ppdet.engine import latency as engine_latency
    from ppdet.slim.latency import table as table_mod
    from ppdet.slim.latency.error_bars import predicted_latency
    from ppdet.slim.pipelines.latency import check_exported_latency
    cfg_path = os.path.join(ROOT, "configs/shapes/yolov3_darknet_shapes.yml")
    model = random_bn_model(cfg_path, 0, slimming_bn)
    path, block, _ = slimming.residual_blocks(model)[-2]
    block.add_bn.weight.set_value(np.zeros(block.add_bn.weight.shape, "float32"))
    slimming.prune_layers(model, 1)

    def no_prediction(kept):
        raise AssertionError("the full-depth table predicted a layer-pruned model")
    table = types.SimpleNamespace(precision="fp32", path="t.json", predict=no_prediction,
                                  key={"input_size": [160, 160], "threads": 1})
    monkeypatch.setattr(table_mod, "load_latency_table", lambda *a, **k: table)
    monkeypatch.setattr(engine_latency, "measure_latency", lambda *a, **k: 4.0)
    cfg = load_config(cfg_path, [f"weights={tmp_path / 'w' / 'model'}"])
    (tmp_path / "w").mkdir()                           # the file the check looks for first
    (tmp_path / "w" / "latency_cpu-onednn_t1_160x160.json").write_text("{}")
    assert predicted_latency(cfg, model) == (None, table)
    lines = []
    assert check_exported_latency(cfg, model, str(tmp_path), log=lines.append) == 4.0
    assert len(lines) == 1 and "measured 4.00 ms" in lines[0]
    assert "cannot predict" in lines[0] and path in lines[0]
