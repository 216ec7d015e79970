"""Searches that return pruning ratios (and plans): uniform, FLOPs target, loss threshold.

They count FLOPs with :class:`ppdet.slim.plan.Costs` on the one traced graph: FLOPs depend
only on how many channels each group loses, so no step prunes, re-traces or restores the
model. Channels are chosen by a criterion once, when the final plan is made.
"""
from ppdet.slim.plan import removed_for_ratios

__all__ = ["ratios_by_loss", "flops_reduction", "uniform_ratio_for_flops",
           "loss_for_flops", "SearchError"]


class SearchError(ValueError):
    """A target that cannot be met; the message says what to change."""


def ratios_by_loss(sensitivities, loss):
    """Per conv, the largest ratio whose measured loss stays at or under ``loss``, with the
    crossing interpolated linearly between the two measurements around it. Convs that no
    ratio keeps under ``loss`` are left out. ``sensitivities``: ``{name: {ratio: loss}}``."""
    out = {}
    for name, curve in sensitivities.items():
        points = sorted((float(r), float(v)) for r, v in curve.items())
        ok = [i for i, (_, v) in enumerate(points) if v <= loss]
        if not ok:
            continue
        i = ok[-1]
        r0, l0 = points[i]
        if i + 1 < len(points):
            r1, l1 = points[i + 1]
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


def loss_for_flops(costs, sensitivities, target, tol=0.01, max_iter=30):
    """Bisect the loss threshold until the FLOPs reduction is ``target`` (+-tol).
    Returns ``(threshold, ratios, reduction)``."""
    if not 0 < target < 1:
        raise SearchError(f"--target_flops {target} is outside (0, 1): it is the share of "
                          f"FLOPs to remove, e.g. 0.5")
    if not any(sensitivities.values()):
        raise SearchError("the sensitivities file holds no measurements: let "
                          "slim/sensitive/sensitive.py finish (or merge its shards) first")
    base = costs.flops()
    hi = max(max(v.values()) for v in sensitivities.values() if v) + 1e-6
    reduction = lambda t: flops_reduction(costs, ratios_by_loss(sensitivities, t), base)
    top = reduction(hi)
    if top < target - tol:
        raise SearchError(f"pruning every analysed conv as far as measured removes only "
                          f"{top:.1%} of FLOPs, short of {target:.0%}: analyse more convs or "
                          f"larger ratios, or lower the target")
    # a threshold of 0 can already remove more than the target when pruning raised the mAP
    lo = min(0.0, min(min(v.values()) for v in sensitivities.values() if v)) - 1e-6
    best = (hi, top)
    for _ in range(max_iter):
        mid = (lo + hi) / 2
        r = reduction(mid)
        if abs(r - target) <= tol:
            best = (mid, r)
            break
        if r < target:
            lo = mid
        else:
            hi, best = mid, (mid, r)
    threshold, r = best
    return threshold, ratios_by_loss(sensitivities, threshold), r
