"""FLOPs and parameters of a model under any channel plan, without tracing again.

Counts come from the pruning graph and the per-layer output sizes one forward pass per image
size records, so searches over ratios are cheap. FLOPs follow paddleslim's ``dygraph_flops``
(multiply-adds, batch 1): conv ``h*w*out*k*k*in/groups``, batch norm ``2*numel``,
relu/relu6 ``numel`` (also after a shortcut add: a block's ``add_act``; max pooling is not
counted) (leaky relu, adds and conv biases are not counted: a dygraph conv adds
its bias in a separate op). A model with other counted ops (pool, sigmoid, fc) needs a term
in :meth:`Costs.flops`; ``tests/test_graph.py`` compares the count with paddleslim's on every
topology.
"""
import numpy as np
import paddle

from ppdet.modeling.surgery import Shift
from ppdet.slim.prune import criteria as crit
from ppdet.slim.prune.plan import ChannelPlan

__all__ = ["Costs", "count_flops", "count_params", "removed_for_ratios"]


_COUNTED_ACTS = ("relu", "relu6", "sigmoid")


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
            if isinstance(layer, (paddle.nn.Conv2D, paddle.nn.BatchNorm, paddle.nn.BatchNorm2D)) \
                    or getattr(layer, "add_act", None) in _COUNTED_ACTS \
                    or (isinstance(layer, Shift) and layer.act in _COUNTED_ACTS):
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
            elif getattr(layer, "add_act", None) in _COUNTED_ACTS:   # act after a shortcut add
                terms.append(("act", layer.add_bn.weight.name, h * w, 0, True))
            elif isinstance(layer, Shift):      # a removed block's act(x + c): C on axis 1
                terms.append(("shift_act", layer.weight.name, h * w, 0, True))
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
            elif kind == "act":
                total += hw * out
            elif kind == "shift_act":
                total += hw * count(name, 1, shape[1])
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
