"""Filter pruning on the tiny YOLOv3: shapes AND outputs, through concat routes."""
import os

import numpy as np
import paddle
import pytest
from helpers import head_outputs, random_bn_model

from ppdet.slim.prune.params import format_params, parse_ratios, select_params
from ppdet.slim.prune.pruner import FilterPruner
from ppdet.utils.cli import UserError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CFG = os.path.join(ROOT, "configs/shapes/yolov3_mobilenet_v1_shapes.yml")


def _model(seed=0):
    return random_bn_model(CFG, seed)


_outputs = head_outputs


@pytest.fixture(scope="module")
def pruned_case():
    return _model(), paddle.to_tensor(np.random.RandomState(1).randn(2, 3, 96, 96)
                                      .astype("float32"))


def _removed_rows(before, after):
    """Indices of ``before``'s filters missing from ``after`` (filters are unique rows)."""
    b = before.reshape(before.shape[0], -1)
    a = after.reshape(after.shape[0], -1)
    kept = [int(np.argmin(np.abs(b - row).sum(1))) for row in a]
    return sorted(set(range(len(b))) - set(kept))


# the neck: transitions feeding routes, tips, and backbone convs feeding a concat
@pytest.mark.parametrize("name, consumer", [
    ("yolo_transition.0.conv.weights", "yolo_block.1.0.0.conv.weights"),
    ("yolo_block.1.tip.conv.weights", None),
    ("yolo_block.0.2.conv.weights", "yolo_block.0.tip.conv.weights"),
    ("conv5_5_sep_weights", "yolo_block.1.0.0.conv.weights"),
    ("conv4_1_sep_weights", "yolo_block.2.0.0.conv.weights"),
])
def test_pruning_changes_every_dependent_shape_and_equals_masking(pruned_case, name, consumer):
    model, x = pruned_case
    before = {p.name: p.numpy().copy() for p in model.parameters()}
    ref = _outputs(model, x)
    pruner = FilterPruner(model)
    kept = pruner.prune({name: 0.5})[name]
    after = {p.name: p.numpy() for p in model.parameters()}
    n = before[name].shape[0]
    assert kept == n - int(round(n * 0.5))
    assert after[name].shape[0] == kept
    bn = name.replace(".conv.weights", ".bn.scale").replace("_weights", "_bn_scale")
    assert after[bn].shape == (kept,)
    if consumer:
        assert after[consumer].shape[1] == before[consumer].shape[1] - (n - kept)
    pruned_out = _outputs(model, x)
    assert any(not np.allclose(a, b, atol=1e-3) for a, b in zip(ref, pruned_out))

    # the same model with the removed channels masked (BN scale/offset zeroed for every
    # conv that lost filters, depthwise followers included) computes the same outputs
    pruner.restore()
    assert {p.name: p.shape for p in model.parameters()} == \
        {k: list(v.shape) for k, v in before.items()}
    np.testing.assert_allclose(_outputs(model, x)[0], ref[0], rtol=1e-5, atol=1e-4)
    by_name = {p.name: p for p in model.parameters()}
    changed = [k for k in before if k.endswith("weights") and before[k].ndim == 4
               and after[k].shape[0] != before[k].shape[0]]
    assert name in changed
    for conv in changed:
        gone = _removed_rows(before[conv], after[conv])
        for suffix in ("scale", "offset"):
            p = by_name[conv.replace(".conv.weights", f".bn.{suffix}")
                        .replace("_weights", f"_bn_{suffix}")]
            v = p.numpy()
            v[gone] = 0
            p.set_value(v)
    masked = _outputs(model, x)
    for key, value in before.items():          # put the model back for the next case
        by_name[key].set_value(value)
    for m, p in zip(masked, pruned_out):
        np.testing.assert_allclose(p, m, rtol=1e-4, atol=1e-3 * max(1, np.abs(m).max()))


def test_prune_several_at_once_through_one_concat():
    model = _model(3)
    pruner = FilterPruner(model, criterion="bn_scale")
    names = ["yolo_transition.1.conv.weights", "conv4_1_sep_weights"]
    before = {p.name: list(p.shape) for p in model.parameters()}
    pruner.prune({names[0]: 0.25, names[1]: 0.5})
    shapes = {p.name: list(p.shape) for p in model.parameters()}
    lost = sum(before[n][0] - shapes[n][0] for n in names)
    c = "yolo_block.2.0.0.conv.weights"
    assert shapes[c][1] == before[c][1] - lost
    assert shapes["conv5_1_dw_weights"][0] == shapes["conv4_2_sep_weights"][0]


def test_bn_scale_criterion_removes_smallest_gammas():
    model = _model(4)
    scale = {p.name: p for p in model.parameters()}["yolo_block.0.0.0.bn.scale"]
    gammas = scale.numpy().copy()
    FilterPruner(model, criterion="bn_scale").prune({"yolo_block.0.0.0.conv.weights": 0.25})
    kept = np.sort(scale.numpy())
    np.testing.assert_allclose(kept, np.sort(gammas)[len(gammas) - len(kept):])


def test_selection_by_names_globs_and_regex():
    model = _model()
    assert select_params(model, "yolo_block.0.tip.conv.weights, conv6_sep_weights") == \
        ["conv6_sep_weights", "yolo_block.0.tip.conv.weights"]   # network order
    assert len(select_params(model, "yolo_block.*.tip.conv.weights")) == 3
    assert select_params(model, r"conv5_[1-3]_sep_weights|conv6_sep_weights") == \
        ["conv5_1_sep_weights", "conv5_2_sep_weights", "conv5_3_sep_weights",
         "conv6_sep_weights"]


@pytest.mark.parametrize("spec, message", [
    ("yolo_block.0.0.0.conv.weight", "did you mean yolo_block.0.0.0.conv.weights"),
    ("conv9_[1-9]_sep_weights|conv10_sep", "matches no conv"),
    ("conv5_2_dw_weights", "depthwise.*conv5_1_sep_weights instead"),
    ("yolo_output.0.conv.weights", "prediction conv"),
    ("conv1_bn_scale", "not a conv weight"),
])
def test_bad_names_are_one_line_errors(spec, message):
    with pytest.raises(UserError, match=message) as e:
        select_params(_model(), spec)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("text", ["0 0.5", "0.5 1.0", "1.2", "x"])
def test_ratios_outside_open_interval_are_refused(text):
    with pytest.raises(UserError):
        parse_ratios(text)


def test_print_params_lists_every_parameter_in_order_with_prunability():
    model = _model()
    text = format_params(model).splitlines()
    assert text[0].startswith("conv1_weights") and "prunable" in text[0]
    assert len(text) == len(model.parameters()) + 1
    dw = next(line for line in text if line.startswith("conv2_1_dw_weights"))
    assert "not prunable: depthwise" in dw and "conv1_weights" in dw
