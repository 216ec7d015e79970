"""Tests of ppdet.slim.compat: one per shim, on tiny nets with explicitly named parameters."""

import numpy as np
import paddle
import paddle.nn as nn
import paddle.nn.functional as F
import pytest
from paddle import ParamAttr

from ppdet.slim import compat

slim = compat.import_paddleslim()
ATOL = 1e-4


def conv(cin, cout, k, name, bias=False):
    return nn.Conv2D(cin, cout, k, padding=k // 2, weight_attr=ParamAttr(name=f"{name}.w"),
                     bias_attr=ParamAttr(name=f"{name}.b") if bias else False)


def bn(c, name):
    # nn.BatchNorm (not BatchNorm2D) so the running mean/variance get stable names too
    return nn.BatchNorm(c, param_attr=ParamAttr(name=f"{name}.scale"),
                        bias_attr=ParamAttr(name=f"{name}.offset"),
                        moving_mean_name=f"{name}.mean", moving_variance_name=f"{name}.var")


class ConcatNet(nn.Layer):
    """stem -> branches a (6 ch) and b (4 ch) -> concat (10 ch) -> fuse -> head."""

    def __init__(self):
        super().__init__()
        self.stem, self.stem_bn = conv(3, 8, 3, "stem"), bn(8, "stem_bn")
        self.a, self.a_bn = conv(8, 6, 3, "a"), bn(6, "a_bn")
        self.b, self.b_bn = conv(8, 4, 1, "b"), bn(4, "b_bn")
        self.fuse, self.fuse_bn = conv(10, 8, 3, "fuse"), bn(8, "fuse_bn")
        self.head = conv(8, 5, 1, "head", bias=True)

    def forward(self, x):
        x = F.relu(self.stem_bn(self.stem(x)))
        a = F.relu(self.a_bn(self.a(x)))
        b = F.relu(self.b_bn(self.b(x)))
        y = F.relu(self.fuse_bn(self.fuse(paddle.concat([a, b], axis=1))))
        return self.head(y)


class SppNet(nn.Layer):
    """One filter reaches the concat twice (directly and through a pool), as in SPP."""

    def __init__(self):
        super().__init__()
        self.p, self.p_bn = conv(3, 6, 3, "p"), bn(6, "p_bn")
        self.c, self.c_bn = conv(12, 4, 1, "c"), bn(4, "c_bn")
        self.head = conv(4, 2, 1, "head")

    def forward(self, x):
        x = F.relu(self.p_bn(self.p(x)))
        y = paddle.concat([x, F.max_pool2d(x, 3, 1, 1)], axis=1)
        return self.head(F.relu(self.c_bn(self.c(y))))


class AddNet(nn.Layer):
    """concat(a, b) + d. Parameter order decides which filter's search meets the concat first."""

    def __init__(self, d_first=True):
        super().__init__()
        if d_first:  # d's search reaches the concat from its output: the backward direction
            self.d = conv(3, 8, 1, "d")
        self.a, self.b = conv(3, 3, 3, "a"), conv(3, 5, 3, "b")
        if not d_first:  # a's and b's searches reach d from the add after the concat
            self.d = conv(3, 8, 1, "d")
        self.h = conv(8, 4, 1, "h")
        self.head = conv(4, 2, 1, "head")

    def forward(self, x):
        y = paddle.concat([self.a(x), self.b(x)], axis=1) + self.d(x)
        return self.head(F.relu(self.h(F.relu(y))))


class RowConcatNet(nn.Layer):
    """concat along H: pruning a's filters must prune b's alike."""

    def __init__(self):
        super().__init__()
        self.a, self.b = conv(3, 4, 3, "a"), conv(3, 4, 3, "b")
        self.h, self.head = conv(4, 3, 1, "h"), conv(3, 2, 1, "head")

    def forward(self, x):
        y = F.relu(paddle.concat([self.a(x), self.b(x)], axis=2))
        return self.head(F.relu(self.h(y)))


def build(cls, **kwargs):
    """Deterministic model in eval mode; BN statistics randomised so masking matters."""
    paddle.seed(0)
    # explicit parameter names may be created once per name checker: give each copy its own
    with paddle.utils.unique_name.guard():
        model = cls(**kwargs)
    rng = np.random.RandomState(0)
    for name, p in model.named_parameters():
        if p.ndim == 1:  # BN scale/offset/mean/variance and conv bias
            v = rng.uniform(0.5, 1.5, p.shape) if name.endswith(("_variance", "bn.weight")) \
                else rng.normal(0, 0.3, p.shape)
            p.set_value(v.astype("float32"))
    model.eval()
    return model


def x_input():
    return paddle.to_tensor(np.random.RandomState(1).randn(1, 3, 16, 16).astype("float32"))


def shapes(model):
    return {p.name: tuple(p.shape) for p in model.parameters()}


def layer_of(model, param_name):
    return next(m for m in model.sublayers() if any(p.name == param_name
                                                    for p in m.parameters(False)))


def mask_filters(model, conv_w, removed, bn_prefix=None):
    """Make output channels ``removed`` of a conv (and its BN) exactly zero, keeping shapes."""
    with paddle.no_grad():
        c = layer_of(model, conv_w)
        w = c.weight.numpy()
        w[removed] = 0
        c.weight.set_value(w)
        if bn_prefix:  # BN(0) = scale * (0 - mean) / std + offset: zero scale and offset
            b = layer_of(model, f"{bn_prefix}.scale")
            for p in (b.weight, b.bias):
                v = p.numpy()
                v[removed] = 0
                p.set_value(v)


def removed_filters(plan, name):
    (mask,) = [m for m in plan.masks[name] if m.dims == 0]
    return np.flatnonzero(np.asarray(mask.mask) == 0)


# --- shim 1 --------------------------------------------------------------------------------

def test_guard_alias_present_and_idempotent(monkeypatch):
    base = paddle.base.dygraph.base
    monkeypatch.delattr(base, "_to_static_mode_guard_", raising=False)
    compat.apply_paddle_shims()
    assert base._to_static_mode_guard_ is base.to_static_mode_guard
    compat.apply_paddle_shims()
    assert base._to_static_mode_guard_ is base.to_static_mode_guard
    # an existing attribute is left alone
    sentinel = object()
    monkeypatch.setattr(base, "_to_static_mode_guard_", sentinel)
    compat.apply_paddle_shims()
    assert base._to_static_mode_guard_ is sentinel


def test_reapplying_paddleslim_shims_is_harmless(monkeypatch):
    import paddleslim.core.dygraph as core_dygraph
    from paddleslim.dygraph.prune.filter_pruner import Status
    from paddleslim.dygraph.prune.pruning_plan import PruningPlan

    before = (core_dygraph.dygraph2program, slim.prune.prune_worker.PRUNE_WORKER.get("concat"),
              PruningPlan.add, Status.save)
    monkeypatch.setattr(compat, "_slim", None)
    assert compat.import_paddleslim() is slim
    after = (core_dygraph.dygraph2program, slim.prune.prune_worker.PRUNE_WORKER.get("concat"),
             PruningPlan.add, Status.save)
    assert after == before
    assert not getattr(core_dygraph.dygraph2program.original, compat._MARK, False)


# --- shim 2 --------------------------------------------------------------------------------

def test_trace_works_without_guard_and_keeps_dygraph_mode():
    model = build(ConcatNet)
    # the unshimmed tracer builds a PIR program that paddleslim cannot walk
    with pytest.raises(AttributeError, match="type"):
        prog = slim.core.dygraph.dygraph2program.original(model, [1, 3, 16, 16])
        slim.core.GraphWrapper(prog).ops()[0].type()
    assert paddle.in_dynamic_mode()
    pruner = compat.make_pruner(model, [1, 3, 16, 16])
    assert paddle.in_dynamic_mode()
    # constructing inside an explicit OldIrGuard, as paddleslim's users do, gives the same groups
    with paddle.pir_utils.OldIrGuard():
        guarded = compat.make_pruner(model, [1, 3, 16, 16])
    assert paddle.in_dynamic_mode()
    assert compat.prunable_params(guarded) == compat.prunable_params(pruner)


class Broken(nn.Layer):
    def forward(self, x):
        raise RuntimeError("boom")


def test_failed_trace_does_not_leave_static_mode():
    with pytest.raises(RuntimeError):
        slim.core.dygraph.dygraph2program.original(Broken(), [1, 3, 4, 4])
    leaked = not paddle.in_dynamic_mode()
    paddle.disable_static()
    assert leaked  # upstream bug, reproduced
    with pytest.raises(RuntimeError):
        compat.make_pruner(Broken(), [1, 3, 4, 4])
    assert paddle.in_dynamic_mode()


# --- shim 3: concat ------------------------------------------------------------------------

def test_without_concat_worker_branches_are_silently_unprunable(monkeypatch):
    monkeypatch.delitem(slim.prune.prune_worker.PRUNE_WORKER._module_dict, "concat")
    model = build(ConcatNet)
    before = shapes(model)
    pruner = compat.make_pruner(model, [1, 3, 16, 16])
    assert compat.prunable_params(pruner) == ["stem.w", "fuse.w"]
    pruner.prune_vars({"a.w": 0.5, "b.w": 0.5}, 0)  # upstream: nothing happens, nothing said
    assert shapes(model) == before
    with pytest.raises(KeyError, match="a.w"):
        compat.prune_vars(pruner, {"a.w": 0.5})


@pytest.mark.parametrize("ratios", [{"b.w": 0.5}, {"a.w": 0.5, "b.w": 0.75}])
def test_concat_prunes_consumer_channels_at_the_right_offsets(ratios):
    model, ref = build(ConcatNet), build(ConcatNet)
    x = x_input()
    fuse_w = model.fuse.weight.numpy()
    pruner = compat.make_pruner(model, [1, 3, 16, 16])
    assert compat.prunable_params(pruner) == ["stem.w", "a.w", "b.w", "fuse.w"]
    plan = compat.prune_vars(pruner, ratios)

    removed = {n: (removed_filters(plan, n) if n in ratios else np.array([], int))
               for n in ("a.w", "b.w")}
    for n, r in ratios.items():
        assert len(removed[n]) == round({"a.w": 6, "b.w": 4}[n] * r)
    got = shapes(model)
    assert got["a.w"] == (6 - len(removed["a.w"]), 8, 3, 3)
    assert got["b.w"] == (4 - len(removed["b.w"]), 8, 1, 1)
    for suffix in ("scale", "offset", "mean", "var"):
        assert got[f"a_bn.{suffix}"] == (6 - len(removed["a.w"]),)
        assert got[f"b_bn.{suffix}"] == (4 - len(removed["b.w"]),)
    # b's channels sit after a's 6 in the concat: the consumer keeps exactly the others
    kept = [c for c in range(10) if c not in set(removed["a.w"]) | set(6 + removed["b.w"])]
    np.testing.assert_array_equal(model.fuse.weight.numpy(), fuse_w[:, kept])
    assert got["fuse.w"][0] == 8 and got["head.w"] == (5, 8, 1, 1)

    # outputs: the pruned model equals the unpruned one with those channels forced to zero
    mask_filters(ref, "a.w", removed["a.w"], "a_bn")
    mask_filters(ref, "b.w", removed["b.w"], "b_bn")
    np.testing.assert_allclose(model(x).numpy(), ref(x).numpy(), atol=ATOL, rtol=0)


def test_concat_reached_twice_by_one_filter_spp():
    model, ref = build(SppNet), build(SppNet)
    x = x_input()
    c_w = model.c.weight.numpy()
    pruner = compat.make_pruner(model, [1, 3, 16, 16])
    removed = removed_filters(compat.prune_vars(pruner, {"p.w": 0.5}), "p.w")
    assert len(removed) == 3
    kept = [c for c in range(12) if c % 6 not in set(removed)]
    np.testing.assert_array_equal(model.c.weight.numpy(), c_w[:, kept])  # both copies
    mask_filters(ref, "p.w", removed, "p_bn")
    np.testing.assert_allclose(model(x).numpy(), ref(x).numpy(), atol=ATOL, rtol=0)


def test_concat_backward_slices_output_mask_onto_inputs():
    model, ref = build(AddNet), build(AddNet)
    x = x_input()
    pruner = compat.make_pruner(model, [1, 3, 16, 16])
    # a and b are pruned through d's group (like the second operand of a residual add)
    assert compat.prunable_params(pruner) == ["d.w", "h.w"]
    plan = compat.prune_vars(pruner, {"d.w": 0.5})
    removed = removed_filters(plan, "d.w")
    assert len(removed) == 4
    np.testing.assert_array_equal(removed_filters(plan, "a.w"), removed[removed < 3])
    np.testing.assert_array_equal(removed_filters(plan, "b.w"), removed[removed >= 3] - 3)
    assert model.h.weight.shape == [4, 4, 1, 1]
    mask_filters(ref, "d.w", removed)
    mask_filters(ref, "a.w", removed[removed < 3])
    mask_filters(ref, "b.w", removed[removed >= 3] - 3)
    np.testing.assert_allclose(model(x).numpy(), ref(x).numpy(), atol=ATOL, rtol=0)


def test_filter_reached_after_concat_joins_the_inputs_groups():
    model, ref = build(AddNet, d_first=False), build(AddNet, d_first=False)
    x = x_input()
    pruner = compat.make_pruner(model, [1, 3, 16, 16])
    # d gets no partial group of its own (pruning it alone would break the add)
    assert compat.prunable_params(pruner) == ["a.w", "b.w", "h.w"]
    plan = compat.prune_vars(pruner, {"a.w": 0.34, "b.w": 0.6})
    ra, rb = removed_filters(plan, "a.w"), removed_filters(plan, "b.w")
    assert (len(ra), len(rb)) == (1, 3)
    removed_d = np.concatenate([ra, 3 + rb])
    np.testing.assert_array_equal(removed_filters(plan, "d.w"), removed_d)
    assert model.d.weight.shape == [4, 3, 1, 1] and model.h.weight.shape == [4, 4, 1, 1]
    mask_filters(ref, "a.w", ra)
    mask_filters(ref, "b.w", rb)
    mask_filters(ref, "d.w", removed_d)
    np.testing.assert_allclose(model(x).numpy(), ref(x).numpy(), atol=ATOL, rtol=0)


def test_concat_on_another_axis_prunes_inputs_alike():
    model, ref = build(RowConcatNet), build(RowConcatNet)
    x = x_input()
    pruner = compat.make_pruner(model, [1, 3, 16, 16])
    removed = removed_filters(compat.prune_vars(pruner, {"a.w": 0.5}), "a.w")
    assert model.a.weight.shape == model.b.weight.shape == [2, 3, 3, 3]
    assert model.h.weight.shape == [3, 2, 1, 1]
    mask_filters(ref, "a.w", removed)
    mask_filters(ref, "b.w", removed)
    np.testing.assert_allclose(model(x).numpy(), ref(x).numpy(), atol=ATOL, rtol=0)


# --- shim 4: lazy apply with two masks on one parameter ------------------------------------

def test_lazy_masks_merged_on_concat_consumer(monkeypatch):
    ratios = {"a.w": 0.5, "b.w": 0.5}
    model, pruned = build(ConcatNet), build(ConcatNet)
    x = x_input()
    before = shapes(model)
    compat.prune_vars(compat.make_pruner(pruned, [1, 3, 16, 16]), ratios)
    compat.prune_vars(compat.make_pruner(model, [1, 3, 16, 16]), ratios, apply="lazy")
    assert shapes(model) == before
    np.testing.assert_allclose(model(x).numpy(), pruned(x).numpy(), atol=ATOL, rtol=0)
    # the fuse conv got one mask per concat input; upstream merges them into a list
    from paddleslim.dygraph.prune.pruning_plan import PruningPlan

    monkeypatch.setattr(PruningPlan, "add", PruningPlan.add.__wrapped__)
    with pytest.raises(AttributeError, match="reshape"):
        compat.prune_vars(compat.make_pruner(build(ConcatNet), [1, 3, 16, 16]), ratios,
                          apply="lazy")


# --- shim 5 and restore --------------------------------------------------------------------

def test_sensitive_without_file_restores_model():
    model = build(ConcatNet)
    x = x_input()
    before, y0 = shapes(model), model(x).numpy()
    pruner = compat.make_pruner(model, [1, 3, 16, 16])
    sens = pruner.sensitive(eval_func=lambda: float(model(x).abs().mean()),
                            target_vars=["a.w"])
    assert sorted(sens) == ["a.w"] and len(sens["a.w"]) == 9
    assert shapes(model) == before
    np.testing.assert_array_equal(model(x).numpy(), y0)


def test_restore_gives_back_shapes_and_outputs():
    model = build(ConcatNet)
    x = x_input()
    before, y0 = shapes(model), model(x).numpy()
    pruner = compat.make_pruner(model, [1, 3, 16, 16])
    compat.prune_vars(pruner, {"stem.w": 0.5, "a.w": 0.5, "b.w": 0.5, "fuse.w": 0.5})
    assert shapes(model) != before
    pruner.restore()
    assert shapes(model) == before
    np.testing.assert_array_equal(model(x).numpy(), y0)
    # prune_var does not set pruner.plan: pruner.restore() does nothing, compat.restore works
    pruner.plan = None
    pruner.prune_var("a.w", 0, 0.5)
    pruner.restore()
    assert shapes(model) != before
    compat.restore(pruner)
    assert shapes(model) == before
    np.testing.assert_array_equal(model(x).numpy(), y0)


# --- helpers -------------------------------------------------------------------------------

class FlopsNet(nn.Layer):
    def __init__(self):
        super().__init__()
        self.c1, self.bn1 = conv(3, 4, 3, "f1"), bn(4, "f1_bn")
        self.c2 = conv(4, 2, 1, "f2", bias=True)

    def forward(self, x):
        return self.c2(F.relu(self.bn1(self.c1(x))))


def test_dygraph_flops_matches_hand_count():
    model = build(FlopsNet)
    hw = 8 * 8
    # paddleslim: conv = H_out*W_out*C_out*(k*k*C_in) multiply-adds (its bias is a separate
    # elementwise_add, not counted); batch_norm 2 per element; relu 1 per element
    conv1, conv2 = hw * 4 * (3 * 3 * 3), hw * 2 * 4
    bn1, relu1 = 2 * hw * 4, hw * 4
    assert compat.dygraph_flops(model, [1, 3, 8, 8]) == conv1 + conv2 + bn1 + relu1 == 8192
    assert compat.dygraph_flops(model, [1, 3, 8, 8], only_conv=True) == conv1 + conv2
    # per image whatever batch is given (paddleslim alone would scale bn/relu by it)
    assert compat.dygraph_flops(model, [4, 3, 8, 8]) == 8192
    assert compat.dygraph_flops(model, [3, 8, 8]) == 8192
    assert slim.analysis.dygraph_flops(model, [4, 3, 8, 8]) == conv1 + conv2 + 4 * (bn1 + relu1)
    # the count follows the current (pruned) shapes: half of c1's filters
    pruner = compat.make_pruner(model, [1, 3, 8, 8])
    compat.prune_vars(pruner, {"f1.w": 0.5})
    assert compat.dygraph_flops(model, [1, 3, 8, 8]) == 8192 // 2


@pytest.mark.parametrize("criterion,cls", [
    ("l1_norm", "L1NormFilterPruner"), ("l2_norm", "L2NormFilterPruner"),
    ("fpgm", "FPGMFilterPruner"), ("geometry_median", "FPGMFilterPruner")])
def test_make_pruner_criteria(criterion, cls):
    model = build(ConcatNet)
    pruner = compat.make_pruner(model, [1, 3, 16, 16], criterion=criterion)
    assert type(pruner).__name__ == cls
    compat.prune_vars(pruner, {"a.w": 0.5})
    assert model.a.weight.shape == [3, 8, 3, 3] and model.fuse.weight.shape == [8, 7, 3, 3]


def test_make_pruner_rejects_bn_scale_and_prune_vars_rejects_unknown_names():
    model = build(ConcatNet)
    with pytest.raises(ValueError, match="bn_scale"):
        compat.make_pruner(model, [1, 3, 16, 16], criterion="bn_scale")
    pruner = compat.make_pruner(model, [1, 3, 16, 16])
    with pytest.raises(KeyError, match="nope.w"):
        compat.prune_vars(pruner, {"a.w": 0.5, "nope.w": 0.5})
    assert model.a.weight.shape == [6, 8, 3, 3]  # nothing pruned when any name is refused
