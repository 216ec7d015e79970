"""Channel plans on a :class:`~ppdet.slim.graph.PruneGraph`: make, apply, count, mask.

A :class:`ChannelPlan` is ``{group key: kept channel indices}``. Applying it cuts every
member of each group (producer filters, BN, depthwise followers, consumers' input channels
at their concat offsets) through :mod:`ppdet.modeling.surgery`. FLOPs and parameter counts
of any plan come from the graph and per-layer output sizes recorded by one forward pass per
image size: nothing is traced again, so searches over ratios are cheap. Fast evaluation
masks come from the same plan, for every producer layer whatever its class.

FLOPs follow paddleslim's ``dygraph_flops`` (multiply-adds, batch 1): conv
``h*w*out*k*k*in/groups``, batch norm ``2*numel``, relu/relu6 ``numel`` (leaky relu, adds
and conv biases are not counted: a dygraph conv adds its bias in a separate op). A model
with other counted ops (pool, sigmoid, fc) needs a term in :meth:`Costs.flops`;
``tests/test_graph.py`` compares the count with paddleslim's on every topology.
"""
import numpy as np
import paddle

from ppdet.modeling import surgery
from ppdet.slim import criteria as crit

__all__ = ["ChannelPlan", "make_plan", "layer_plan", "apply_plan", "Applied", "Costs",
           "removed_for_ratios", "count_flops", "count_params", "masks", "mask_units",
           "masked"]

_COUNTED_ACTS = ("relu", "relu6", "sigmoid")


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


# --- counting without tracing ------------------------------------------------------------

def _multiplicity(m):
    """Positions per group channel on a member axis (1 for plain and concat members)."""
    ch = m.channels[m.channels >= 0]
    if len(ch) == 0:
        return 0
    counts = np.bincount(ch)
    return int(counts.max())


class Costs:
    """FLOPs and parameters of ``graph``'s model under any plan, at ``image_size`` [H, W].

    One forward pass (batch 1) records the output size of every conv and BN; after that
    every count is arithmetic on the groups' removed channels.
    """

    def __init__(self, graph, image_size):
        if isinstance(graph, paddle.nn.Layer):       # a model as it is: no plans to count
            self.graph, self.model, self.groups = None, graph, []
            self.layers = dict(graph.named_sublayers())
        else:
            self.graph, self.model, self.groups = graph, graph.model, graph.groups
            self.layers = graph.layers
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self._cover = {}                       # (tensor name, axis) -> [(group key, mult)]
        for g in self.groups:
            for m in g.members:
                self._cover.setdefault((m.tensor, m.axis), []).append(
                    (g.key, _multiplicity(m)))
        self.params = [(t.name, list(t.shape)) for t in self.model.parameters()]
        self._terms = self._record()

    def _record(self):
        model, sizes, hooks = self.model, {}, []
        for path, layer in self.layers.items():
            if isinstance(layer, (paddle.nn.Conv2D, paddle.nn.BatchNorm, paddle.nn.BatchNorm2D)):
                def hook(lyr, inputs, output, _path=path):
                    sizes[_path] = (int(output.shape[2]), int(output.shape[3]))
                hooks.append(layer.register_forward_post_hook(hook))
        was_training = model.training
        model.eval()
        try:
            with paddle.no_grad():
                model.head_outputs(paddle.zeros([1, 3, *self.image_size]))
        finally:
            for h in hooks:
                h.remove()
            if was_training:
                model.train()
        terms = []
        for path, (h, w) in sizes.items():
            layer = self.layers[path]
            if isinstance(layer, paddle.nn.Conv2D):
                kh, kw = layer._kernel_size
                parent = self.layers.get(path.rpartition(".")[0]) if "." in path else None
                act = getattr(parent, "act", None) if getattr(parent, "conv", None) is layer \
                    else None
                terms.append(("conv", layer.weight.name, h * w, kh * kw,
                              act in _COUNTED_ACTS))
            else:
                terms.append(("bn", layer.weight.name, h * w, 0, False))
        return terms

    def _counter(self, removed):
        def count(tensor, axis, size):
            for key, mult in self._cover.get((tensor, axis), ()):
                size -= removed.get(key, 0) * mult
            return size
        return count

    def _removed(self, plan):
        if plan is None:
            return {}
        if isinstance(plan, ChannelPlan):
            return plan.removed(self.graph)
        return {self.graph.group(k).key: int(v) for k, v in plan.items()}

    def flops(self, plan=None):
        """FLOPs under ``plan`` (a ChannelPlan, or ``{group: channels removed}``)."""
        count = self._counter(self._removed(plan))
        shapes = dict(self.params)
        total = 0
        for kind, name, hw, k, act in self._terms:
            shape = shapes[name]
            out = count(name, 0, shape[0])
            if kind == "conv":
                total += hw * out * k * count(name, 1, shape[1])
                if act:
                    total += hw * out
            else:
                total += 2 * hw * out
        return int(total)

    def n_params(self, plan=None):
        count = self._counter(self._removed(plan))
        total = 0
        for name, shape in self.params:
            n = 1
            for axis, size in enumerate(shape):
                n *= count(name, axis, size)
            total += n
        return int(total)


def count_flops(model, image_size):
    """FLOPs of ``model`` as it is now (paddleslim's count, batch 1), without tracing."""
    return Costs(model, image_size).flops()


def count_params(model):
    return int(sum(np.prod(p.shape) for p in model.parameters()))


def removed_for_ratios(graph, ratios):
    """``{group key: channels removed}`` for ``{group or name: ratio}`` (what searches
    count with: FLOPs depend on how many channels go, not which)."""
    out = {}
    for name, ratio in ratios.items():
        g = graph.group(name)
        out[g.key] = crit.pruned_count(g.size, ratio)
    return out


# --- masks for fast evaluation -------------------------------------------------------------

def mask_units(graph):
    """``[(unit path, producer conv path, group key)]`` for every producer conv of every
    prunable group: the unit is the layer whose output carries the conv's channels after
    its BN and activation (a ConvBN-style parent), or the conv itself when no BN follows."""
    units = []
    for g in graph.prunable:
        for p in g.producers:
            parent = p.rpartition(".")[0]
            holder = graph.layers.get(parent)
            if holder is not None and getattr(holder, "conv", None) is graph.layers[p]:
                units.append((parent, p, g.key))
            elif graph.bn_of(g, p) is None:
                units.append((p, p, g.key))
            else:
                raise ValueError(f"{p}: its BN is not in the same layer, so its output cannot "
                                 f"be masked after the BN")
    return units


def masks(graph, plan, units=None):
    """``{unit path: float32 0/1 per output channel}`` for the units that ``plan`` cuts
    (every producer of a cut group). Zeroing a unit's output channels computes exactly
    what removing them does."""
    units = units or mask_units(graph)
    out = {}
    for unit, conv, key in units:
        kept = plan.get(key)
        if kept is None:
            continue
        g = graph.group(key)
        member = next(m for m in g.members if m.layer == conv and m.attr == "weight"
                      and m.axis == 0)
        keep = np.zeros(g.size, bool)
        keep[np.asarray(kept, dtype="int64")] = True
        ch = member.channels
        vec = np.where(ch >= 0, keep[np.clip(ch, 0, None)], True).astype("float32")
        out[unit] = vec * out.get(unit, 1.0)
    return out


class masked:
    """``with masked(graph, masks(graph, plan)):`` the model computes as if pruned (eager;
    forward hooks multiply each unit's output by its 0/1 vector)."""

    def __init__(self, graph, unit_masks):
        self.graph, self.unit_masks, self._hooks = graph, unit_masks, []

    def __enter__(self):
        for path, vec in self.unit_masks.items():
            m = paddle.to_tensor(np.asarray(vec, "float32").reshape([1, -1, 1, 1]))
            self._hooks.append(self.graph.layers[path].register_forward_post_hook(
                lambda layer, inputs, output, _m=m: output * _m))
        return self

    def __exit__(self, *exc):
        for h in self._hooks:
            h.remove()
        self._hooks = []
