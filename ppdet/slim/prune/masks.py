"""Channel masks for fast evaluation: a plan as 0/1 per producer channel.

Zeroing a group's channels at the output of each producer unit (after its BN and
activation) computes what cutting them computes, with every shape kept, so one compiled
program serves every plan (:mod:`ppdet.slim.sensitivity.fast_eval`).
"""
import numpy as np
import paddle

from ppdet.modeling.surgery import Shift

__all__ = ["mask_units", "masks", "masked"]


def _channel_axis(layer):
    """The weight axis of a unit's output channels: a Shift's ``[1, C, 1, 1]`` constant
    holds them on axis 1, a conv's filters on axis 0."""
    return 1 if isinstance(layer, Shift) else 0


def mask_units(graph):
    """``[(unit path, producer conv path, group key, channels)]`` for every producer conv of
    every prunable group: the unit is the layer whose output carries the conv's channels
    (``channels`` of them) after its BN and activation (a ConvBN-style parent), or the conv
    itself when no BN follows; and every :class:`~ppdet.modeling.surgery.Shift` in a group
    (a removed residual block's folded constant), unit and "producer" both its own path."""
    units = []

    def add(unit, conv, key):
        layer = graph.layers[conv]
        units.append((unit, conv, key, int(layer.weight.shape[_channel_axis(layer)])))

    for g in graph.prunable:
        for m in g.members:               # a removed block's constant: masked after it too
            if isinstance(graph.layers[m.layer], Shift) and m.attr == "weight":
                add(m.layer, m.layer, g.key)
        for p in g.producers:
            parent = p.rpartition(".")[0]
            holder = graph.layers.get(parent)
            if holder is not None and getattr(holder, "conv", None) is graph.layers[p]:
                add(parent, p, g.key)
            elif graph.bn_of(g, p) is None:
                add(p, p, g.key)
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
    for unit, conv, key, _ in units:
        kept = plan.get(key)
        if kept is None:
            continue
        g = graph.group(key)
        axis = _channel_axis(graph.layers[conv])
        member = next(m for m in g.members if m.layer == conv and m.attr == "weight"
                      and m.axis == axis)
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
