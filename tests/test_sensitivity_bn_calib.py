"""--bn_calib: BN statistics re-estimated on training batches before each measurement."""
import os
import subprocess
import sys

import numpy as np
import pytest

from ppdet.core.config import load_config
from ppdet.core.errors import UserError
from ppdet.engine.builder import build_dataset, build_metric_for, build_model
from ppdet.engine.checkpoint import load_weights
from ppdet.slim.prune.masks import masked, masks
from ppdet.slim.prune.pruner import FilterPruner
from ppdet.slim.sensitivity import bn_calib
from ppdet.slim.sensitivity.analysis import CachedEvaluator
from ppdet.slim.sensitivity.cache import EvalCache
from ppdet.slim.sensitivity.store import META_SUFFIX, SensitivityStore

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CFG = os.path.join(ROOT, "configs/shapes/yolov3_mobilenet_v1_shapes.yml")
CONV = "yolo_transition.0.conv.weights"


@pytest.fixture(scope="module")
def setup(trained):
    cfg = load_config(CFG)
    model = build_model(cfg)
    load_weights(model, trained)
    calib = bn_calib.CalibSet(build_dataset(cfg, "train"),
                              cfg["EvalReader"]["sample_transforms"], 2, 8, progress=False)
    cache = EvalCache(build_dataset(cfg, "eval"), cfg["EvalReader"]["sample_transforms"],
                      max_samples=24, progress=False)
    return cfg, model, calib, cache


def _state(model):
    return {k: v.numpy().copy() for k, v in model.state_dict().items()}


def test_recalibration_changes_bn_statistics_only_and_restores_them(setup):
    cfg, model, calib, _ = setup
    pruner = FilterPruner(model)
    before = _state(model)
    with masked(pruner.graph, masks(pruner.graph, pruner.plan({CONV: 0.5}))):
        stats = bn_calib.calibrated_stats(model, calib)
    after = _state(model)
    assert before.keys() == after.keys()
    assert all(np.array_equal(before[k], after[k]) for k in before)   # nothing left changed
    layers = bn_calib.bn_layers(model)
    assert len(stats) == len(layers)
    changed = set()
    with bn_calib.using_stats(model, stats):
        inside = _state(model)
        for k in before:
            if not np.array_equal(before[k], inside[k]):
                changed.add(k)
    stat_names = {f"{p}._mean" for p, _ in layers} | {f"{p}._variance" for p, _ in layers}
    assert changed and changed <= stat_names                  # BN statistics only
    assert any(k.endswith("_variance") for k in changed) and any(
        k.endswith("_mean") for k in changed)
    assert all(np.array_equal(before[k], v) for k, v in _state(model).items())   # restored


def test_fast_mode_sees_the_recalibrated_statistics(setup):
    """The masked predictor fed the affine correction scores what the really pruned,
    recalibrated dygraph model scores."""
    from ppdet.slim.sensitivity.analysis import MaskedMeasure, RealPruneMeasure
    from ppdet.slim.sensitivity.fast_eval import MaskedEvaluator
    cfg, model, calib, cache = setup
    pruner = FilterPruner(model)
    metric = build_metric_for(cfg, cache.dataset)
    fast = MaskedMeasure(MaskedEvaluator(model, cache, metric, pruner, 8, calib=calib))
    plain = MaskedMeasure(MaskedEvaluator(model, cache, metric, pruner, 8))
    real = RealPruneMeasure(pruner, CachedEvaluator(model, cache, metric, 8), calib=calib)
    got_fast, kept_fast = fast(CONV, 0.7)
    got_real, kept_real = real(CONV, 0.7)
    assert kept_fast == kept_real
    assert got_fast == pytest.approx(got_real, abs=2e-3)
    assert got_fast != plain(CONV, 0.7)[0]                 # recalibration changed the score
    # recalibration moves every BN, so nothing before a cut stays put: the whole program only
    assert [p.name for p in fast.evaluator.programs] == ["model"]
    assert len(plain.evaluator.programs) > 1
    assert fast.baseline() == pytest.approx(real.baseline(), abs=2e-3)


def test_files_with_and_without_bn_calib_never_mix(tmp_path):
    fp = {"weights": "w", "bn_calib": "none"}
    calib = {"weights": "w", "bn_calib": {"batches": 2, "batch_size": 8, "train set": "ab"}}
    plain = str(tmp_path / "plain.data")
    SensitivityStore(plain, fp).set_baseline(0.5)
    with pytest.raises(UserError, match="bn_calib"):
        SensitivityStore(plain, calib)
    other = str(tmp_path / "calib.data")
    SensitivityStore(other, calib).set_baseline(0.5)
    with pytest.raises(UserError, match="bn_calib"):
        SensitivityStore(other, fp)
    with pytest.raises(UserError, match="bn_calib"):       # another batch count
        SensitivityStore(other, {**calib, "bn_calib": {**calib["bn_calib"], "batches": 4}})
    # a sidecar written before the setting existed reads as "none"
    import json
    old = str(tmp_path / "old.data")
    with open(old + META_SUFFIX, "w") as f:
        json.dump({"format": "ppdet-sensitivity/1", "fingerprint": {"weights": "w"},
                   "baseline": 0.5}, f)
    assert SensitivityStore(old, fp).baseline == 0.5
    with pytest.raises(UserError, match="bn_calib"):
        SensitivityStore(old, calib)


def test_cli_refuses_to_add_calibrated_numbers_to_a_plain_file(tmp_path, trained):
    out = str(tmp_path / "s.data")
    common = [sys.executable, "sensitive.py", "-c",
              "../../configs/shapes/yolov3_mobilenet_v1_shapes.yml", "-o",
              f"weights={trained}", "--pruned_params", CONV, "--pruned_ratios", "0.5",
              "--sensitivities_file", out, "--eval_samples", "16", "--batch_size", "8"]
    cwd = os.path.join(ROOT, "slim", "sensitive")
    r = subprocess.run(common + ["--bn_calib", "2"], cwd=cwd, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "BN recalibrated on 2 x 8" in r.stdout
    r = subprocess.run(common, cwd=cwd, capture_output=True, text=True)
    assert r.returncode == 2 and "bn_calib" in r.stderr and "Traceback" not in r.stderr
    r = subprocess.run(common + ["--bn_calib", "-1"], cwd=cwd, capture_output=True, text=True)
    assert r.returncode == 2 and "--bn_calib" in r.stderr
