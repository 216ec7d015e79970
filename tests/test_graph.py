"""One pruning graph: a regression test per topology (concat route, upsample, shortcut add,
depthwise chain, SSD multi-head). Each checks shapes AND outputs (pruned == masked), the
kept channels against paddleslim's own pruners, and FLOPs against paddleslim's count."""
import os

import numpy as np
import paddle
import pytest
from helpers import head_outputs, random_bn_model

from ppdet.modeling import surgery
from ppdet.slim import compat
from ppdet.slim.prune import graph as graph_mod
from ppdet.slim.prune import search
from ppdet.slim.prune.costs import Costs, count_flops
from ppdet.slim.prune.criteria import kept_channels
from ppdet.slim.prune.graph import PruneGraph
from ppdet.slim.prune.masks import masked, masks
from ppdet.slim.prune.plan import ChannelPlan, apply_plan, layer_plan, make_plan

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = {"v1": "configs/shapes/yolov3_mobilenet_v1_shapes.yml",
           "v2": "configs/shapes/yolov3_mobilenet_v2_shapes.yml",
           "ssd": "configs/shapes/ssd_mobilenet_v1_shapes.yml",
           "dark": "configs/shapes/yolov3_darknet_shapes.yml",
           "r18": "configs/shapes/yolov3_r18_shapes.yml"}
SIZE = (96, 96)


def _model(kind, seed=0):
    return random_bn_model(CONFIGS[kind], seed)


_CACHE = {}


def _case(kind):
    """(model, graph, input), one trace per model kind for the whole module."""
    if kind not in _CACHE:
        model = _model(kind)
        x = paddle.to_tensor(np.random.RandomState(1).randn(2, 3, *SIZE).astype("float32"))
        _CACHE[kind] = (model, PruneGraph(model), x)
    return _CACHE[kind]


_outputs = head_outputs


def _paddleslim_kept(model, ratios, criterion):
    """Kept filters per named conv as paddleslim's dygraph pruner chooses them."""
    pruner = compat.make_pruner(graph_mod._RawOutputs(model), [1, 3, 64, 64], criterion)
    plan = compat.prune_vars(pruner, ratios, apply=None)
    out = {}
    for name in ratios:
        rows = [np.asarray(e.mask).reshape(-1) for e in plan._masks[name]
                if e.dims in (0, [0])]
        out[name] = np.flatnonzero(np.prod(rows, axis=0))
    return out


def _check(kind, ratios, expect_consumer_cut=()):
    """Prune ``ratios`` through the graph; assert shapes, outputs == masked, FLOPs."""
    model, graph, x = _case(kind)
    plan = make_plan(graph, ratios)
    shapes = {p.name: list(p.shape) for p in model.parameters()}
    costs = Costs(graph, SIZE)
    with masked(graph, masks(graph, plan)):
        want = _outputs(model, x)
    flops_plan, params_plan = costs.flops(plan), costs.n_params(plan)
    applied = apply_plan(graph, plan)
    try:
        got = _outputs(model, x)
        after = {p.name: list(p.shape) for p in model.parameters()}
        for name, ratio in ratios.items():
            g = graph.group(name)
            kept = len(plan[g.key])
            assert kept == g.size - int(round(g.size * ratio))
            for conv in g.producers:          # every producer, depthwise followers too
                assert after[graph.layers[conv].weight.name][0] == kept
            bn = graph.bn_of(g)
            assert bn is None or after[bn] == [kept]
        for consumer, lost in expect_consumer_cut:
            assert after[consumer][1] == shapes[consumer][1] - lost
        for a, b in zip(got, want):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4 * max(1, np.abs(b).max()))
        assert flops_plan == int(compat.dygraph_flops(graph_mod._RawOutputs(model),
                                                      [1, 3, *SIZE]))
        assert params_plan == sum(int(np.prod(p.shape)) for p in model.parameters())
        assert count_flops(model, SIZE) == flops_plan     # the cut model, counted as it is
    finally:
        applied.restore()
    assert {p.name: list(p.shape) for p in model.parameters()} == shapes
    return plan


def test_concat_route_two_groups_into_one_consumer():
    _, graph, _ = _case("v1")
    a, b = "yolo_transition.1.conv.weights", "conv4_1_sep_weights"
    ga, gb = graph.group(a), graph.group(b)
    consumer = "yolo_block.2.0.0.conv.weights"
    cut = {m.tensor: m.channels for g in (ga, gb) for m in g.members if m.tensor == consumer}
    assert cut                           # both reach the consumer, at their own offsets
    plan = _check("v1", {a: 0.25, b: 0.5},
                  [(consumer, ga.size // 4 + gb.size // 2)])
    assert set(plan) == {ga.key, gb.key}


def test_upsample_route_maps_channels_one_to_one():
    _, graph, _ = _case("v1")
    g = graph.group("yolo_transition.0.conv.weights")
    m = next(m for m in g.members if m.tensor == "yolo_block.1.0.0.conv.weights")
    assert list(m.channels[:g.size]) == list(range(g.size))   # route comes first
    assert (m.channels[g.size:] == -1).all()                  # then the backbone map
    _check("v1", {"yolo_transition.0.conv.weights": 0.5},
           [("yolo_block.1.0.0.conv.weights", g.size // 2)])


def test_depthwise_chain_follows_its_producer():
    _, graph, _ = _case("v1")
    g = graph.group("conv4_2_sep_weights")
    assert [graph.layers[p].weight.name for p in g.depthwise] == ["conv5_1_dw_weights"]
    assert graph.conv("conv5_1_dw_weights").reason.startswith("depthwise")
    _check("v1", {"conv4_2_sep_weights": 0.5, "conv1_weights": 0.25},
           [("conv5_1_sep_weights", 128 // 2)])


def test_shortcut_add_ties_convs_into_one_group():
    _, graph, _ = _case("v2")
    g = graph.group("conv4_1_linear_weights")
    assert g.names == ["conv4_1_linear_weights", "conv4_2_linear_weights",
                       "conv4_3_linear_weights"]
    assert graph.group("conv4_3_linear_weights") is g
    assert graph.conv("conv4_2_linear_weights").role == "shortcut"
    _check("v2", {"conv4_1_linear_weights": 0.5, "conv3_1_expand_weights": 0.5})


def test_darknet_shortcut_adds_tie_the_downsample_and_every_block():
    _, graph, _ = _case("dark")
    g = graph.group("stage.1.downsample.conv.weights")
    assert g.names == ["stage.1.downsample.conv.weights", "stage.2.0.1.conv.weights"]
    assert graph.conv("stage.2.0.1.conv.weights").role == "shortcut"
    consumers = {graph.layers[c].weight.name for c in g.consumers}
    assert {"stage.2.0.0.conv.weights", "stage.2.downsample.conv.weights"} <= consumers
    assert not graph.group("stage.2.0.0.conv.weights").shortcut     # the 1x1 prunes freely
    _check("dark", {"stage.1.downsample.conv.weights": 0.5,
                    "stage.2.0.0.conv.weights": 0.5},
           [("stage.2.0.1.conv.weights", 8), ("stage.2.downsample.conv.weights", 16)])


def test_resnet_shortcut_adds_tie_projection_and_blocks():
    _, graph, _ = _case("r18")
    g = graph.group("res3a_branch1_weights")
    assert g.names == ["res3a_branch1_weights", "res3a_branch2b_weights",
                       "res3b_branch2b_weights"]
    assert graph.conv("res3b_branch2b_weights").reason.startswith("tied by a shortcut")
    _check("r18", {"res3a_branch1_weights": 0.25, "res3b_branch2a_weights": 0.5},
           [("res4a_branch1_weights", 8), ("res3b_branch2b_weights", 16)])


def test_ssd_multi_head_consumers():
    _, graph, _ = _case("ssd")
    g = graph.prunable[5]       # the first feature map: read by the next block, loc and conf
    heads = [c for c in g.consumers if c.startswith("ssd_head")]
    assert len(heads) == 2
    assert all(graph.conv(graph.layers[c].weight.name).role == "prediction" for c in heads)
    _check("ssd", {g.name: 0.5, graph.prunable[-1].name: 0.25})


@pytest.mark.parametrize("kind", ["v1", "v2", "ssd", "dark", "r18"])
def test_every_group_at_once_matches_paddleslim(kind):
    model, graph, _ = _case(kind)
    ratios = {g.name: (0.25, 0.5)[i % 2] for i, g in enumerate(graph.prunable)}
    plan = _check(kind, ratios)
    ref = _paddleslim_kept(model, ratios, "l1_norm")
    for name in ratios:
        np.testing.assert_array_equal(plan[graph.group(name).key], ref[name])


@pytest.mark.parametrize("criterion", ["geometry_median", "l2_norm"])
def test_criteria_choose_paddleslim_channels(criterion):
    model, graph, _ = _case("v1")
    ratios = {"yolo_block.0.0.0.conv.weights": 0.3, "conv5_5_sep_weights": 0.5}
    plan = make_plan(graph, ratios, criterion)
    ref = _paddleslim_kept(model, ratios, criterion)
    for name in ratios:
        np.testing.assert_array_equal(plan[graph.group(name).key], ref[name])


def test_bn_scale_keeps_largest_gammas_and_optimal_threshold():
    model, graph, _ = _case("v1")
    g = graph.group("yolo_block.0.0.0.conv.weights")
    gamma = np.abs(graph.value(graph.bn_of(g)))
    kept = make_plan(graph, {g.name: 0.25}, "bn_scale")[g.key]
    assert np.sort(gamma[kept]).tolist() == np.sort(gamma)[-len(kept):].tolist()
    energy = kept_channels(gamma, 0.1, "optimal_threshold")
    gone = np.setdiff1d(np.arange(g.size), energy)
    assert (gamma[gone] ** 2).sum() <= 0.1 * (gamma ** 2).sum() + 1e-6
    assert gamma[gone].max() <= gamma[energy].min()


def test_flops_search_does_not_retrace(monkeypatch):
    model, graph, _ = _case("v1")
    calls = []
    real = compat.trace_groups
    monkeypatch.setattr(compat, "trace_groups", lambda *a, **k: calls.append(1) or real(*a))
    before = graph_mod.trace_count()
    costs = Costs(graph, SIZE)
    names = [g.name for g in graph.prunable if g.name.startswith("yolo_block")]
    ratio, got = search.uniform_ratio_for_flops(costs, names, 0.3)
    assert abs(got - 0.3) <= 0.01 and 0 < ratio < 0.95
    sens = {n: {0.1: 0.01, 0.3: 0.05, 0.5: 0.2} for n in names}
    threshold, ratios, got = search.loss_for_flops(costs, sens, 0.2)
    assert abs(got - 0.2) <= 0.01 and ratios
    assert calls == [] and graph_mod.trace_count() == before
    plan = make_plan(graph, {n: ratio for n in names})
    applied = apply_plan(graph, plan)
    try:       # the count it searched with is the count of the model it gives
        assert costs.flops(plan) == int(compat.dygraph_flops(graph_mod._RawOutputs(model),
                                                             [1, 3, *SIZE]))
    finally:
        applied.restore()


def test_ratios_by_loss_interpolates_like_paddleslim():
    sens = {"a": {0.1: 0.0, 0.2: 0.02, 0.4: 0.1}, "b": {0.1: 0.5}, "c": {0.1: 0.01}}
    slim = compat.import_paddleslim()
    ref = {k: round(float(v), 4) for k, v in slim.prune.get_ratios_by_loss(sens, 0.04).items()
           if v > 0}
    assert search.ratios_by_loss(sens, 0.04) == ref


def test_layer_plan_replays_on_a_fresh_model():
    model, graph, x = _case("v2")
    plan = make_plan(graph, {"conv4_1_linear_weights": 0.5, "yolo_block.1.2.conv.weights":
                             0.25})
    saved = ChannelPlan.from_json(plan.to_json())
    applied = apply_plan(graph, saved)
    try:
        want = _outputs(model, x)
        state = {k: v.numpy() for k, v in model.state_dict().items()}
        cuts = layer_plan(graph, saved)
        assert model.channel_cuts == cuts
        fresh = _model("v2", seed=5)
        surgery.replay(fresh, cuts)
        fresh.set_state_dict(state)
        for a, b in zip(_outputs(fresh, x), want):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    finally:
        applied.restore()


def test_checkpoint_stores_the_plan_and_old_shape_plans_still_load(tmp_path):
    from ppdet.engine import checkpoint as ckpt
    model, graph, x = _case("v1")
    plan = make_plan(graph, {"yolo_transition.1.conv.weights": 0.5,
                             "conv4_1_sep_weights": 0.25})
    applied = apply_plan(graph, plan)
    try:
        want = _outputs(model, x)
        path = str(tmp_path / "pruned")
        ckpt.save_checkpoint(model, path)
        meta = paddle.load(path + ".pdparams")[ckpt.META_KEY]
        layers = meta["prune_plan"]["layers"]
        g = graph.group("conv4_1_sep_weights")
        assert layers[g.key]["out"] == [int(i) for i in plan[g.key]]   # kept per group
        assert ckpt.is_reshaped(meta)
        fresh = _model("v1", seed=7)
        ckpt.load_weights(fresh, path)
        for a, b in zip(_outputs(fresh, x), want):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
        # a checkpoint of the old format: {param: shape} only
        state = paddle.load(path + ".pdparams")
        state[ckpt.META_KEY] = {k: v for k, v in state[ckpt.META_KEY].items()
                                if k != "prune_plan"}
        state[ckpt.META_KEY]["channel_plan"] = ckpt.channel_plan(model)
        paddle.save(state, str(tmp_path / "old.pdparams"))
        old = _model("v1", seed=8)
        ckpt.load_weights(old, str(tmp_path / "old"))
        for a, b in zip(_outputs(old, x), want):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
        ckpt.save_checkpoint(old, str(tmp_path / "again"))   # cuts unknown: shapes saved
        again = _model("v1", seed=9)
        ckpt.load_weights(again, str(tmp_path / "again"))
        for a, b in zip(_outputs(again, x), want):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    finally:
        applied.restore()
