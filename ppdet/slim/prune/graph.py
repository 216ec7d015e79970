"""The pruning graph: which channels of a detector go together, traced once per model.

A **group** is the smallest set of tensors that lose the same channels: the conv whose
filters are removed (its *master*), its BN, the depthwise convs that follow it (and their
BN), convs tied to it by shortcut adds (and their BN and followers), and the input channels
of every conv that reads those channels, with their offsets through concat routes and 2x
upsampling. Everything that prunes, counts, masks or slims reads these groups.

Tracing goes through paddleslim (with the concat worker) in :func:`ppdet.slim.compat.
trace_groups`, which returns plain data; nothing here touches paddleslim. A group has

- ``key``: the layer path of its master conv (``backbone.blocks.3.sep.conv``), stable
  across processes and what saved plans are keyed by;
- ``name``: the master's static-era weight name (``conv4_1_sep_weights``), what users type,
  and ``names``: the weight names of all its regular producer convs;
- ``blocked``: why it cannot be pruned, or None.

Convs with no group of their own are listed in :attr:`PruneGraph.convs` with the reason
(depthwise follower, tied by a shortcut, prediction conv).
"""
from dataclasses import dataclass, field

import numpy as np
import paddle

from ppdet.slim import compat

__all__ = ["Member", "Group", "ConvEntry", "PruneGraph", "TRACE_SIZE", "trace_count"]

TRACE_SIZE = 64   # a small trace input: the graph is the same at any size, tracing is faster
_TRACES = [0]     # how many traces this process made (tests check searches never re-trace)


def trace_count():
    return _TRACES[0]


class _RawOutputs(paddle.nn.Layer):
    """``image -> raw head outputs``: what is traced (no post-processing)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, image):
        return self.model.head_outputs(image)


@dataclass
class Member:
    """One tensor axis of a group: ``channels[p]`` is the group channel carried at position
    ``p`` of ``axis`` (-1: a position another group, or none, owns)."""
    tensor: str              # static-era name of the parameter or BN buffer
    layer: str               # path of the layer holding it
    attr: str                # its attribute there: weight, bias, _mean, _variance
    axis: int
    channels: np.ndarray


@dataclass
class Group:
    key: str
    name: str
    size: int
    producers: list = field(default_factory=list)   # conv paths losing filters, master first
    depthwise: list = field(default_factory=list)   # the depthwise ones among them
    consumers: list = field(default_factory=list)   # conv paths losing input channels
    members: list = field(default_factory=list)
    blocked: str = None
    names: list = field(default_factory=list)       # weight names of the regular producers

    @property
    def shortcut(self):
        """Convs tied by a shortcut add (more than one regular producer)."""
        return len(self.producers) - len(self.depthwise) > 1


@dataclass
class ConvEntry:
    """Every conv in network order: its group (as producer) or why it has none."""
    path: str
    name: str                # weight name
    shape: list
    group: str = None        # key of the group whose filters it loses (None: none)
    role: str = ""           # master, depthwise, shortcut, prediction, unreached
    reason: str = ""         # why it cannot be named for pruning, when it cannot


def _signature(model):
    return (tuple((p.name, tuple(p.shape)) for p in model.parameters()),
            tuple(getattr(model, "removed_layers", [])))


def _channel_map(size, transforms, length):
    """Positions along a member axis -> master channel (-1 where none), from transforms."""
    ids = np.arange(size)
    for t in transforms:
        if "src_start" in t:
            part = ids[t["src_start"]:t["src_end"]]
            out = np.full(t["target_len"], -1)
            span = t["target_end"] - t["target_start"]
            out[t["target_start"]:t["target_end"]] = np.tile(part, span // max(len(part), 1))
            ids = out
        elif "stride" in t:
            ids = np.repeat(ids, t["stride"]) if t["stride"] > 1 else ids
        elif "repeat" in t and "tile" in t:
            ids = np.tile(np.repeat(ids, t["repeat"]), t["tile"])
        elif "repeat" in t:
            ids = np.repeat(ids, t["repeat"])
        elif t:
            return None                  # squeeze and the like: no exact channel map
    return ids if len(ids) == length else None


class PruneGraph:
    """The groups of ``model``, traced once. ``model`` must have ``head_outputs(image)``.

    The graph describes the model as it was traced; :mod:`ppdet.slim.plan` applies channel
    plans to it and counts FLOPs for any plan without tracing again.
    """

    def __init__(self, model, trace_size=TRACE_SIZE):
        self.model = model
        self.applied = None                      # the plan applied through this graph
        self.signature = _signature(model)
        self.base_cuts = dict(getattr(model, "channel_cuts", None) or {})  # earlier pruning
        self.layers = dict(model.named_sublayers())
        self.tensors = {}                        # name -> (layer path, attr, tensor)
        for path, layer in self.layers.items():
            for attr, t in list(layer._parameters.items()) + list(layer._buffers.items()):
                if t is not None:
                    self.tensors[t.name] = (path, attr, t)
        self.conv_paths = [p for p, m in self.layers.items()
                           if isinstance(m, paddle.nn.Conv2D)]
        was_training = model.training
        model.eval()
        try:
            traced = compat.trace_groups(_RawOutputs(model), [1, 3, trace_size, trace_size])
        finally:
            if was_training:
                model.train()
        _TRACES[0] += 1
        self.groups = []
        self._by_key, self._by_name = {}, {}
        for raw in traced["groups"]:
            group = self._make_group(raw)
            if group is not None:
                self.groups.append(group)
        order = {p: i for i, p in enumerate(self.conv_paths)}
        self.groups.sort(key=lambda g: order[g.key])
        for g in self.groups:
            self._by_key[g.key] = g
            for n in g.names:
                self._by_name.setdefault(n, g)
        self.convs = self._conv_entries()

    # --- building ---------------------------------------------------------------------
    def _make_group(self, raw):
        master = raw["master"]
        if master not in self.tensors:
            return None
        key = self.tensors[master][0]
        size = int(self.tensors[master][2].shape[0])
        group = Group(key=key, name=master, size=size)
        for name, axis, transforms in raw["members"]:
            path, attr, t = self.tensors[name]
            length = int(t.shape[axis])
            channels = _channel_map(size, transforms, length)
            if channels is None:
                group.blocked = f"{name} takes its channels through an op with no exact " \
                                f"channel map ({transforms})"
                channels = np.full(length, -1)
            group.members.append(Member(name, path, attr, axis, channels))
            layer = self.layers[path]
            if not isinstance(layer, paddle.nn.Conv2D) or attr != "weight":
                continue
            if axis == 0 and path not in group.producers:
                group.producers.append(path)
                if layer._groups > 1:
                    group.depthwise.append(path)
            elif axis == 1 and path not in group.consumers:
                group.consumers.append(path)
        if group.producers and group.producers[0] != key:
            group.producers.remove(key)
            group.producers.insert(0, key)
        group.names = [self.layers[p].weight.name for p in group.producers
                       if p not in group.depthwise]
        return group

    def _conv_entries(self):
        owner = {}
        for g in self.groups:
            for p in g.producers:
                owner.setdefault(p, g)
        entries = []
        outputs = self._output_convs()
        for path in self.conv_paths:
            conv = self.layers[path]
            e = ConvEntry(path, conv.weight.name, list(conv.weight.shape))
            g = owner.get(path)
            if g is not None:
                e.group = g.key
                if path == g.key:
                    e.role = "master"
                    if g.blocked:
                        e.reason = g.blocked
                elif path in g.depthwise:
                    e.role, e.reason = "depthwise", f"depthwise: pruned with {g.name}"
                else:
                    e.role, e.reason = "shortcut", f"tied by a shortcut add: pruned with {g.name}"
            elif path in outputs:
                e.role = "prediction"
                e.reason = "prediction conv: its channels are the detector's outputs"
            elif conv._groups > 1:
                e.role, e.reason = "depthwise", "depthwise: its channels follow its input"
            else:
                e.role = "unreached"
                e.reason = "its output reaches an op the pruning graph cannot follow"
            entries.append(e)
        return entries

    def _output_convs(self):
        """Convs whose output is a model output (found by a tiny forward, by layer)."""
        seen, hooks = {}, []
        for path in self.conv_paths:
            def hook(layer, inputs, output, _path=path):
                seen[id(output)] = _path
            hooks.append(self.layers[path].register_forward_post_hook(hook))
        was_training = self.model.training
        self.model.eval()
        try:
            with paddle.no_grad():
                outs = self.model.head_outputs(paddle.zeros([1, 3, TRACE_SIZE, TRACE_SIZE]))
        finally:
            for h in hooks:
                h.remove()
            if was_training:
                self.model.train()
        outs = outs if isinstance(outs, (list, tuple)) else [outs]
        return {seen[id(o)] for o in outs if id(o) in seen}

    @classmethod
    def of(cls, model):
        """The graph of ``model``, traced on first use and kept on the model until its
        structure changes (a plan applied through the cached graph keeps it)."""
        cached = getattr(model, "_ppdet_prune_graph", None)
        if cached is not None and (cached.applied is not None or
                                   cached.signature == _signature(model)):
            return cached
        graph = cls(model)
        model._ppdet_prune_graph = graph
        return graph

    # --- look-ups -----------------------------------------------------------------------
    def group(self, key_or_name):
        """The group with this key (layer path) or producer weight name."""
        g = self._by_key.get(key_or_name) or self._by_name.get(key_or_name)
        if g is None:
            raise KeyError(key_or_name)
        return g

    def has(self, key_or_name):
        return key_or_name in self._by_key or key_or_name in self._by_name

    @property
    def prunable(self):
        return [g for g in self.groups if g.blocked is None]

    def conv(self, name):
        """The :class:`ConvEntry` of a conv by weight name."""
        for e in self.convs:
            if e.name == name:
                return e
        raise KeyError(name)

    def value(self, tensor_name):
        """Current numpy value of a parameter or BN buffer."""
        return self.tensors[tensor_name][2].numpy()

    def bn_of(self, group, producer=None):
        """The BN scale tensor name right after ``producer`` (default: the master), if any."""
        producer = producer or group.key
        parent = producer.rsplit(".", 1)[0] if "." in producer else ""
        for m in group.members:
            if m.axis == 0 and m.attr == "weight" and m.layer != producer and \
                    isinstance(self.layers[m.layer], (paddle.nn.BatchNorm,
                                                      paddle.nn.BatchNorm2D)) and \
                    m.layer.rsplit(".", 1)[0] == parent:
                return m.tensor
        return None
