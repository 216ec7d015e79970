"""Searches that return pruning ratios: uniform, FLOPs target, loss threshold.

They count FLOPs with :class:`ppdet.slim.prune.costs.Costs` on the one traced graph: FLOPs
depend only on how many channels each group loses, so no step prunes, re-traces or restores
the model. Channels are chosen by a criterion once, when the final plan is made. Latency
targets live in :mod:`ppdet.slim.latency.search`.
"""
from ppdet.slim.prune.costs import removed_for_ratios

__all__ = ["SearchError", "ratios_by_loss", "flops_reduction", "uniform_ratio_for_flops",
           "loss_for_flops"]


class SearchError(ValueError):
    """A target that cannot be met; the message says what to change."""


def ratios_by_loss(sensitivities, loss):
    """Per conv, the ratio where its loss curve first passes ``loss``: the largest ratio
    before the first measurement above ``loss``, interpolated linearly toward that
    measurement. Convs whose first measurement is above ``loss`` are left out.
    ``sensitivities``: ``{name: {ratio: loss}}``.

    On a curve that rises steadily this is PaddleSlim's ``get_ratios_by_loss``. Where a
    curve dips back under ``loss`` after passing it (noise), the dip is not trusted; and
    so a file analysed with ``--stop_loss L`` (no ratio measured past a loss above L)
    gives the same ratios as the full grid for every ``loss`` below L."""
    out = {}
    for name, curve in sensitivities.items():
        points = sorted((float(r), float(v)) for r, v in curve.items())
        i = next((k for k, (_, v) in enumerate(points) if v > loss), len(points))
        if i == 0:
            continue
        r0, l0 = points[i - 1]
        if i < len(points):
            r1, l1 = points[i]
            r0 = r0 + (loss - l0) * (r1 - r0) / (l1 - l0)
        if r0 > 0:
            out[name] = round(r0, 4)
    return out


def flops_reduction(costs, ratios, base=None):
    """Share of FLOPs that ``{group or name: ratio}`` removes."""
    base = costs.flops() if base is None else base
    return 1 - costs.flops(removed_for_ratios(costs.graph, ratios)) / base


def uniform_ratio_for_flops(costs, names, target, tol=0.01, max_iter=30):
    """The one filter ratio for all ``names`` that removes ``target`` of the FLOPs.
    Returns ``(ratio, reduction)``."""
    base = costs.flops()
    reduction = lambda x: flops_reduction(costs, {n: x for n in names}, base)
    lo, hi = 0.0, 0.95
    top = reduction(hi)
    if top < target - tol:
        raise SearchError(f"pruning {len(names)} convs by 95% removes only {top:.1%} of "
                          f"FLOPs, short of {target:.0%}: it cannot be met without emptying "
                          f"layers; name more convs or lower --target_ratio")
    r = 0.0
    for _ in range(max_iter):
        mid = (lo + hi) / 2
        r = reduction(mid)
        if abs(r - target) <= tol:
            return round(mid, 4), r
        lo, hi = (mid, hi) if r < target else (lo, mid)
    return round(hi, 4), r


def loss_for_flops(costs, sensitivities, target, tol=0.01, max_iter=40):
    """The smallest loss threshold whose ratios remove at least ``target`` of the FLOPs
    (bisected to 1e-12 over a fixed range; an error when even the largest measured ratios
    fall ``tol`` short). Returns ``(threshold, ratios, reduction)``.

    Which thresholds are tried depends only on whether each removes the target, never on
    the largest loss in the file: so a file stopped at ``--stop_loss L`` gives the same
    answer as the full grid whenever that answer is below L."""
    if not 0 < target < 1:
        raise SearchError(f"--target_flops {target} is outside (0, 1): it is the share of "
                          f"FLOPs to remove, e.g. 0.5")
    if not any(sensitivities.values()):
        raise SearchError("the sensitivities file holds no measurements: let "
                          "slim/sensitive/sensitive.py finish (or merge its shards) first")
    base = costs.flops()
    losses = [x for v in sensitivities.values() for x in v.values()]
    hi = max(1.0, max(losses)) + 1e-6          # mAP >= 0, so every loss is <= 1
    reduction = lambda t: flops_reduction(costs, ratios_by_loss(sensitivities, t), base)
    top = reduction(hi)
    if top < target - tol:
        raise SearchError(f"pruning every analysed conv as far as measured removes only "
                          f"{top:.1%} of FLOPs, short of {target:.0%}: analyse more convs or "
                          f"larger ratios, or lower the target")
    if top < target:                        # within tol: as far as the file goes
        return hi, ratios_by_loss(sensitivities, hi), top
    # a threshold below 0 can already remove the target when pruning raised the mAP
    lo = min(-1.0, min(losses)) - 1e-6
    if reduction(lo) >= target:
        return lo, ratios_by_loss(sensitivities, lo), reduction(lo)
    for _ in range(max_iter):
        mid = (lo + hi) / 2
        if reduction(mid) >= target:
            hi = mid
        else:
            lo = mid
        if hi - lo < 1e-12:
            break
    return hi, ratios_by_loss(sensitivities, hi), reduction(hi)
