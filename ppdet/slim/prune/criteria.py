"""Pruning criteria: small callables ``criterion(graph, group) -> scores``, one per channel.

A higher score means a more important channel; the lowest-scoring channels go. Adding a
criterion is adding one function here and one entry in ``CRITERIA`` (the tools' choices are
read from it). Scores are read from
the model's current weights (the group's master conv, or its BN).

Selectors turn scores and a ratio into the kept channels: ``default`` removes
``round(ratio * channels)`` (never all), ``optimal_threshold`` removes the smallest scores
whose squares add up to at most ``ratio`` of the total (PaddleSlim's rule for BN scales).
"""
import numpy as np

__all__ = ["l1", "l2", "fpgm", "bn_scale", "CRITERIA", "SELECTORS", "criterion",
           "kept_channels", "pruned_count"]


def _filters(graph, group):
    w = graph.value(group.name)
    return w.reshape(w.shape[0], -1)


def l1(graph, group):
    """Mean |w| of each filter of the master conv."""
    return np.mean(np.abs(graph.value(group.name)), axis=(1, 2, 3))


def l2(graph, group):
    """L2 norm of each filter of the master conv."""
    return np.sqrt(np.sum(np.square(graph.value(group.name)), axis=(1, 2, 3)))


def fpgm(graph, group):
    """Sum of distances to the other filters (filters near the geometric median are the
    most replaceable, so they score lowest)."""
    w = _filters(graph, group)
    scores = np.empty(len(w), dtype=w.dtype)
    for i in range(len(w)):         # row by row, in float32: the order paddleslim finds
        d = w - w[i]
        scores[i] = np.sqrt(np.sum(d * d, -1)).sum()
    return scores


def bn_scale(graph, group):
    """|gamma| of the BN right after the master conv."""
    bn = graph.bn_of(group)
    if bn is None:
        raise ValueError(f"{group.name} has no BN after it: bn_scale needs one")
    return np.abs(graph.value(bn))


CRITERIA = {"l1_norm": l1, "l2_norm": l2, "fpgm": fpgm, "geometry_median": fpgm,
            "bn_scale": bn_scale}


def criterion(name):
    if callable(name):
        return name
    if name not in CRITERIA:
        raise KeyError(f"unknown criterion '{name}': choose one of {', '.join(CRITERIA)}")
    return CRITERIA[name]


def pruned_count(size, ratio):
    """Channels ``ratio`` removes from ``size``: round(size * ratio), never all."""
    return min(size - 1, int(round(size * float(ratio))))


def _by_count(scores, ratio):
    return pruned_count(len(scores), ratio)


def _by_energy(scores, ratio):
    s = np.sort(np.abs(scores), kind="stable")
    energy = np.cumsum(s.astype("float64") ** 2) / max(float((s.astype("float64") ** 2)
                                                             .sum()), 1e-12)
    return min(len(s) - 1, int(np.searchsorted(energy, ratio, side="right")))


SELECTORS = {"default": _by_count, "optimal_threshold": _by_energy}


def kept_channels(scores, ratio, selector="default"):
    """Sorted indices of the channels kept when ``ratio`` of them go by ``scores``."""
    n = SELECTORS[selector](scores, ratio)
    order = np.argsort(scores, kind="stable")
    return np.sort(order[n:]).astype("int64")
