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
from ppdet.slim.latency.timing import STAT, _forget_stale_traces, run_overhead, time_specs

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
                  rounds=CALIB_ROUNDS, gate=None):
    """ms of the whole exported model under each plan (``{group: kept}``): exported once
    each, then measured in turn for ``rounds`` rounds (a new predictor each time, after
    ``gate.wait()`` when a :class:`QuietGate` is given), the fastest per plan, so a slow
    minute or a slow predictor weighs on no plan alone."""
    from ppdet.engine.export import export_model
    from ppdet.engine.latency import measure_latency
    from ppdet.slim.prune.plan import ChannelPlan, apply_plan
    best = [float("inf")] * len(plans)
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
        for _ in range(max(int(rounds), 1)):
            for i, d in enumerate(dirs):
                if gate is not None:
                    gate.wait()
                best[i] = min(best[i], measure_latency(
                    d, image_size, use_mkldnn=use_mkldnn, warmup=5, repeats=repeats,
                    threads=threads, stat=STAT))
    return best


def build_table(graph, cfg, path, image_size, threads=1, use_mkldnn=True, step=8,
                max_counts=None, extra_counts=None, groups=None, repeats=30, progress=True,
                on_entry=None, log=print, passes=None, rounds=CALIB_ROUNDS, quiet=True):
    """Measure what ``path`` lacks and return the table. Resumable: entries already in the
    file are kept (a file for another target is refused before anything is measured).
    Each conv is timed on its own (a one-conv program), every entry ``passes`` times
    (default :data:`PASSES`), one pass over the whole table after another, the fastest
    kept: a burst of load on the machine then spoils one pass of an entry, not the entry.
    Then the whole model, unpruned and at :func:`calibration_plans`, in ``rounds`` rounds.
    ``extra_counts``: ``{group key: [counts]}`` measured too; ``groups``: only these keys (tests);
    ``on_entry(n)`` is called after each timing of an entry; ``quiet``: every timing waits
    for a quiet machine first (:class:`QuietGate`)."""
    key = target_key(graph, image_size, threads, use_mkldnn, cfg.get("filename", ""))
    have = LatencyTable.load(path, key) if os.path.isfile(path) else LatencyTable(key)
    chosen, items = work_items(graph, step, max_counts, extra_counts, groups)
    passes = PASSES if passes is None else max(int(passes), 1)
    todo = _timings_to_take(have, items, passes)
    sizes = {g.key: g.size for g in chosen}
    table = _locked_update(path, key, lambda t: t.sizes.update(sizes))
    need_whole = table.calib is None
    if todo or need_whole:
        log(f"latency table {path}: {len(todo)} timings to take ({passes} per entry, "
            f"{len(items) * passes - len(todo)} already there)")
    shapes = _input_shapes(graph, image_size) if todo else {}
    bar = None
    if progress and todo:
        from tqdm import tqdm
        bar = tqdm(total=len(todo), desc="latency table", unit="entry")
    gate = quiet_gate(threads, use_mkldnn) if quiet and (todo or need_whole) else None
    timer = _EntryTimer(graph, chosen, shapes, threads, use_mkldnn, repeats, gate,
                        run_overhead(threads, use_mkldnn) if todo else 0.0)
    try:
        for n, (p, a, b) in enumerate(todo, 1):
            table = timer.time_entry(path, key, a, b, p)
            if bar is not None:
                bar.update(1)
            if on_entry is not None:
                on_entry(n)
    finally:
        if bar is not None:
            bar.close()
    if need_whole:
        table = _calibrate_whole(graph, cfg, path, key, table, image_size, threads,
                                 use_mkldnn, repeats, rounds, gate)
    if gate is not None:
        log(gate.summary())
    return table


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
    it to the table file under its lock."""

    def __init__(self, graph, chosen, shapes, threads, use_mkldnn, repeats, gate, overhead):
        self.graph, self.chosen, self.shapes = graph, chosen, shapes
        self.threads, self.use_mkldnn, self.repeats = threads, use_mkldnn, repeats
        self.gate, self.overhead = gate, overhead

    def one(self, spec):
        """The conv's own time, without the run overhead."""
        return max(time_specs([spec], self.threads, self.use_mkldnn, repeats=self.repeats,
                              gate=self.gate) - self.overhead, 0.0)

    def time_entry(self, path, key, a, b, p):
        """Time item ``(a, b)`` for pass ``p``; returns the table as written."""
        graph = self.graph
        if a == "base":
            g = next(g for g in self.chosen if b in g.producers or b in g.consumers)
            ms = self.one(group_specs(graph, g, g.size, self.shapes)[b])
            return _locked_update(path, key, lambda t: _keep_base(t, b, ms, p))
        g = graph.group(a)
        pieces = {u: self.one(spec) for u, spec in
                  group_specs(graph, g, b, self.shapes).items()}
        return _locked_update(path, key, lambda t: _keep_entry(t, a, b, pieces, p))


def _calibrate_whole(graph, cfg, path, key, table, image_size, threads, use_mkldnn, repeats,
                     rounds, gate):
    """Time the whole model unpruned and at the calibration plans; returns the table."""
    plans = [{}, *calibration_plans(table)]
    ms = measure_plans(graph, cfg, plans, image_size, threads, use_mkldnn, repeats,
                       rounds, gate)

    def keep_whole(t):
        t.full_ms = ms[0]
        t.calib = [{"plan": pl, "ms": m} for pl, m in zip(plans, ms)]
    return _locked_update(path, key, keep_whole)
