"""Choosing pruning ratios: from a loss threshold, or by bisection to a FLOPs target."""
from ppdet.slim import compat
from ppdet.slim.pruner import FilterPruner, model_flops
from ppdet.utils.cli import UserError

__all__ = ["ratios_by_loss", "flops_after", "search_loss_for_flops", "uniform_ratio_for_flops"]


def ratios_by_loss(sensitivities, loss):
    """Per conv, the largest ratio whose loss stays under ``loss`` (paddleslim's rule,
    interpolated); convs that cannot be pruned within it are left out."""
    slim = compat.import_paddleslim()
    ratios = slim.prune.get_ratios_by_loss(sensitivities, loss)
    return {k: round(float(v), 4) for k, v in ratios.items() if v > 0}


def flops_after(model, ratios, image_size, pruner=None):
    """FLOPs of ``model`` pruned with ``ratios`` (the model is restored afterwards)."""
    pruner = pruner or FilterPruner(model)
    if not ratios:
        return model_flops(model, image_size)
    pruner.prune(ratios)
    try:
        return model_flops(model, image_size)
    finally:
        pruner.restore()


def search_loss_for_flops(model, sensitivities, target, image_size, tol=0.01, pruner=None,
                          max_iter=30):
    """Bisect the loss threshold until the FLOPs reduction is ``target`` (+-tol).

    Returns (threshold, ratios, reduction). Raises UserError if the target is out of reach.
    """
    if not 0 < target < 1:
        raise UserError(f"--target_flops {target} is outside (0, 1): it is the share of FLOPs "
                        f"to remove, e.g. 0.5")
    if not any(sensitivities.values()):
        raise UserError("the sensitivities file holds no measurements: let "
                        "slim/sensitive/sensitive.py finish (or merge its shards) first")
    pruner = pruner or FilterPruner(model)
    base = model_flops(model, image_size)
    hi = max(max(v.values()) for v in sensitivities.values() if v) + 1e-6
    reduction = lambda t: 1 - flops_after(model, ratios_by_loss(sensitivities, t),
                                          image_size, pruner) / base
    top = reduction(hi)
    if top < target - tol:
        raise UserError(f"pruning every analysed conv as far as measured removes only "
                        f"{top:.1%} of FLOPs, short of {target:.0%}: analyse more convs or "
                        f"larger ratios, or lower the target")
    # losses below 0 (pruning raised the mAP) are common on a well-trained model: a threshold
    # of 0 can already remove more than the target, so the search starts below the lowest
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


def uniform_ratio_for_flops(model, names, target, image_size, tol=0.01, pruner=None):
    """The one ratio for all ``names`` that removes ``target`` of the FLOPs."""
    pruner = pruner or FilterPruner(model)
    base = model_flops(model, image_size)
    reduction = lambda x: 1 - flops_after(model, {n: x for n in names}, image_size,
                                          pruner) / base
    lo, hi = 0.0, 0.95
    top = reduction(hi)
    if top < target - tol:
        raise UserError(f"pruning {len(names)} convs by 95% removes only {top:.1%} of FLOPs, "
                        f"short of {target:.0%}: it cannot be met without emptying layers; "
                        f"name more convs or lower --target_ratio")
    r = 0.0
    for _ in range(30):
        mid = (lo + hi) / 2
        r = reduction(mid)
        if abs(r - target) <= tol:
            return round(mid, 4), r
        lo, hi = (mid, hi) if r < target else (lo, mid)
    return round(hi, 4), r
