"""--stop_loss: fewer measurements, same ratios below L, skipped pairs only in the sidecar."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from ppdet.slim.sensitivity.analysis import run_sensitivity
from ppdet.slim.sensitivity.store import META_SUFFIX, SensitivityStore, load_sensitivities_file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CFG = os.path.join(ROOT, "configs/shapes/yolov3_mobilenet_v1_shapes.yml")
RATIOS = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]
FP = {"weights": "w", "bn_calib": "none"}
L = 0.12


class Crash(Exception):
    pass


class FakeMeasure:
    """Loss curves with noise: rising, flat then steep, and one that dips back under L
    after passing it (where only a first-crossing reading agrees with a stopped file)."""

    def __init__(self, names, crash_after=None):
        rng = np.random.RandomState(0)
        self.curves = {}
        for k, n in enumerate(names):
            base = np.array(RATIOS) ** (1 + k % 3) * (0.3 + 0.2 * (k % 4))
            curve = base + rng.uniform(-0.02, 0.02, len(RATIOS))
            if k % 5 == 1:
                curve[4], curve[5] = L + 0.05, L - 0.08          # passes L, then dips
            self.curves[n] = dict(zip(RATIOS, curve))
        self.calls, self.crash_after = [], crash_after

    def baseline(self):
        return 0.8

    def __call__(self, name, ratio):
        if self.crash_after is not None and len(self.calls) >= self.crash_after:
            raise Crash
        self.calls.append((name, ratio))
        return 0.8 * (1 - self.curves[name][ratio]), 1


@pytest.fixture(scope="module")
def costs():
    from ppdet.core.config import load_config
    from ppdet.engine.builder import build_model
    from ppdet.slim.prune.costs import Costs
    from ppdet.slim.prune.graph import PruneGraph
    graph = PruneGraph.of(build_model(load_config(CFG)))
    return Costs(graph, [160, 160]), [g.name for g in graph.prunable]


def _run(path, names, stop_loss=None, measure=None, ratios=RATIOS):
    measure = measure or FakeMeasure(names)
    store = SensitivityStore(path, FP)
    run_sensitivity(measure, store, names, ratios, progress=False, log=lambda *_: None,
                    stop_loss=stop_loss)
    return measure, store


def test_stopped_file_gives_the_full_grids_ratios_below_the_stop(tmp_path, costs):
    from ppdet.slim.prune.search import SearchError, loss_for_flops, ratios_by_loss
    costs, names = costs
    full_m, _ = _run(str(tmp_path / "full.data"), names)
    stop_m, store = _run(str(tmp_path / "stop.data"), names, stop_loss=L,
                         ratios=list(reversed(RATIOS)))       # any order given: ascending
    full = load_sensitivities_file(str(tmp_path / "full.data"))
    stopped = load_sensitivities_file(str(tmp_path / "stop.data"))
    assert len(stop_m.calls) < len(full_m.calls) == len(names) * len(RATIOS)
    meta = json.load(open(str(tmp_path / "stop.data") + META_SUFFIX))
    skipped = {(n, float(r)) for n, d in meta["skipped"].items() for r in d}
    measured = {(n, r) for n, d in stopped.items() for r in d}
    assert not skipped & measured                               # never invented in the pickle
    assert skipped | measured == {(n, r) for n in names for r in RATIOS}
    for n, d in stopped.items():        # each conv measured up to its first loss over L
        assert all(d[r] == pytest.approx(full[n][r]) for r in d)
        over = [r for r in sorted(d) if d[r] > L]
        assert over == [] or over == [max(d)]
    for t in np.linspace(-0.01, L - 1e-4, 23):
        assert ratios_by_loss(stopped, t) == ratios_by_loss(full, t), t
    hits = 0
    for target in (0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4):
        try:
            a = loss_for_flops(costs, full, target)
        except SearchError:
            continue
        b = loss_for_flops(costs, stopped, target)
        if a[0] < L:
            hits += 1
            assert a[1] == b[1] and a[0] == b[0]
            assert a[2] >= target
    assert hits >= 2                    # the property was exercised


def test_resume_after_a_kill_while_stopped(tmp_path, costs):
    _, names = costs
    names = names[:4]
    path = str(tmp_path / "s.data")
    ref_m, _ = _run(str(tmp_path / "ref.data"), names, stop_loss=L)
    # killed after the first conv stopped: its skips are on disk, the rest is not measured
    first = sum(1 for n, _ in ref_m.calls if n == names[0])
    crash = FakeMeasure(names, crash_after=first + 2)
    with pytest.raises(Crash):
        _run(path, names, stop_loss=L, measure=crash)
    assert crash.calls == ref_m.calls[:first + 2]
    assert json.load(open(path + META_SUFFIX))["skipped"][names[0]]
    again, store = _run(path, names, stop_loss=L)
    assert again.calls == ref_m.calls[first + 2:]             # nothing measured twice
    assert load_sensitivities_file(path) == load_sensitivities_file(str(tmp_path / "ref.data"))
    ref_meta = json.load(open(str(tmp_path / "ref.data") + META_SUFFIX))
    assert json.load(open(path + META_SUFFIX))["skipped"] == ref_meta["skipped"]
    # a later run without --stop_loss measures the skipped pairs and takes them off the list
    full_m, store = _run(path, names[:1])
    assert {(n, r) for n, r in full_m.calls} == {(names[0], float(r))
                                                 for r in ref_meta["skipped"][names[0]]}
    assert names[0] not in (json.load(open(path + META_SUFFIX)).get("skipped") or {})


def test_bad_stop_loss_is_one_line_exit_2():
    r = subprocess.run([sys.executable, "sensitive.py", "-c", "x.yml", "--stop_loss", "0"],
                       cwd=os.path.join(ROOT, "slim", "sensitive"), capture_output=True,
                       text=True)
    assert r.returncode == 2 and "--stop_loss" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_merge_keeps_skipped_pairs_that_no_input_measured(tmp_path):
    from ppdet.slim.sensitivity.store import merge_with_sidecars
    a, b, out = (str(tmp_path / f) for f in ("a.data", "b.data", "m.data"))
    for path, ratios in ((a, [0.1, 0.3]), (b, [0.2, 0.4])):
        store = SensitivityStore(path, FP)
        store.set_baseline(0.8)
        for r in ratios:
            store.add("c", r, r)
    SensitivityStore(a, FP).skip("c", 0.4, 0.25)      # measured in b: not skipped any more
    SensitivityStore(a, FP).skip("c", 0.5, 0.25)
    merged = merge_with_sidecars([a, b], out)
    assert set(merged["c"]) == {0.1, 0.2, 0.3, 0.4}
    assert json.load(open(out + META_SUFFIX))["skipped"] == {"c": {"0.5": 0.25}}
