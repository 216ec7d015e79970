"""ppdet/slim/latency.py: the latency table (resume, exact on its points, refusals) and the
latency targets of slim/prune/prune.py. Timings are compared only within one run."""
import json
import os

import numpy as np
import pytest

from ppdet.core.config import load_config
from ppdet.engine.builder import build_model
from ppdet.slim import latency as L
from ppdet.slim.prune.graph import PruneGraph

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CFG = os.path.join(ROOT, "configs/shapes/yolov3_mobilenet_v1_shapes.yml")
SIZE = [64, 64]                     # small and quick: the table is keyed by it
GROUPS = ("yolo_head.blocks.2.convs.0.conv", "yolo_head.blocks.2.convs.1.conv")


@pytest.fixture(scope="module")
def setup():
    cfg = load_config(CFG)
    model = build_model(cfg)
    return cfg, PruneGraph.of(model)


def _build(setup, path, **kw):
    cfg, graph = setup
    return L.build_table(graph, cfg, str(path), SIZE, step=16, groups=GROUPS, repeats=5,
                         progress=False, log=lambda *a: None, quiet=False, **kw)


class _Killed(Exception):
    pass


def test_table_resumes_after_a_kill_and_is_exact_on_its_points(setup, tmp_path):
    path = tmp_path / "latency.json"
    _, graph = setup
    total = len(L.work_items(graph, 16, groups=GROUPS)[1])

    def kill(n):
        if n == 2:
            raise _Killed
    with pytest.raises(_Killed):
        _build(setup, path, on_entry=kill)
    data = json.loads(path.read_text())          # a loadable file with what was measured
    assert len(data["base"]) + sum(len(e) for e in data["entries"].values()) == 2
    assert data["full_ms"] is None and data["calib"] is None
    assert sorted(data["passes"].values()) == [1, 1]
    first = L.LatencyTable.load(str(path))
    seen = []
    table = _build(setup, path, on_entry=seen.append)
    # only the missing timings were taken: pass 1 of the rest, then pass 2 of everything
    assert len(seen) == 2 * total - 2
    assert set(table.passes.values()) == {2} and len(table.passes) == total
    # each value is the fastest of its passes: never above the first pass's
    for u, ms in first.base.items():
        assert table.base[u] <= ms
    for g, e in first.entries.items():
        for k, pieces in e.items():
            assert all(table.entries[g][k][u] <= ms for u, ms in pieces.items())
    assert table.complete and table.full_ms > 0 and table.scale > 0
    # whole model: unpruned first, then uniform plans at table counts, all measured
    assert table.calib[0]["plan"] == {} and table.calib[0]["ms"] == table.full_ms
    assert all(min(c["rounds"]) == pytest.approx(c["ms"], abs=1e-4) for c in table.calib)
    assert [c["plan"] for c in table.calib[1:]] == L.calibration_plans(table)
    for c in table.calib[1:]:
        assert all(table.has(g, k) for g, k in c["plan"].items()) and c["ms"] > 0
    again = []
    _build(setup, path, on_entry=again.append)
    assert again == []                           # complete: nothing measured again
    # exact on its own points: the unpruned model and every measured count
    assert table.predict({}) == pytest.approx(table.full_ms, rel=1e-12)
    for key in GROUPS:
        size = graph.group(key).size
        for k, pieces in table.entries[key].items():
            got = table.predict({key: k}) - table.predict({})
            measured = sum(pieces.values()) - sum(table.base[u] for u in pieces)
            assert got == pytest.approx(table.scale * measured, abs=1e-9)
            assert got == pytest.approx(table.scale * (table.group_ms(key, k)
                                                       - table.group_ms(key, size)))
            assert table.predict({key: np.arange(k)}) == table.predict({key: k})
    # between points: linear interpolation
    k0, k1 = table.counts(GROUPS[1])[:2]
    mid = table.group_ms(GROUPS[1], (k0 + k1) // 2)
    lo, hi = sorted((table.group_ms(GROUPS[1], k0), table.group_ms(GROUPS[1], k1)))
    assert lo <= mid <= hi


def test_scale_is_the_median_slope_through_the_unpruned_model(setup):
    """Synthetic table (no timing): whole-model measurements that follow
    ``fixed + scale * raw`` exactly give back that scale; with noise it stays between the
    slopes, and one calibration plan far off the line does not move it."""
    _, graph = setup
    a, b = (graph.group(k) for k in GROUPS)
    key = L.target_key(graph, SIZE)
    base = {a.key: 4.0, b.key: 6.0}
    entries = {g.key: {k: {g.key: base[g.key] * k / g.size} for k in (8, 16)} for g in (a, b)}
    plans = [{a.key: 8, b.key: 16}, {a.key: 16, b.key: 8}, {a.key: 8}]
    table = L.LatencyTable(key, entries, 12.0, {a.key: a.size, b.key: b.size}, None, base)
    assert table.scale == 1.0 and table.predict({}) == 12.0      # no calibration: as timed
    raw = [table._raw(p) for p in plans]
    s0 = table._raw({})
    table = L.LatencyTable(key, entries, 12.0, {a.key: a.size, b.key: b.size}, None, base,
                           [{"plan": {}, "ms": 12.0}] +
                           [{"plan": p, "ms": 12.0 + 0.6 * (r - s0)} for p, r in zip(plans, raw)])
    assert table.scale == pytest.approx(0.6) and table.fixed_ms == pytest.approx(12 - 0.6 * s0)
    for p in plans:
        assert table.predict(p) == pytest.approx(12.0 + 0.6 * (table._raw(p) - s0))
    noisy = [{"plan": {}, "ms": 12.0}] + [
        {"plan": p, "ms": 12.0 + 0.6 * (r - s0) * f} for p, r, f in zip(plans, raw,
                                                                        (0.9, 1.1, 1.0))]
    table = L.LatencyTable(key, entries, 12.0, {a.key: a.size, b.key: b.size}, None, base,
                           noisy)
    assert 0.5 < table.scale < 0.7 and table.predict({}) == pytest.approx(12.0)
    # the last plan measured no faster than unpruned (a slow-kernel cliff): least squares
    # would fall to about a third of 0.6; the median keeps the other two plans' slope
    cliff = [{"plan": {}, "ms": 12.0}] + [
        {"plan": p, "ms": 12.0 + 0.6 * (r - s0)} for p, r in zip(plans[:2], raw[:2])] + [
        {"plan": plans[2], "ms": 12.0}]
    table = L.LatencyTable(key, entries, 12.0, {a.key: a.size, b.key: b.size}, None, base,
                           cliff)
    assert table.scale == pytest.approx(0.6)


def test_quiet_gate_waits_for_a_quiet_moment_then_follows_a_host_that_stays_slow():
    """The gate waits while the reference runs slow; when most recent checks gave up, the
    machine's slower pace becomes the reference (no wait before every timing for the rest
    of a build); a fast run later makes it strict again. A scripted sampler: no timing."""
    samples = [1.0] * 10                        # the gate's first idea of the fastest
    gate = L.QuietGate(sampler=lambda: samples.pop(0), max_wait_s=0.05)
    samples += [1.05]                           # within 15% of 1.0: no wait
    gate.wait()
    samples += [1.6, 1.0]                       # busy: it waits for the quiet 1.0
    gate.wait()
    assert (gate.checks, gate.gave_up, gate.rebased) == (2, 0, 0)
    samples += [2.0] * 6                        # the host stays at 2.0: two samples a
    for _ in range(3):                          # check, then it gives up; after three ...
        gate.wait()
    assert (gate.gave_up, gate.rebased, gate.best) == (3, 1, 2.0)
    samples += [2.0]                            # ... 2.0 is the reference: no wait
    gate.wait()
    samples += [1.0, 1.9, 1.0]                  # a fast run: 1.0 is the reference again,
    gate.wait()                                 # and 1.9 is busy again
    gate.wait()
    assert (gate.best, gate.gave_up, gate.checks, samples) == (1.0, 3, 8, [])
    assert "reset 1 times" in gate.summary()


def test_table_of_another_target_is_refused_in_one_line(setup, tmp_path):
    path = tmp_path / "latency.json"
    cfg, graph = setup
    key = L.target_key(graph, SIZE, 1, True, "x.yml")
    table = L.LatencyTable(key, {GROUPS[0]: {8: {"c": 1.0}}}, 2.0, {GROUPS[0]: 32},
                           str(path), {"c": 1.5})
    table.save()
    for other, word in ((L.target_key(graph, [96, 96], 1, True), "input_size"),
                        (L.target_key(graph, SIZE, 2, True), "threads"),
                        ({**key, "device": "gpu: H200"}, "device"),
                        ({**key, "structure": "0123"}, "config")):
        with pytest.raises(L.LatencyTableError) as e:
            L.LatencyTable.load(str(path), other)
        msg = str(e.value)
        assert "\n" not in msg and word in msg and "latency_table.py" in msg
    with pytest.raises(L.LatencyTableError) as e:      # building on it for another size
        L.build_table(graph, cfg, str(path), [96, 96], groups=GROUPS, progress=False,
                      log=lambda *a: None)
    assert "input_size" in str(e.value)
    data = json.loads(path.read_text())           # a table of the previous format
    path.write_text(json.dumps(dict(data, format="ppdet-latency/1")))
    with pytest.raises(L.LatencyTableError) as e:
        L.LatencyTable.load(str(path), key)
    msg = str(e.value)
    assert "\n" not in msg and "older format" in msg and "latency_table.py" in msg
    path.write_text("not json")
    with pytest.raises(L.LatencyTableError):
        L.LatencyTable.load(str(path), key)


def test_missing_table_names_how_to_build_it(setup, tmp_path):
    from ppdet.core.errors import UserError
    from ppdet.slim.latency.table import load_latency_table
    cfg, graph = setup
    cfg = dict(cfg, weights=str(tmp_path / "model_final"))
    assert load_latency_table(cfg, graph) is None
    with pytest.raises(UserError) as e:
        load_latency_table(cfg, graph, required=True)
    assert "latency_table.py" in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("argv, words", [
    (["--pruned_params", "*", "--target_latency", "3", "--target_speedup", "2"],
     "exclude each other"),
    (["--pruned_params", "*", "--target_speedup", "0.5"], "--target_speedup"),
    (["--target_latency", "3"], "--sensitivities_file or --pruned_params"),
    (["--pruned_params", "*", "--target_latency", "3", "--latency_table", "/nowhere.json"],
     "latency_table.py"),
])
def test_latency_options_are_checked_first(argv, words, capsys):
    import importlib.util
    spec = importlib.util.spec_from_file_location(
        "prune_script", os.path.join(ROOT, "slim/prune/prune.py"))
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    with pytest.raises(SystemExit) as e:
        script.main(["-c", CFG, *argv])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and "\n" not in err and words in err, err


def test_latency_search_with_sensitivities_prunes_the_cheap_loss_first(setup):
    """On a synthetic table (no timing): the search meets the budget on the table's counts
    and takes its channels from the group whose loss is low."""
    from ppdet.slim.latency import search as latency_search
    from ppdet.slim.prune import search as flops_search
    _, graph = setup
    a, b = (graph.group(k) for k in GROUPS)
    key = L.target_key(graph, SIZE)
    entries, base = {}, {}
    for g in (a, b):
        base[g.key] = float(g.size)                     # 1 ms per channel, one conv each
        entries[g.key] = {k: {g.key: float(k)} for k in range(8, g.size, 8)}
    table = L.LatencyTable(key, entries, 10.0 + a.size + b.size,
                           {a.key: a.size, b.key: b.size}, None, base)
    sens = {a.name: {0.25: 0.001, 0.5: 0.002, 0.75: 0.004},     # a: cheap to prune
            b.name: {0.25: 0.05, 0.5: 0.2, 0.75: 0.5}}
    target = table.predict({}) - 0.5 * a.size
    for rule in ("threshold", "sum"):
        ratios, ms, lost = latency_search.ratios_for_latency(table, graph, sens, target, rule=rule)
        assert ms <= target and lost < 0.01 and b.name not in ratios, rule
        with pytest.raises(flops_search.SearchError, match="reaches"):
            latency_search.ratios_for_latency(table, graph, sens, 10.0, rule=rule)
    kept = round(a.size * (1 - ratios[a.name]))
    assert kept in table.counts(a.key)                      # "sum" picks the table's counts


def test_latency_threshold_rule_is_the_flops_rule_at_the_least_loss_that_fits(setup):
    """``rule="threshold"`` prunes as --target_flops does (every conv to one loss
    threshold), at the smallest threshold whose plan the table puts within the budget."""
    from ppdet.slim.latency import search as latency_search
    from ppdet.slim.prune import search as flops_search
    _, graph = setup
    a, b = (graph.group(k) for k in GROUPS)
    key = L.target_key(graph, SIZE)
    entries = {g.key: {k: {g.key: float(k)} for k in range(8, g.size, 8)} for g in (a, b)}
    table = L.LatencyTable(key, entries, 10.0 + a.size + b.size,
                           {a.key: a.size, b.key: b.size}, None,
                           {g.key: float(g.size) for g in (a, b)})
    sens = {a.name: {0.25: 0.01, 0.5: 0.04, 0.75: 0.2},
            b.name: {0.25: 0.02, 0.5: 0.05, 0.75: 0.1}}
    target = table.predict({}) - 0.4 * (a.size + b.size)
    ratios, ms, lost = latency_search.ratios_for_latency(table, graph, sens, target,
                                                 rule="threshold")
    assert target - 2.0 <= ms <= target         # the least pruning that fits (whole channels)
    level = {n: latency_search._loss_at(sens[n], r) for n, r in ratios.items()}
    assert len(ratios) == 2 and max(level.values()) - min(level.values()) < 1e-4
    same = flops_search.ratios_by_loss(sens, level[a.name])          # ratios are kept to 1e-4
    assert all(abs(same[n] - r) <= 2e-4 for n, r in ratios.items())
    assert lost == pytest.approx(sum(level.values()))
    with pytest.raises(ValueError, match="rule"):
        latency_search.ratios_for_latency(table, graph, sens, target, rule="best")


def test_solve_measured_matches_a_noisy_measurement_in_few_calls():
    """The FLOPs target whose model measures as fast as another: a wrong slope guess, noise
    that breaks monotonicity near the root, and a plateau (counts move in steps)."""
    from ppdet.slim.latency import search as latency_search
    rng = np.random.RandomState(0)
    calls = []

    def gap(x):                                    # latency gap, falls as x grows
        calls.append(x)
        return (1 - 0.8 * x) / (1 - 0.8 * 0.37) - 1 + rng.uniform(-0.01, 0.01)
    x, y, tries = latency_search.solve_measured(gap, 0.2, slope=-0.5, lo=0.02, hi=0.95, tol=0.02)
    assert abs(y) <= 0.02 and abs(x - 0.37) < 0.05 and len(calls) <= 4
    assert tries[-1] == (x, y) and len(tries) == len(calls)

    def steps(x):                                  # no x gives |gap| <= tol: best is kept
        return round((0.5 - x) * 4) / 4 + 0.1
    x, y, tries = latency_search.solve_measured(steps, 0.1, slope=-1.0, lo=0.0, hi=1.0, tol=0.02)
    assert abs(y) == min(abs(v) for _, v in tries) and len(tries) <= 6
    below = [t for t, v in tries if v < 0]
    above = [t for t, v in tries if v > 0]
    assert below and above and min(below) > max(above)     # ended bracketing the step
    with pytest.raises(ValueError, match="slope"):
        latency_search.solve_measured(steps, 0.1, slope=0, lo=0.0, hi=1.0)


def _dipped_table(setup, dip_at=40):
    """Two groups, one conv each, 1 ms per 8 channels, measured every 8: ``a`` has one
    count measured at a tenth of its line (a one-conv program's dip) and a base measured
    in a slow minute (every pruned count looks 30% cheaper)."""
    _, graph = setup
    a, b = (graph.group(k) for k in reversed(GROUPS))          # a: 64 channels, b: 32
    entries, base = {}, {}
    for g in (a, b):
        base[g.key] = g.size / 8.0
        entries[g.key] = {k: {g.key: k / 8.0} for k in range(8, g.size, 8)}
    entries[a.key][dip_at][a.key] *= 0.1
    base[a.key] *= 1.3
    key = L.target_key(graph, SIZE)
    return a, b, L.LatencyTable(key, entries, 5.0 + sum(base.values()),
                                {a.key: a.size, b.key: b.size}, None, base)


def test_steady_table_follows_the_line_not_the_dips(setup):
    """The steady table prices every count on the group's line (the dip and the slow base
    are outvoted) and keeps the unpruned prediction; a line falling with the count (no
    evidence that pruning saves time) becomes flat."""
    from ppdet.slim.latency import search as latency_search
    a, b, table = _dipped_table(setup)
    st = latency_search.steady(table)
    assert st.predict({}) == pytest.approx(table.predict({}))
    line = lambda k: k / a.size                                    # noqa: E731
    for k in (8, 40, a.size - 8):
        assert st.piece_ms(a.key, a.key, k) / st.base[a.key] == pytest.approx(line(k),
                                                                             abs=0.02)
    assert table.piece_ms(a.key, a.key, 40) / table.base[a.key] < 0.1     # raw: the dip
    for k in (8, 16, b.size - 8):                                  # b was a line already
        assert st.piece_ms(b.key, b.key, k) == pytest.approx(table.piece_ms(b.key, b.key, k))
    falling = L.LatencyTable(table.key, {b.key: {k: {b.key: 2.0 - k / b.size}
                                                 for k in range(8, b.size, 8)}},
                             3.0, {b.key: b.size}, None, {b.key: 1.0})
    st = latency_search.steady(falling)
    assert all(st.piece_ms(b.key, b.key, k) == pytest.approx(1.0) for k in (8, 16))


def test_latency_searches_do_not_chase_a_dip_on_the_steady_table(setup):
    """Equal losses on both groups: on the raw table the table-count search (``sum``)
    spends the budget on ``a``'s dipped count, which the whole model would not show; on
    the steady table it prunes by the line, and its prediction is the steady table's."""
    from ppdet.slim.latency import search as latency_search
    _, graph = setup
    a, b, table = _dipped_table(setup)
    sens = {g.name: {0.25: 0.01, 0.5: 0.02, 0.75: 0.04} for g in (a, b)}
    target = table.predict({}) - 0.3 * (table.predict({}) - table.fixed_ms)
    raw, raw_ms, _ = latency_search.ratios_for_latency(table, graph, sens, target, smooth=False,
                                               rule="sum")
    assert round(a.size * (1 - raw[a.name])) == 40                # the dip, chosen
    ratios, ms, _ = latency_search.ratios_for_latency(table, graph, sens, target, rule="sum")
    kept = round(a.size * (1 - ratios.get(a.name, 0)))
    assert kept != 40 and ms <= target
    assert ms == pytest.approx(latency_search.steady(table).predict(
        {g.key: round(g.size * (1 - ratios.get(g.name, 0))) for g in (a, b)}))
    _, uni, uni_ms = latency_search.uniform_ratio_for_latency(table, graph, [a.name, b.name],
                                                              target)
    assert uni_ms <= target and uni_ms == pytest.approx(latency_search.steady(table).predict(
        {g.key: round(g.size * (1 - uni.get(g.name, 0))) for g in (a, b)}))


def test_uniform_latency_search_keeps_multiples_of_align(setup):
    """With ``align`` every group (both sizes are multiples of 16) keeps a multiple of
    16, counts the table never measured included, and the budget still holds."""
    from ppdet.slim.latency import search as latency_search
    _, graph = setup
    a, b, table = _dipped_table(setup)
    target = table.predict({}) - 0.4 * (table.predict({}) - table.fixed_ms)
    _, plain, _ = latency_search.uniform_ratio_for_latency(table, graph, [a.name, b.name], target)
    _, ratios, ms = latency_search.uniform_ratio_for_latency(table, graph, [a.name, b.name], target,
                                                     align=16)
    kept = {g.key: round(g.size * (1 - ratios.get(g.name, 0))) for g in (a, b)}
    assert all(k % 16 == 0 and 16 <= k <= table.sizes[g] for g, k in kept.items()), kept
    assert ms <= target and ms == pytest.approx(latency_search.steady(table).predict(kept))
    assert any(round(g.size * (1 - plain.get(g.name, 0))) % 16 for g in (a, b))  # unaligned
