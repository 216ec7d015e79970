"""Channel plans on a :class:`~ppdet.slim.prune.graph.PruneGraph`: make and apply.

A :class:`ChannelPlan` is ``{group key: kept channel indices}``: the one meaning of "plan"
in the pruning core. Applying it cuts every member of each group (producer filters, BN,
depthwise followers, consumers' input channels at their concat offsets) through
:mod:`ppdet.modeling.surgery`; :func:`layer_plan` turns it into the per-layer record a
checkpoint replays.
"""
import numpy as np

from ppdet.modeling import surgery
from ppdet.slim.prune import criteria as crit

__all__ = ["ChannelPlan", "make_plan", "layer_plan", "Applied", "apply_plan"]


class ChannelPlan(dict):
    """``{group key: sorted kept channel indices}``; groups not named keep everything."""

    def to_json(self):
        return {k: [int(i) for i in v] for k, v in self.items()}

    @classmethod
    def from_json(cls, data):
        return cls({k: np.asarray(v, dtype="int64") for k, v in (data or {}).items()})

    def removed(self, graph):
        """``{group key: number of channels removed}``."""
        return {k: graph.group(k).size - len(v) for k, v in self.items()}


def make_plan(graph, ratios, criterion="l1_norm", selector="default"):
    """``{group key or weight name: ratio}`` -> :class:`ChannelPlan` chosen by ``criterion``
    (a name in ``criteria.CRITERIA`` or a callable ``(graph, group) -> scores``)."""
    score = crit.criterion(criterion)
    plan = ChannelPlan()
    for name, ratio in ratios.items():
        g = graph.group(name)
        if g.blocked:
            raise ValueError(f"{g.name} cannot be pruned: {g.blocked}")
        if float(ratio) <= 0:
            continue
        plan[g.key] = crit.kept_channels(np.asarray(score(graph, g)), ratio, selector)
    return plan


def _kept_positions(graph, plan):
    """``{(layer path, attr, axis): kept positions}`` for every tensor axis the plan cuts."""
    drop = {}
    for key, kept in plan.items():
        g = graph.group(key)
        gone = np.ones(g.size, bool)
        gone[np.asarray(kept, dtype="int64")] = False
        if not gone.any():
            continue
        for m in g.members:
            hit = (m.channels >= 0) & gone[np.clip(m.channels, 0, None)]
            k = (m.layer, m.attr, m.axis)
            drop[k] = drop.get(k, np.zeros(len(m.channels), bool)) | hit
    return {k: np.flatnonzero(~v) for k, v in drop.items()}


def layer_plan(graph, plan):
    """The plan as ``{layer path: {"out": kept, "in": kept}}`` (what checkpoints store and
    :func:`ppdet.modeling.surgery.replay` cuts)."""
    out = {}
    for (path, attr, axis), kept in _kept_positions(graph, plan).items():
        if attr != "weight":                      # bias / BN buffers follow the weight
            continue
        out.setdefault(path, {})["out" if axis == 0 else "in"] = [int(i) for i in kept]
    return out


class Applied:
    """A plan applied to a model; :meth:`restore` gives the model back as traced."""

    def __init__(self, graph, plan, backup):
        self.graph, self.plan, self._backup = graph, plan, backup

    def restore(self):
        for path, (tensors, attrs) in self._backup.items():
            layer = self.graph.layers[path]
            for t, value in tensors:
                surgery.set_tensor(t, value)
            for k, v in attrs.items():
                setattr(layer, k, v)
        self._backup = {}
        self.graph.model.channel_cuts = dict(self.graph.base_cuts)
        if self.graph.applied is self:
            self.graph.applied = None

    def forget(self):
        """Make the pruning permanent (drop the backups)."""
        self._backup = {}
        if self.graph.applied is self:
            self.graph.applied = None


def apply_plan(graph, plan, keep_backup=True):
    """Cut the model in place. A plan applied earlier through ``graph`` is undone first (a
    plan is always relative to the model as traced). Returns :class:`Applied`."""
    if getattr(graph, "applied", None) is not None:
        graph.applied.restore()
    cuts = layer_plan(graph, plan)
    backup = {}
    for path, cut in cuts.items():
        layer = graph.layers[path]
        if keep_backup:
            backup[path] = ([(t, t.numpy()) for t in surgery.layer_tensors(layer).values()],
                            {k: getattr(layer, k) for k in ("_groups", "_in_channels",
                                                            "_out_channels")
                             if hasattr(layer, k)})
        surgery.slice_layer(layer, out=cut.get("out"), in_=cut.get("in"))
    graph.model.channel_cuts = surgery.compose(graph.base_cuts, cuts)
    applied = Applied(graph, plan, backup)
    graph.applied = applied if keep_backup else None
    return applied
