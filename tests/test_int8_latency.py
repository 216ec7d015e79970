"""Latency-target pruning for an INT8 deployment (issue 24 item 5): tables keyed by
precision, INT8 entries timed on quantized programs, predictions printed with the error they
can carry, a table too coarse for its target named, and bad option combinations refused in
one line with files intact. Structure and numerics only, never times (CI has 2 cores and
may lack VNNI); synthetic tables wherever nothing needs measuring."""
import json
import os

import pytest
from helpers import assert_one_error_line, assert_unchanged, script, snapshot

from ppdet.core.config import load_config
from ppdet.engine import legacy_ir
from ppdet.engine.builder import build_model
from ppdet.slim import latency as L
from ppdet.slim.latency import search
from ppdet.slim.prune.graph import PruneGraph

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CFG = os.path.join(ROOT, "configs/shapes/yolov3_mobilenet_v1_shapes.yml")
GROUPS = ("yolo_head.blocks.2.convs.0.conv", "yolo_head.blocks.2.convs.1.conv")  # 32, 64
DEPLOY = [160, 160]                     # the config's test size: prune.py's tables use it


@pytest.fixture(scope="module")
def graph():
    return PruneGraph.of(build_model(load_config(CFG)))


def _table(graph, counts=None, precision="fp32", path=None, calib=True):
    """Two groups, one conv each, 1 ms per 8 channels, 20 ms fixed (no timing):
    ``counts`` ``{group: [counts]}`` (default every multiple of 8); with ``calib``, two
    whole-model plans off the one-line model and three rounds each."""
    b, a = (graph.group(k) for k in GROUPS)                  # a: 64 channels, b: 32
    counts = counts or {g.key: range(8, g.size, 8) for g in (a, b)}
    entries = {g.key: {k: {g.key: k / 8} for k in counts[g.key]} for g in (a, b)}
    base = {g.key: g.size / 8 for g in (a, b)}
    key = L.target_key(graph, DEPLOY, 1, True, os.path.basename(CFG), precision)
    rows = None
    if calib:
        rows = [{"plan": {}, "ms": 32.0, "rounds": [32.0, 32.6, 33.0]},
                {"plan": {a.key: 32, b.key: 16}, "ms": 26.5, "rounds": [26.5, 27.0, 30.0]},
                {"plan": {a.key: 16, b.key: 8}, "ms": 24.0, "rounds": [24.0, 24.4, 25.0]}]
    return a, b, L.LatencyTable(key, entries, 32.0, {a.key: a.size, b.key: b.size}, path,
                                base, rows)


def test_table_records_its_precision_and_the_other_is_refused(graph, tmp_path):
    path = str(tmp_path / "t.json")
    _, _, table = _table(graph, precision="int8", path=path)
    table.save()
    data = json.loads(open(path).read())
    assert data["key"]["precision"] == "int8" and L.table_precision(path) == "int8"
    assert data["key"]["input_size"] == DEPLOY and data["key"]["threads"] == 1
    assert isinstance(data["key"]["cpu_features"], list)      # recorded, not checked
    assert L.LatencyTable.load(path, L.target_key(graph, DEPLOY, precision="int8")).complete
    with pytest.raises(L.LatencyTableError) as e:
        L.LatencyTable.load(path, L.target_key(graph, DEPLOY))              # fp32 asked
    msg = str(e.value)
    assert "\n" not in msg and "INT8" in msg and "FP32" in msg
    assert "--precision int8" in msg and "latency_table.py --precision fp32" in msg
    # a table from before precisions were recorded is FP32
    old = dict(data, key={k: v for k, v in data["key"].items() if k != "precision"})
    open(path, "w").write(json.dumps(old))
    assert L.LatencyTable.load(path, L.target_key(graph, DEPLOY)).precision == "fp32"
    with pytest.raises(L.LatencyTableError, match="FP32"):
        L.LatencyTable.load(path, L.target_key(graph, DEPLOY, precision="int8"))
    # the default files of the two precisions are two files
    p32, p8 = (L.table_path("w/model_final", DEPLOY, precision=p) for p in ("fp32", "int8"))
    assert p32 != p8 and os.path.basename(p32) == "latency_cpu-onednn_t1_160x160.json"
    assert "int8" in os.path.basename(p8)


def test_int8_table_is_timed_on_quantized_programs(graph, tmp_path, monkeypatch):
    """Every program an INT8 build times went through the quantizer (one child process
    per batch) and came back with quantize/dequantize pairs on its convs; the whole-model
    plans too, marked ``precision: int8`` for the predictor. (No timing is checked.)"""
    import yaml
    real, seen = legacy_ir.quantize_programs, []

    def spy(jobs, algo="abs_max"):
        n = real(jobs, algo)
        for job in jobs:
            convs, counts = legacy_ir.quantized_ops(job["out_dir"])
            seen.append((job["out_dir"], len(convs), counts.get("quantize_linear", 0)))
        return n

    from ppdet.engine import latency as engine_latency
    real_measure, measured = engine_latency.measure_latency, []

    def measure(model_dir, *a, **kw):        # the predictor reads the precision there
        with open(os.path.join(model_dir, "infer_cfg.yml")) as f:
            measured.append(yaml.safe_load(f).get("precision"))
        return real_measure(model_dir, *a, **kw)
    monkeypatch.setattr(engine_latency, "measure_latency", measure)
    monkeypatch.setattr(legacy_ir, "quantize_programs", spy)
    cfg = load_config(CFG)
    path = str(tmp_path / "t8.json")
    # the entries: a file whose whole-model part is there already, so only they are timed
    key = L.target_key(graph, [64, 64], 1, True, os.path.basename(CFG), "int8")
    L.LatencyTable(key, full_ms=1.0, path=path, calib=[{"plan": {}, "ms": 1.0}]).save()
    table = L.build_table(graph, cfg, path, [64, 64], step=16, groups=GROUPS[:1], repeats=3,
                          progress=False, log=lambda *a: None, quiet=False, passes=1,
                          precision="int8")
    assert table.precision == "int8" and table.complete and L.table_precision(path) == "int8"
    _, items = L.work_items(graph, 16, groups=GROUPS[:1])
    # one program per conv an item times, and the run-overhead program, one child process
    pieces = 1 + sum(1 if a == "base" else len(table.entries[a][b]) for a, b in items)
    assert len(seen) == pieces and all("latency_int8_" in d for d, *_ in seen)
    # the whole model (one plan here): exported, quantized, handed to the predictor as INT8
    times = []
    ms = L.measure_plans(graph, cfg, [{}], [64, 64], repeats=2, rounds=1, precision="int8",
                         times=times)
    whole = seen[-1]
    assert "latency_whole_" in whole[0] and whole[0].endswith("_int8")
    assert len(seen) == pieces + 1
    assert measured == ["int8"] and len(times) == 1 and ms[0] == min(times[0]) > 0
    assert all(n_convs >= 1 and n_q >= 1 for _, n_convs, n_q in seen), seen
    assert whole[1] >= 40                        # the whole model's convs, quantized


def test_prediction_error_parts(graph):
    """fit: the largest miss on the calibration plans; noise: median spread of the fastest
    two rounds; interpolation: zero on measured counts, the farther neighbour between."""
    a, b, table = _table(graph)
    fit = max(abs(table.predict(c["plan"]) - c["ms"]) / c["ms"] for c in table.calib[1:])
    assert L.fit_residual(table) == pytest.approx(fit) and fit > 0
    assert L.timing_noise(table) == pytest.approx(sorted(
        [32.6 / 32 - 1, 27.0 / 26.5 - 1, 24.4 / 24 - 1])[1])          # the median
    on = L.predict_with_error(table, {a.key: 32, b.key: 16})
    assert on.interpolation == 0 and on.err == pytest.approx(on.fit + on.noise)
    assert on.fit == pytest.approx(fit * on.ms)
    unpruned = L.predict_with_error(table, {})                  # measured: noise only
    assert unpruned.fit == unpruned.interpolation == 0 and unpruned.noise > 0
    _, _, coarse = _table(graph, {a.key: [8, 56], b.key: [8, 24]})
    mid = L.predict_with_error(coarse, {a.key: 32, b.key: 16})
    step_a = abs(coarse.predict({a.key: 8, b.key: 16}) - mid.ms)
    step_b = abs(coarse.predict({a.key: 32, b.key: 8}) - mid.ms)
    assert mid.interpolation == pytest.approx(step_a + step_b) and mid.interpolation > 0
    assert "±" in str(mid) and "interpolation" in mid.detail()


def test_a_coarse_table_is_named_and_a_fine_one_is_not(graph):
    a, b, fine = _table(graph, calib=False)
    _, _, coarse = _table(graph, {a.key: [8, 56], b.key: [8, 24]}, calib=False)
    names = [a.name, b.name]
    target = fine.predict({a.key: 32, b.key: 16})              # reachable on the fine grid
    for table, coarse_expected in ((fine, False), (coarse, True)):
        st = search.steady(table)
        _, ratios, ms = search.uniform_ratio_for_latency(table, graph, names, target)
        kept = {g.key: round(g.size * (1 - ratios.get(g.name, 0))) for g in (a, b)}
        warning = L.coarse_warning(st, kept, target)
        if coarse_expected:
            assert ms < 0.95 * target                        # the grid cannot get nearer
            assert warning and "\n" not in warning and "too coarse" in warning
            assert "--max_counts" in warning and f"{target:.2f} ms" in warning
        else:
            assert ms == pytest.approx(target) and warning is None
    # between widely spaced counts (--align interpolates): the interpolation is named
    _, ratios, _ = search.uniform_ratio_for_latency(coarse, graph, names, target, align=8)
    kept = {g.key: round(g.size * (1 - ratios.get(g.name, 0))) for g in (a, b)}
    assert any(k not in coarse.counts(g) for g, k in kept.items())
    warning = L.coarse_warning(search.steady(coarse), kept, target)
    assert warning and "interpolating" in warning and "--max_counts" in warning
    assert L.coarse_warning(search.steady(fine), {a.key: 36, b.key: 16}, None) is None


@pytest.fixture
def run(graph, tmp_path):
    """A random-weights checkpoint and INT8 / FP32 synthetic tables for prune.py."""
    from ppdet.engine.checkpoint import save_checkpoint
    weights = str(tmp_path / "w" / "model_final")
    os.makedirs(os.path.dirname(weights))
    save_checkpoint(build_model(load_config(CFG)), weights)
    tables = {}
    for p in ("int8", "fp32"):
        tables[p] = str(tmp_path / "w" / f"table_{p}.json")
        _table(graph, precision=p, path=tables[p])[2].save()
    a, b = graph.group(GROUPS[1]), graph.group(GROUPS[0])
    argv = ["-c", CFG, "-o", f"weights={weights}", f"save_dir={tmp_path / 'out'}",
            "--pruned_params", f"{a.name},{b.name}", "--no_finetune"]
    return argv, tables, tmp_path


def test_prune_for_int8_prints_the_prediction_with_its_error(run, capsys):
    argv, tables, tmp_path = run
    script("slim/prune/prune.py").main(argv + ["--target_speedup", "1.2", "--precision",
                                               "int8", "--latency_table", tables["int8"]])
    out = capsys.readouterr().out
    line = next(ln for ln in out.splitlines() if ln.startswith("predicted INT8 latency"))
    assert line.count("±") >= 3 and "fit" in line and "noise" in line, line
    assert "too coarse" not in out
    # b (32 channels) keeps 16: INT8 kernels run counts off multiples of 32 slowly
    warning = next(ln for ln in out.splitlines() if "multiples of 32" in ln)
    assert warning.startswith("warning:") and "--align 32" in warning and "--step 32" in warning
    assert L.int8_alignment_warning({"a": 32, "b": 64}, {"a": 64, "b": 64}) is None
    assert L.int8_alignment_warning({"a": 40}, {"a": 40}) is None      # not pruned
    assert os.path.isfile(tmp_path / "out" / "yolov3_mobilenet_v1_shapes_pruned" /
                          "pruned.pdparams")
    # the INT8 table travels with the pruned model, under the name post_quant.py looks for
    assert os.path.isfile(tmp_path / "out" / "yolov3_mobilenet_v1_shapes_pruned" /
                          "latency_cpu-onednn-int8_t1_160x160.json")


def test_exported_int8_check_says_when_convs_stay_in_fp32(run, monkeypatch):
    """The INT8 table times every conv in INT8: the check of a model quantized with a skip
    list says that its prediction is the all-INT8 model's."""
    import yaml

    from ppdet.engine import latency as engine_latency
    from ppdet.slim.pipelines.latency import check_exported_latency
    argv, tables, tmp_path = run
    script("slim/prune/prune.py").main(argv + ["--target_speedup", "1.2", "--precision",
                                               "int8", "--latency_table", tables["int8"]])
    pruned = tmp_path / "out" / "yolov3_mobilenet_v1_shapes_pruned" / "pruned"
    cfg = load_config(CFG, [f"weights={pruned}"])
    monkeypatch.setattr(engine_latency, "measure_latency", lambda *a, **k: 5.0)
    for skip, noted in (([], False), (["conv2d_3.w_0"], True)):
        model_dir = tmp_path / f"int8_{len(skip)}"
        model_dir.mkdir()
        (model_dir / "infer_cfg.yml").write_text(yaml.safe_dump(
            {"precision": "int8", "quantization": {"fp32_convs": skip}}))
        lines = []
        assert check_exported_latency(cfg, None, str(model_dir), precision="int8",
                                      log=lines.append) == 5.0
        assert lines[0].startswith("INT8 latency: measured 5.00 ms, predicted"), lines
        assert any("stay in FP32" in ln and "conv2d_3.w_0" in ln for ln in lines) == noted


@pytest.mark.parametrize("script_rel, extra, words", [
    ("slim/prune/prune.py", ["--pruned_ratios", "0.5", "--precision", "int8"],
     ["--precision int8", "--target_speedup"]),
    ("slim/prune/prune.py", ["--target_speedup", "1.2", "--precision", "int4"],
     ["--precision int4", "fp32, int8"]),
    ("slim/prune/prune.py", ["--target_speedup", "1.2", "--precision", "int8",
                             "--latency_table", "{fp32}"], ["FP32", "--precision fp32"]),
    ("slim/prune/prune.py", ["--target_speedup", "1.2", "--latency_table", "{int8}"],
     ["INT8", "--precision int8"]),
    ("slim/prune/latency_table.py", ["--precision", "bf16"], ["--precision bf16"]),
    ("slim/prune/latency_table.py", ["--precision", "int8", "--output", "{fp32}"],
     ["FP32", "--precision fp32"]),
])
def test_bad_precision_combinations_are_one_line_and_touch_nothing(run, capsys, script_rel,
                                                                   extra, words):
    argv, tables, tmp_path = run
    if script_rel.endswith("latency_table.py"):
        argv = argv[:4]
    extra = [x.format(**tables) for x in extra]
    before = snapshot(str(tmp_path))
    with pytest.raises(SystemExit) as e:
        script(script_rel).main(argv + extra)
    assert e.value.code == 2
    assert_one_error_line(capsys.readouterr().err, words)
    assert_unchanged(before, snapshot(str(tmp_path)))
