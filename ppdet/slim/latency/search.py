"""Searches for a latency target on a measured table: per-conv ratios from the
sensitivities, or one uniform ratio snapped to the table's counts.

The searches predict with :func:`steady` (the table with its pieces smoothed to a line per
conv), the same prediction ``prune.py`` prints. :func:`solve_measured` matches a measured
quantity in few calls (bench/).
"""
import numpy as np

from ppdet.slim.prune.costs import removed_for_ratios
from ppdet.slim.prune.search import SearchError, ratios_by_loss

__all__ = ["latency_target", "steady", "ratios_for_latency", "uniform_ratio_for_latency",
           "solve_measured"]


def _smallest_meeting(meets, lo, hi, max_iter):
    """Bisect for the smallest x in [lo, hi] with ``meets(x)`` (``meets(hi)`` holds and
    ``meets`` is monotone): the least pruning that reaches a latency budget."""
    for _ in range(max_iter):
        mid = (lo + hi) / 2
        if meets(mid):
            hi = mid
        else:
            lo = mid
    return hi


def _loss_at(curve, ratio):
    """Sensitivity loss at ``ratio``, linear between measured ratios (0 at ratio 0);
    None beyond the largest measured ratio."""
    points = [(0.0, 0.0)] + sorted((float(r), float(v)) for r, v in curve.items())
    if ratio > points[-1][0] + 1e-9:
        return None
    for (r0, v0), (r1, v1) in zip(points, points[1:]):
        if ratio <= r1 + 1e-12:
            return v0 + (v1 - v0) * (ratio - r0) / max(r1 - r0, 1e-12)
    return points[-1][1]


def latency_target(table, target_ms=None, speedup=None):
    """``--target_latency MS`` or ``--target_speedup X`` -> milliseconds, checked against
    the unpruned prediction."""
    base = table.predict({})
    if speedup is not None:
        if speedup <= 1:
            raise SearchError(f"--target_speedup {speedup:g} is not above 1: ask for a "
                              f"faster model, e.g. 1.5")
        target_ms = base / speedup
    if target_ms >= base:
        raise SearchError(f"--target_latency {target_ms:.2f} ms is above the unpruned model's "
                          f"{base:.2f} ms on this target: nothing to prune; ask for less")
    return target_ms


def _line(points):
    """Theil-Sen line ``(a, b)`` through ``[(x, y)]``: the median of pairwise slopes, so a
    few wild points (a timing spike, a base measured in a slow minute) do not tilt it."""
    slopes = [(y1 - y0) / (x1 - x0) for i, (x0, y0) in enumerate(points)
              for x1, y1 in points[i + 1:] if x1 != x0]
    b = float(np.median(slopes)) if slopes else 0.0
    return float(np.median([y - b * x for x, y in points])), b


def steady(table):
    """A copy of ``table`` whose pieces follow a line in the group's count.

    Each conv's time with a group at ``k`` channels is ``base * line(k) / line(size)``,
    the line fitted (robustly, :func:`_line`) through the measured ratios ``piece / base``
    and never falling as ``k`` grows. Why: one-conv programs of the small convs show cliffs
    and dips (a count 3x faster than its neighbours, a base slower than every pruned
    count) that the whole exported model does not show (bench/HISTORY.md, "Latency
    target against FLOPs target"); a search over the raw table picks exactly those counts
    and misses its target. Whole-model calibration (``scale``, ``fixed``) is refitted on
    the steady pieces from the same two measurements."""
    from ppdet.slim.latency.table import LatencyTable
    entries = {}
    for g, e in table.entries.items():
        size = table.sizes[g]
        fitted = {k: {} for k in e}
        for u in {u for p in e.values() for u in p}:
            base = max(table.base[u], 1e-9)
            a, b = _line([(k, p[u] / base) for k, p in e.items() if u in p] + [(size, 1.0)])
            b = max(b, 0.0)                     # no evidence that pruning costs time
            top = a + b * size
            for k, p in e.items():
                if u in p:
                    fitted[k][u] = base * max(a + b * k, 0.0) / top if top > 0 else p[u]
        entries[g] = fitted
    return LatencyTable(table.key, entries, table.full_ms, table.sizes, table.path,
                        table.base, table.calib)


def _choices(table, graph, name, curve=None):
    """``[(kept, ratio, loss, ms)]`` for the table's counts of ``name``'s group."""
    g = graph.group(name)
    if g.key not in table.sizes:
        raise SearchError(f"the latency table has no entries for {g.name}: build it again "
                          f"with slim/prune/latency_table.py")
    out = []
    for k in table.counts(g.key):
        if k > g.size or k < 1:
            continue
        r = (g.size - k) / g.size
        loss = 0.0 if curve is None else _loss_at(curve, r)
        if loss is None:
            continue
        out.append((k, r, loss, table.group_ms(g.key, k)))
    if not any(k == g.size for k, *_ in out):
        out.append((g.size, 0.0, 0.0, table.group_ms(g.key, g.size)))
    return g.key, out


def _predict(table, picks):
    return table.predict({key: k for key, (k, *_) in picks.items()})


def ratios_for_latency(table, graph, sensitivities, target_ms, max_iter=60, smooth=True,
                       rule="sum"):
    """Ratios from the sensitivities that meet ``target_ms`` on the table (the
    :func:`steady` one with ``smooth``: the raw one's dips are what an optimiser finds
    first, and the whole model does not show them).

    ``rule="sum"`` (default): per conv the table count that loses the least summed
    sensitivity (each group picks ``argmin loss(k) + lam * T(group, k)``, ``lam``
    bisected). ``"threshold"``: the smallest loss threshold whose ratios
    (:func:`ratios_by_loss`, as ``--target_flops`` chooses) meet the budget, i.e. the
    FLOPs-target plan of the same predicted latency. On the tiny model the summed-loss
    plans kept far more mAP before fine-tuning and the same within a point after it
    (bench/HISTORY.md, "Latency target against FLOPs target").
    Returns ``(ratios {name: ratio}, predicted ms, summed loss)``."""
    table = steady(table) if smooth else table
    sensitivities = {n: c for n, c in sensitivities.items() if c}
    if rule == "threshold":
        return _threshold_for_latency(table, graph, sensitivities, target_ms, max_iter)
    if rule != "sum":
        raise ValueError(f"rule {rule!r}: threshold or sum")
    options = {}
    for name, curve in sensitivities.items():
        key, opts = _choices(table, graph, name, curve)
        options[key] = (name, opts)

    def pick(lam):
        return {key: min(opts, key=lambda o: (o[2] + lam * o[3], -o[0]))
                for key, (_, opts) in options.items()}

    fastest = {key: min(opts, key=lambda o: (o[3], -o[0])) for key, (_, opts) in
               options.items()}
    reach = _predict(table, fastest)
    if reach > target_ms:
        raise SearchError(_unreachable(reach, target_ms))
    lo, hi = 0.0, 1.0
    while _predict(table, pick(hi)) > target_ms and hi < 1e9:
        hi *= 4
    hi = _smallest_meeting(lambda x: _predict(table, pick(x)) <= target_ms, lo, hi, max_iter)
    best = pick(hi)
    if _predict(table, best) > target_ms:
        best = fastest
    ratios = {options[key][0]: round(o[1], 6) for key, o in best.items() if o[1] > 0}
    return ratios, _predict(table, best), sum(o[2] for o in best.values())


def _unreachable(reach, target_ms):
    return (f"pruning every analysed conv as far as measured reaches {reach:.2f} ms, above "
            f"the {target_ms:.2f} ms asked for: analyse more convs or larger ratios, or ask "
            f"for less")


def _threshold_for_latency(table, graph, sensitivities, target_ms, max_iter):
    """The smallest loss threshold whose :func:`ratios_by_loss` meet ``target_ms``."""
    for name in sensitivities:
        if graph.group(name).key not in table.sizes:
            raise SearchError(f"the latency table has no entries for {name}: build it "
                              f"again with slim/prune/latency_table.py")

    def ms(t):
        removed = removed_for_ratios(graph, ratios_by_loss(sensitivities, t))
        return table.predict({k: graph.group(k).size - v for k, v in removed.items()})
    losses = [x for c in sensitivities.values() for x in c.values()]
    hi = max([1.0, *losses]) + 1e-6
    if ms(hi) > target_ms:
        raise SearchError(_unreachable(ms(hi), target_ms))
    lo = min([-1.0, *losses]) - 1e-6            # pruning can raise the mAP: losses < 0
    t = lo if ms(lo) <= target_ms else _smallest_meeting(lambda x: ms(x) <= target_ms,
                                                         lo, hi, max_iter)
    ratios = ratios_by_loss(sensitivities, t)
    lost = sum(_loss_at(sensitivities[n], r) or 0.0 for n, r in ratios.items())
    return ratios, ms(t), lost


def _snap(opts, kept_raw):
    """The table count for ``kept_raw`` channels: of the measured counts either side of
    it, the one above when it is no slower (more channels for the same time), else the
    nearer one."""
    below = [o for o in opts if o[0] <= kept_raw] or [min(opts, key=lambda o: o[0])]
    above = [o for o in opts if o[0] >= kept_raw]
    down = max(below, key=lambda o: o[0])
    if not above:
        return down
    up = min(above, key=lambda o: o[0])
    if up[3] <= down[3] or up[0] - kept_raw < kept_raw - down[0]:
        return up
    return down


def _aligned(size, kept_raw, align):
    """``kept_raw`` rounded to a multiple of ``align`` (at least ``align``, at most
    ``size``)."""
    return min(size, max(align, int(round(kept_raw / align)) * align))


def uniform_ratio_for_latency(table, graph, names, target_ms, max_iter=40, smooth=True,
                              align=None):
    """One filter ratio for ``names``, bisected until the prediction meets ``target_ms``
    (on the :func:`steady` table with ``smooth``); each group's count snapped to a table
    count (:func:`_snap`), or with ``align`` rounded to a multiple of it (groups whose size
    is one; the table interpolates between its counts): ``prune.py --align`` rounds inside
    the search, so the rounded plan is the one that meets the budget.
    Returns ``(ratio, {name: ratio actually used}, predicted ms)``."""
    table = steady(table) if smooth else table
    from ppdet.slim.prune.criteria import pruned_count
    options = {}
    for name in names:
        key, opts = _choices(table, graph, name)
        options[key] = (name, graph.group(name).size, opts)

    def one(size, opts, r):
        kept_raw = size - pruned_count(size, r)
        if align and size % align == 0 and size > align:
            k = _aligned(size, kept_raw, align)
            return (k, (size - k) / size, 0.0, None)
        return _snap(opts, kept_raw)

    def picks(r):
        return {key: one(size, opts, r) for key, (_, size, opts) in options.items()}

    top = 0.95
    reach = _predict(table, picks(top))
    if reach > target_ms:
        raise SearchError(f"pruning {len(names)} convs by 95% reaches {reach:.2f} ms, above "
                          f"the {target_ms:.2f} ms asked for: name more convs or ask for less")
    lo, hi = 0.0, top
    hi = _smallest_meeting(lambda x: _predict(table, picks(x)) <= target_ms, lo, hi,
                           max_iter)
    best = picks(hi)
    ratios = {options[key][0]: round(o[1], 6) for key, o in best.items() if o[1] > 0}
    return round(hi, 4), ratios, _predict(table, best)


def solve_measured(measure, x0, slope, lo, hi, tol=0.02, max_iter=6):
    """A root of a monotone, noisy, costly ``measure(x)`` (e.g. the relative latency gap
    between a model pruned to ``x`` and a reference model, measured), in few calls.

    ``slope``: a guess of ``d measure / dx`` (from a predictor; its sign gives the
    direction). The first step follows it; then secant steps through the last two points,
    or, once points lie on both sides of zero, interpolation between the nearest on each
    side (so noise cannot throw the search out of the bracket). Stops at ``|measure| <=
    tol``, after ``max_iter`` calls, or when a step would repeat an ``x``.
    Returns ``(x, value, tries)``: the try nearest zero and every ``(x, value)``."""
    if not slope:
        raise ValueError("solve_measured needs a non-zero slope guess")
    tries = []
    x = min(max(x0, lo), hi)
    for _ in range(max_iter):
        y = float(measure(x))
        tries.append((x, y))
        if abs(y) <= tol:
            break
        below = [p for p in tries if p[1] < 0]
        above = [p for p in tries if p[1] > 0]
        if below and above:
            (xa, ya), (xb, yb) = max(below, key=lambda p: p[1]), min(above, key=lambda p: p[1])
            x = xa - ya * (xb - xa) / (yb - ya)
        else:
            s = slope
            if len(tries) >= 2:
                (xa, ya), (xb, yb) = tries[-2], tries[-1]
                if xb != xa and (yb - ya) / (xb - xa) * slope > 0:   # a usable secant
                    s = (yb - ya) / (xb - xa)
            x = x - y / s
        x = min(max(x, lo), hi)
        if any(abs(x - t) < 1e-6 for t, _ in tries):
            break
    best = min(tries, key=lambda p: abs(p[1]))
    return best[0], best[1], tries
