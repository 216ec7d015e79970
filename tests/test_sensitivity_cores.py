"""Every core by default: several predictors over disjoint pairs writing one file, and
processes that share the cores instead of oversubscribing them."""
import os
import subprocess
import sys
import threading
import time

from ppdet.slim.sensitivity.analysis import run_sensitivity
from ppdet.slim.sensitivity.cores import CoreShare
from ppdet.slim.sensitivity.store import SensitivityStore, load_sensitivities_file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CFG = os.path.join(ROOT, "configs/shapes/yolov3_mobilenet_v1_shapes.yml")
FP = {"weights": "w"}


class Recorder:
    """Wraps a measure; every call is logged (pair, thread) in one shared list."""

    def __init__(self, inner, log, delay=0.0):
        self.inner, self.log, self.delay = inner, log, delay

    def baseline(self):
        return self.inner.baseline()

    def ready(self):
        return getattr(self.inner, "ready", lambda: True)()

    def __call__(self, name, ratio):
        self.log.append(((name, ratio), threading.get_ident()))
        time.sleep(self.delay)
        return self.inner(name, ratio)


class Fake:
    def baseline(self):
        return 0.5

    def __call__(self, name, ratio):
        return 0.5 * (1 - ratio * (1 + len(name) % 3) / 4), 1


def test_two_processes_of_two_workers_on_one_file_lose_and_repeat_nothing(tmp_path):
    path = str(tmp_path / "s.data")
    names = [f"conv{i}" for i in range(5)]
    ratios = [0.1, 0.3, 0.5, 0.7]
    log = []

    def process(shard):         # a process: its own store object (own lock descriptors)
        store = SensitivityStore(path, FP)
        run_sensitivity([Recorder(Fake(), log, 0.01) for _ in range(2)], store, names,
                        ratios, shards=2, shard_id=shard, progress=False,
                        log=lambda *_: None)

    procs = [threading.Thread(target=process, args=(k,)) for k in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    pairs = [pair for pair, _ in log]
    assert sorted(pairs) == sorted((n, r) for n in names for r in ratios)   # each once
    assert len({t for _, t in log}) >= 3            # the work really was spread out
    data = load_sensitivities_file(path)
    assert sum(len(v) for v in data.values()) == len(names) * len(ratios)


def test_two_predictors_write_what_one_measures(tmp_path, trained):
    from ppdet.core.config import load_config
    from ppdet.engine.builder import build_dataset, build_metric_for, build_model
    from ppdet.engine.checkpoint import load_weights
    from ppdet.slim.prune.pruner import FilterPruner
    from ppdet.slim.sensitivity.analysis import MaskedMeasure
    from ppdet.slim.sensitivity.cache import EvalCache
    from ppdet.slim.sensitivity.fast_eval import MaskedEvaluator
    cfg = load_config(CFG)
    model = build_model(cfg)
    load_weights(model, trained)
    cache = EvalCache(build_dataset(cfg, "eval"), cfg["EvalReader"]["sample_transforms"],
                      max_samples=24, progress=False)
    ev = MaskedEvaluator(model, cache, build_metric_for(cfg, cache.dataset), FilterPruner(model),
                         8)
    names = ["yolo_transition.0.conv.weights", "yolo_block.1.tip.conv.weights"]
    ratios = [0.2, 0.5, 0.8]
    one = run_sensitivity(MaskedMeasure(ev), SensitivityStore(str(tmp_path / "a.data"), FP),
                          names, ratios, progress=False, log=lambda *_: None)
    log = []
    spawned = ev.spawn()                # a worker process of its own (threads do not scale)
    try:
        assert not spawned.ready()      # still loading: the run would not wait for it
        deadline = time.time() + 120
        while not spawned.ready() and time.time() < deadline:
            time.sleep(0.1)
        measures = [Recorder(MaskedMeasure(e), log) for e in (ev, spawned)]
        two = run_sensitivity(measures, SensitivityStore(str(tmp_path / "b.data"), FP), names,
                              ratios, progress=False, log=lambda *_: None, workers=lambda: 2)
        child = spawned._worker.proc
    finally:
        ev.close()
    assert sorted(p for p, _ in log) == sorted((n, r) for n in names for r in ratios)
    assert len({t for _, t in log}) == 2
    assert two == one                                     # same numbers, bit for bit
    assert child.poll() is not None and not os.path.exists(ev.workdir)   # nothing left behind


def test_side_by_side_processes_share_the_cores(tmp_path, monkeypatch):
    for key in ("PADDLE_LOCAL_SIZE", "PADDLE_TRAINERS_NUM"):
        monkeypatch.delenv(key, raising=False)
    folder = str(tmp_path / "reg")
    with CoreShare(folder=folder, cores=4) as me:
        assert me.workers() == 4
        peer = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        try:
            with open(os.path.join(folder, str(peer.pid)), "w"):
                pass
            me._when = 0
            assert me.peers() == 2 and me.workers() == 2
            os.makedirs(folder, exist_ok=True)
            with open(os.path.join(folder, "999999999"), "w"):    # a peer killed with -9
                pass
            me._when = 0
            assert me.workers() == 2
        finally:
            peer.kill()
            peer.wait()
        me._when = 0
        assert me.workers() == 4                    # the peer ended: its cores come back
    assert os.listdir(folder) == []
    monkeypatch.setenv("PADDLE_LOCAL_SIZE", "2")     # under paddle.distributed.launch
    assert CoreShare(folder=folder, cores=2).workers() == 1
    monkeypatch.setenv("PADDLE_LOCAL_SIZE", "3")
    assert CoreShare(folder=folder, cores=2).workers() == 1


PARENT = r"""
import sys, time
sys.path.insert(0, {root!r})
from ppdet.core.config import load_config
from ppdet.engine.builder import build_dataset, build_metric_for, build_model
from ppdet.slim.sensitivity.cache import EvalCache
from ppdet.slim.sensitivity.fast_eval import MaskedEvaluator
from ppdet.slim.prune.pruner import FilterPruner
cfg = load_config({cfg!r})
model = build_model(cfg)
cache = EvalCache(build_dataset(cfg, "eval"), cfg["EvalReader"]["sample_transforms"],
                  max_samples=4, progress=False)
ev = MaskedEvaluator(model, cache, build_metric_for(cfg, cache.dataset), FilterPruner(model), 4)
sp = ev.spawn()
while not sp.ready():
    time.sleep(0.1)
print(sp._worker.proc.pid, ev.workdir, flush=True)
time.sleep(600)
"""


def test_worker_process_and_export_do_not_outlive_a_killed_run(shapes_root):
    from ppdet.slim.sensitivity.fast_eval import _remove_stale_exports
    from ppdet.utils.atomic import pid_alive
    parent = subprocess.Popen([sys.executable, "-c", PARENT.format(root=ROOT, cfg=CFG)],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        child, workdir = parent.stdout.readline().split()
        assert pid_alive(int(child)) and os.path.isdir(workdir)
    finally:
        parent.kill()                   # kill -9: no finally, no atexit in the parent
        parent.wait()
    deadline = time.time() + 30         # the worker sees its pipe close and exits
    while time.time() < deadline and _running(int(child)):
        time.sleep(0.1)
    assert not _running(int(child))
    assert os.path.isdir(workdir)       # left behind by the killed run ...
    _remove_stale_exports()             # ... and removed by the next evaluator
    assert not os.path.exists(workdir)


def _running(pid):
    """Alive and not a zombie (the worker's parent is gone, so nobody may reap it soon)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
