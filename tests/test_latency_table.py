"""ppdet/slim/latency.py: the latency table (resume, exact on its points, refusals) and the
latency targets of slim/prune/prune.py. Timings are compared only within one run."""
import json
import os

import numpy as np
import pytest

from ppdet.core.config import load_config
from ppdet.engine.builder import build_model
from ppdet.slim import latency as L
from ppdet.slim.graph import PruneGraph

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
                         progress=False, log=lambda *a: None, **kw)


class _Killed(Exception):
    pass


def test_table_resumes_after_a_kill_and_is_exact_on_its_points(setup, tmp_path):
    path = tmp_path / "latency.json"
    _, graph = setup
    total = sum(len(L.counts_for(graph.group(k).size, 16)) for k in GROUPS)

    def kill(n):
        if n == 2:
            raise _Killed
    with pytest.raises(_Killed):
        _build(setup, path, on_entry=kill)
    data = json.loads(path.read_text())          # a loadable file with what was measured
    assert sum(len(e) for e in data["entries"].values()) == 2 and data["full_ms"] is None
    seen = []
    table = _build(setup, path, on_entry=seen.append)
    assert len(seen) == total - 2                # only the missing entries were measured
    assert table.complete and table.full_ms > 0
    again = []
    _build(setup, path, on_entry=again.append)
    assert again == []                           # complete: nothing measured again
    # exact on its own points: the unpruned model and every measured count
    assert table.predict({}) == pytest.approx(table.full_ms, rel=1e-12)
    for key in GROUPS:
        size = graph.group(key).size
        for k, ms in table.entries[key].items():
            got = table.predict({key: k}) - table.predict({})
            assert got == pytest.approx(ms - table.entries[key][size], abs=1e-9)
            assert table.predict({key: np.arange(k)}) == table.predict({key: k})
    # between points: linear interpolation
    k0, k1 = sorted(table.entries[GROUPS[0]])[:2]
    mid = table.group_ms(GROUPS[0], (k0 + k1) // 2)
    lo, hi = sorted((table.entries[GROUPS[0]][k0], table.entries[GROUPS[0]][k1]))
    assert lo <= mid <= hi


def test_table_of_another_target_is_refused_in_one_line(setup, tmp_path):
    path = tmp_path / "latency.json"
    cfg, graph = setup
    key = L.target_key(graph, SIZE, 1, True, "x.yml")
    table = L.LatencyTable(key, {GROUPS[0]: {8: 1.0}}, 2.0, {GROUPS[0]: 32}, str(path))
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
    path.write_text("not json")
    with pytest.raises(L.LatencyTableError):
        L.LatencyTable.load(str(path), key)
