"""The sensitivities file: paddleslim-readable, normalised keys, atomic, multi-writer."""
import multiprocessing as mp
import os
import pickle
import signal
import subprocess
import sys
import time

import pytest

from ppdet.slim.sensitivity.store import (
    SensitivityStore,
    load_sensitivities_file,
    merge_files,
    norm_ratio,
)
from ppdet.utils.cli import UserError

FP = {"model": "abc", "weights": "w1", "eval_set": "e1"}


def test_ratio_keys_are_normalised():
    assert norm_ratio(0.3) == norm_ratio(0.30000000000000004) == norm_ratio("0.30")


def test_records_are_readable_by_paddleslim_and_resume_skips_them(tmp_path):
    from paddleslim.prune import get_ratios_by_loss, load_sensitivities, merge_sensitive
    f = str(tmp_path / "s.data")
    store = SensitivityStore(f, FP)
    store.set_baseline(0.8)
    for r, loss in [(0.1, 0.01), (0.2, 0.05), (0.30000000000000004, 0.2)]:
        store.add("conv_a", r, loss)
    got = load_sensitivities(f)
    assert got == {"conv_a": {0.1: 0.01, 0.2: 0.05, 0.3: 0.2}}
    assert merge_sensitive([got]) == got
    assert get_ratios_by_loss(got, 0.05)["conv_a"] == pytest.approx(0.2)
    again = SensitivityStore(f, FP)
    assert again.baseline == 0.8 and again.has("conv_a", 0.3) and not again.has("conv_a", 0.4)


def test_a_measurement_is_never_overwritten(tmp_path):
    f = str(tmp_path / "s.data")
    SensitivityStore(f, FP).add("c", 0.1, 0.5)
    SensitivityStore(f, FP).add("c", 0.1, 0.9)
    assert load_sensitivities_file(f) == {"c": {0.1: 0.5}}


def test_foreign_and_corrupt_files_are_refused_untouched(tmp_path):
    junk = tmp_path / "junk.data"
    junk.write_bytes(b"not a pickle at all")
    with pytest.raises(UserError, match="not a sensitivities file"):
        SensitivityStore(str(junk), FP)
    other = tmp_path / "list.data"
    other.write_bytes(pickle.dumps([1, 2, 3]))
    with pytest.raises(UserError, match="not a sensitivities file|not .param"):
        SensitivityStore(str(other), FP)
    assert junk.read_bytes() == b"not a pickle at all"


def test_file_from_another_model_is_refused(tmp_path):
    f = str(tmp_path / "s.data")
    s = SensitivityStore(f, FP)
    s.set_baseline(0.5)
    s.add("c", 0.1, 0.1)
    before = open(f, "rb").read()
    with pytest.raises(UserError, match="another weights"):
        SensitivityStore(f, {**FP, "weights": "w2"})
    assert open(f, "rb").read() == before


def _writer(path, name, n):
    store = SensitivityStore(path, FP)
    for i in range(n):
        store.add(name, (i + 1) / 100, i / 10)


def test_two_writers_on_one_file_lose_nothing(tmp_path):
    f = str(tmp_path / "s.data")
    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=_writer, args=(f, name, 40)) for name in ("a", "b")]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    data = load_sensitivities_file(f)
    assert len(data["a"]) == 40 and len(data["b"]) == 40


_KILL_LOOP = """
import sys
sys.path.insert(0, {root!r})
from ppdet.slim.sensitivity.store import SensitivityStore
s = SensitivityStore({path!r}, {fp!r})
i = 0
while True:
    i += 1
    s.add("p%d" % (i % 7), i / 1e5, float(i))
"""


def test_kill_9_at_any_instant_leaves_a_loadable_file(tmp_path):
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    f = str(tmp_path / "s.data")
    counts = []
    for delay in (0.4, 0.55, 0.7, 0.85):
        proc = subprocess.Popen([sys.executable, "-c", _KILL_LOOP.format(root=root, path=f,
                                                                          fp=FP)])
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        data = load_sensitivities_file(f)          # never half-written
        counts.append(sum(len(v) for v in data.values()))
    assert counts == sorted(counts) and counts[-1] > counts[0]   # only grows


def test_merge_matches_paddleslim(tmp_path):
    from paddleslim.prune import merge_sensitive
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_bytes(pickle.dumps({"x": {0.1: 0.1, 0.2: 0.2}}))
    b.write_bytes(pickle.dumps({"x": {0.30000000000000004: 0.3}, "y": {0.1: 0.5}}))
    ours = merge_files([str(a), str(b)])
    theirs = merge_sensitive([pickle.loads(a.read_bytes()), pickle.loads(b.read_bytes())])
    assert ours == {k: {norm_ratio(r): v for r, v in d.items()} for k, d in theirs.items()}


def _new_fp(weights="w1"):
    return {"model config": "m", "weights": weights, "eval set": "e-new", "eval reader": "r",
            "metric": "VOC", "map_type": "integral", "criterion": "l1_norm",
            "_legacy eval set": "e-old"}


def _write_legacy_sidecar(f, weights="w1"):
    import json

    from ppdet.slim.sensitivity.store import FORMAT, META_SUFFIX
    with open(f, "wb") as fh:
        pickle.dump({"conv1_weights": {0.1: 0.02}}, fh, protocol=2)
    with open(f + META_SUFFIX, "w") as fh:
        json.dump({"format": FORMAT, "baseline": 0.5,
                   "fingerprint": {"model config": "m", "weights": weights,
                                   "eval set": "e-old", "criterion": "l1_norm"}}, fh)


def test_a_sidecar_of_the_older_fingerprint_is_upgraded_not_refused(tmp_path, capsys):
    """Files measured before metric/map_type entered the fingerprint keep their records:
    the old keys (eval set by the old digest) are compared, then the sidecar is rewritten."""
    import json
    f = str(tmp_path / "old.data")
    _write_legacy_sidecar(f)
    store = SensitivityStore(f, _new_fp())
    assert store.baseline == 0.5                 # no new baseline evaluation
    store.add("conv1_weights", 0.2, 0.05)
    assert load_sensitivities_file(f)["conv1_weights"] == {0.1: 0.02, 0.2: 0.05}
    meta = json.load(open(f + ".meta.json"))
    assert meta["fingerprint"]["map_type"] == "integral" and meta["baseline"] == 0.5
    assert "_legacy eval set" not in meta["fingerprint"]
    assert "upgraded" in capsys.readouterr().out
    SensitivityStore(f, _new_fp()).add("conv1_weights", 0.3, 0.07)   # now a plain match


def test_an_older_sidecar_from_other_weights_is_still_refused(tmp_path):
    f = str(tmp_path / "old.data")
    _write_legacy_sidecar(f, weights="w-other")
    before = open(f, "rb").read()
    with pytest.raises(UserError, match="another weights"):
        SensitivityStore(f, _new_fp())
    assert open(f, "rb").read() == before
