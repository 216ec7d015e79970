"""Building a latency table: what it measures, in passes, resumable, under a lock.

Every entry is written as it is measured (atomically, under the table file's lock), so a
stopped build goes on where it was; each entry is timed in ``passes`` separate passes over
the table and the fastest kept; then the whole model, unpruned and at three uniform
calibration plans, in rounds.
"""
import os
import tempfile

import numpy as np

from ppdet.slim.latency.gate import quiet_gate
from ppdet.slim.latency.specs import _input_shapes, group_specs
from ppdet.slim.latency.table import LatencyTable, counts_for, target_key
from ppdet.slim.latency.timing import (
    OVERHEAD_SPEC,
    STAT,
    Int8Pieces,
    _forget_stale_traces,
    run_overhead,
    time_specs,
)

__all__ = ["PASSES", "CALIB_ROUNDS", "CALIB_FRACTIONS", "work_items", "item_id",
           "calibration_plans", "measure_plans", "build_table"]


PASSES = 2     # timings of each table entry, in separate passes over the table


CALIB_ROUNDS = 3


CALIB_FRACTIONS = (0.75, 0.5, 0.25)


def _locked_update(path, key, fn):
    """Under the lock: re-read the table on disk (checking its key), apply ``fn``, write."""
    from ppdet.utils.atomic import file_lock
    with file_lock(path):
        if os.path.isfile(path):
            table = LatencyTable.load(path, key)
        else:
            table = LatencyTable(key, path=path)
        fn(table)
        table.save()
        return table


def work_items(graph, step=8, max_counts=None, extra_counts=None, groups=None):
    """What a complete table measures: ``[("base", conv path)]`` for every conv a group
    touches, then ``[(group key, kept)]`` for every count under each group's size."""
    chosen = [g for g in graph.prunable if groups is None or g.key in groups]
    convs = []
    for g in chosen:
        for p in [*g.producers, *g.consumers]:
            if p not in convs:
                convs.append(p)
    items = [("base", p) for p in convs]
    for g in chosen:
        for k in counts_for(g.size, step, (extra_counts or {}).get(g.key, ()), max_counts):
            if k < g.size:
                items.append((g.key, k))
    return chosen, items


def item_id(a, b):
    """The id of a work item in ``passes``: ``base@<conv>`` or ``<group>@<kept>``."""
    return f"{a}@{b}"


def calibration_plans(table, fractions=CALIB_FRACTIONS):
    """Whole-model plans the scale is fitted on: every group at the measured count nearest
    each fraction of its size (uniform pruning at three depths)."""
    return [{g: min(table.counts(g), key=lambda k, g=g: (abs(k - table.sizes[g] * f), -k))
             for g in table.sizes} for f in fractions]


def measure_plans(graph, cfg, plans, image_size, threads=1, use_mkldnn=True, repeats=30,
                  rounds=CALIB_ROUNDS, gate=None, precision="fp32", times=None):
    """ms of the whole exported model under each plan (``{group: kept}``): exported once
    each (``precision`` int8: then quantized, :func:`_quantized_for_timing`), then measured
    in turn for ``rounds`` rounds (a new predictor each time, after ``gate.wait()`` when a
    :class:`QuietGate` is given), the fastest per plan, so a slow minute or a slow
    predictor weighs on no plan alone. ``times``: a list that gets every plan's round
    timings (the spread of the fastest two is the noise a prediction carries)."""
    from ppdet.engine.export import export_model
    from ppdet.engine.latency import measure_latency
    from ppdet.slim.prune.plan import ChannelPlan, apply_plan
    every = [[] for _ in plans]
    with tempfile.TemporaryDirectory(prefix="latency_whole_") as tmp:
        dirs = []
        for i, plan in enumerate(plans):
            applied = apply_plan(graph, ChannelPlan({g: np.arange(int(k))
                                                     for g, k in plan.items()}))
            try:
                _forget_stale_traces()
                d = os.path.join(tmp, str(i))
                export_model(graph.model, cfg, d,
                             ["c"] * int(cfg.get("num_classes", 1) or 1))
            finally:
                applied.restore()
            dirs.append(d)
        if precision == "int8":
            dirs = _quantized_for_timing(dirs, image_size)
        for _ in range(max(int(rounds), 1)):
            for i, d in enumerate(dirs):
                if gate is not None:
                    gate.wait()
                every[i].append(measure_latency(
                    d, image_size, use_mkldnn=use_mkldnn, warmup=5, repeats=repeats,
                    threads=threads, stat=STAT))
    if times is not None:
        times.extend(every)
    return [min(t) for t in every]


def _quantized_for_timing(dirs, image_size, samples=2):
    """INT8 copies (``<dir>_int8``, ``precision: int8`` in ``infer_cfg.yml``) of exported
    models, calibrated cheaply (``abs_max`` on ``samples`` random images, the timing
    input's kind: only their speed is wanted) in one child process."""
    import yaml

    from ppdet.engine.legacy_ir import quantize_programs
    h, w = int(image_size[0]), int(image_size[1])
    rng = np.random.RandomState(0)
    jobs, out = [], []
    for d in dirs:
        calib = os.path.join(d + "_calib.npz")
        np.savez(calib, image=rng.randn(samples, 3, h, w).astype("float32"),
                 im_shape=np.tile(np.array([[h, w]], "float32"), (samples, 1)),
                 scale_factor=np.ones((samples, 2), "float32"))
        jobs.append({"fp32_dir": d, "out_dir": d + "_int8", "calib": calib,
                     "batch_size": 1})
        out.append(d + "_int8")
    quantize_programs(jobs)
    for d, q in zip(dirs, out):
        with open(os.path.join(d, "infer_cfg.yml")) as f:
            infer_cfg = yaml.safe_load(f)
        infer_cfg["precision"] = "int8"
        with open(os.path.join(q, "infer_cfg.yml"), "w") as f:
            yaml.safe_dump(infer_cfg, f, sort_keys=False)
    return out


def build_table(graph, cfg, path, image_size, threads=1, use_mkldnn=True, step=8,
                max_counts=None, extra_counts=None, groups=None, repeats=30, progress=True,
                on_entry=None, log=print, passes=None, rounds=CALIB_ROUNDS, quiet=True,
                precision="fp32"):
    """Measure what ``path`` lacks and return the table. Resumable: entries already in the
    file are kept (a file for another target is refused before anything is measured).
    Each conv is timed on its own (a one-conv program), every entry ``passes`` times
    (default :data:`PASSES`), one pass over the whole table after another, the fastest
    kept: a burst of load on the machine then spoils one pass of an entry, not the entry.
    Then the whole model, unpruned and at :func:`calibration_plans`, in ``rounds`` rounds.
    ``extra_counts``: ``{group key: [counts]}`` measured too; ``groups``: only these keys (tests);
    ``on_entry(n)`` is called after each timing of an entry; ``quiet``: every timing waits
    for a quiet machine first (:class:`QuietGate`); ``precision`` int8: every program is
    quantized first and run with the INT8 predictor config (:class:`Int8Pieces`)."""
    key = target_key(graph, image_size, threads, use_mkldnn, cfg.get("filename", ""),
                     precision)
    have = LatencyTable.load(path, key) if os.path.isfile(path) else LatencyTable(key)
    chosen, items = work_items(graph, step, max_counts, extra_counts, groups)
    passes = PASSES if passes is None else max(int(passes), 1)
    todo = _timings_to_take(have, items, passes)
    table = _locked_update(path, key, lambda t: t.sizes.update({g.key: g.size
                                                                for g in chosen}))
    need_whole = table.calib is None
    if todo or need_whole:
        log(f"latency table {path} ({precision.upper()}): {len(todo)} timings to take "
            f"({passes} per entry, {len(items) * passes - len(todo)} already there)")
    gate = quiet_gate(threads, use_mkldnn) if quiet and (todo or need_whole) else None
    with tempfile.TemporaryDirectory(prefix="latency_int8_") as tmp:
        int8 = Int8Pieces(tmp) if precision == "int8" and todo else None
        timer = _EntryTimer(graph, chosen, _input_shapes(graph, image_size) if todo else {},
                            threads, use_mkldnn, repeats, gate, int8)
        _time_entries(timer, path, key, todo, progress, on_entry)
    table = LatencyTable.load(path, key)
    if need_whole:
        table = _calibrate_whole(graph, cfg, path, key, table, image_size, threads,
                                 use_mkldnn, repeats, rounds, gate)
    if gate is not None:
        log(gate.summary())
    return table


_CHUNK = 64     # INT8: entries whose programs one child process quantizes at a time


def _time_entries(timer, path, key, todo, progress, on_entry):
    """Time every ``(pass, a, b)`` of ``todo`` into the table file (INT8: quantizing the
    next :data:`_CHUNK` entries' programs before timing them)."""
    bar = None
    if progress and todo:
        from tqdm import tqdm
        bar = tqdm(total=len(todo), desc="latency table", unit="entry")
    try:
        for n, (p, a, b) in enumerate(todo, 1):
            if timer.int8 is not None and (n - 1) % _CHUNK == 0:
                timer.prepare(todo[n - 1:n - 1 + _CHUNK])
            timer.time_entry(path, key, a, b, p)
            if bar is not None:
                bar.update(1)
            if on_entry is not None:
                on_entry(n)
    finally:
        if bar is not None:
            bar.close()


def _timings_to_take(have, items, passes):
    """``[(pass, a, b)]``: every item's timings not yet in ``have``, pass after pass."""
    return [(p, a, b) for p in range(1, passes + 1) for a, b in items
            if have.passes.get(item_id(a, b), 0) < p]


def _keep_base(t, conv, ms, n):
    """Record a conv's unpruned time (the fastest so far) and that pass ``n`` is done."""
    t.base[conv] = min(t.base.get(conv, ms), ms)
    t.passes[item_id("base", conv)] = max(t.passes.get(item_id("base", conv), 0), n)


def _keep_entry(t, group, kept, pieces, n):
    """Record a group's per-conv times at ``kept`` (the fastest so far) and pass ``n``."""
    have = t.entries.setdefault(group, {}).setdefault(kept, {})
    for u, ms in pieces.items():
        have[u] = min(have.get(u, ms), ms)
    t.passes[item_id(group, kept)] = max(t.passes.get(item_id(group, kept), 0), n)


class _EntryTimer:
    """Times one table entry (each conv on its own, the run overhead taken off) and writes
    it to the table file under its lock; ``int8``: an :class:`Int8Pieces`, each conv's
    program quantized and run as INT8."""

    def __init__(self, graph, chosen, shapes, threads, use_mkldnn, repeats, gate, int8=None):
        self.graph, self.chosen, self.shapes = graph, chosen, shapes
        self.threads, self.use_mkldnn, self.repeats = threads, use_mkldnn, repeats
        self.gate, self.int8 = gate, int8
        self.overhead = None

    def _specs(self, a, b):
        """``{conv path: spec}`` that item ``(a, b)`` times."""
        if a == "base":
            g = next(g for g in self.chosen if b in g.producers or b in g.consumers)
            return {b: group_specs(self.graph, g, g.size, self.shapes)[b]}
        return group_specs(self.graph, self.graph.group(a), b, self.shapes)

    def prepare(self, todo):
        """INT8: quantize the programs of ``[(pass, a, b)]`` in one child process."""
        extra = [OVERHEAD_SPEC] if self.overhead is None else []    # one child for all
        self.int8.prepare(extra + [spec for _, a, b in todo
                                   for spec in self._specs(a, b).values()])

    def one(self, spec):
        """The conv's own time, without the run overhead."""
        if self.overhead is None:
            self.overhead = run_overhead(self.threads, self.use_mkldnn, int8=self.int8)
        if self.int8 is not None:
            ms = self.int8.time(spec, self.threads, repeats=self.repeats, gate=self.gate)
        else:
            ms = time_specs([spec], self.threads, self.use_mkldnn, repeats=self.repeats,
                            gate=self.gate)
        return max(ms - self.overhead, 0.0)

    def time_entry(self, path, key, a, b, p):
        """Time item ``(a, b)`` for pass ``p``; returns the table as written."""
        pieces = {u: self.one(spec) for u, spec in self._specs(a, b).items()}
        if a == "base":
            return _locked_update(path, key, lambda t: _keep_base(t, b, pieces[b], p))
        return _locked_update(path, key, lambda t: _keep_entry(t, a, b, pieces, p))


def _calibrate_whole(graph, cfg, path, key, table, image_size, threads, use_mkldnn, repeats,
                     rounds, gate):
    """Time the whole model unpruned and at the calibration plans (each plan's round
    timings kept in ``rounds``: their spread is the noise a prediction carries); returns
    the table."""
    from ppdet.slim.latency.table import key_precision
    plans = [{}, *calibration_plans(table)]
    times = []
    ms = measure_plans(graph, cfg, plans, image_size, threads, use_mkldnn, repeats,
                       rounds, gate, precision=key_precision(key), times=times)

    def keep_whole(t):
        t.full_ms = ms[0]
        t.calib = [{"plan": pl, "ms": m, "rounds": [round(x, 4) for x in r]}
                   for pl, m, r in zip(plans, ms, times)]
    return _locked_update(path, key, keep_whole)
