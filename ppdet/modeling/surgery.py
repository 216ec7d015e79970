"""Layer surgery: cut a layer's channels to kept indices, remove residual blocks, replay a
saved plan keyed by layer path. Knows layers, not pruning graphs (``ppdet.slim.plan``
decides what to cut; checkpoints replay it here without tracing anything).

A layer plan is ``{layer path: {"out": kept output channels, "in": kept input channels}}``
(``in`` only for convs; for a depthwise conv only ``out``).
"""
import numpy as np
import paddle

__all__ = ["set_tensor", "slice_layer", "replay", "layer_tensors", "remove_layers",
           "find_layer", "compose", "live_cuts", "Shift"]


class Shift(paddle.nn.Layer):
    """What a removed residual block leaves when its branch's constant output is folded:
    ``act(x + weight)``, ``weight`` [1, C, 1, 1] (the branch's output with its last BN's
    scales at zero). A parameter, so checkpoints carry it and channel pruning cuts it."""

    ACTS = (None, "relu")

    def __init__(self, channels, act=None, name="shift"):
        super().__init__()
        if act not in self.ACTS:        # a silent identity would change the model
            raise ValueError(f"Shift: activation {act!r} after a removed block is not "
                             f"supported (only {self.ACTS})")
        self.act = act
        with paddle.utils.unique_name.guard():      # fixed name, fresh name scope
            self.weight = self.create_parameter(
                [1, channels, 1, 1], attr=paddle.ParamAttr(name=f"{name}.offset"),
                default_initializer=paddle.nn.initializer.Constant(0.))

    def forward(self, x):
        y = x + self.weight
        return paddle.nn.functional.relu(y) if self.act == "relu" else y


def set_tensor(tensor, array):
    """Give ``tensor`` new data of any shape, keeping the object (optimizers hold it)."""
    inner = tensor.value().get_tensor()
    where = inner._place()
    place = paddle.CPUPlace() if where.is_cpu_place() else \
        paddle.CUDAPlace(where.gpu_device_id())
    inner.set(np.ascontiguousarray(array, dtype=np.asarray(array).dtype), place)


def layer_tensors(layer):
    """``{attr: tensor}`` of a layer's own parameters and buffers."""
    out = {k: v for k, v in layer._parameters.items() if v is not None}
    out.update({k: v for k, v in layer._buffers.items() if v is not None})
    return out


def _is_bn(layer):
    return isinstance(layer, (paddle.nn.BatchNorm, paddle.nn.BatchNorm2D))


def slice_layer(layer, out=None, in_=None):
    """Keep output channels ``out`` and input channels ``in_`` (indices) of a Conv2D or
    BatchNorm, in place. Conv attributes follow (a depthwise conv stays depthwise)."""
    if isinstance(layer, paddle.nn.Conv2D):
        depthwise = layer._groups > 1 and layer.weight.shape[1] == 1
        w = layer.weight.numpy()
        if out is not None:
            w = np.take(w, out, axis=0)
            if layer.bias is not None:
                set_tensor(layer.bias, np.take(layer.bias.numpy(), out, axis=0))
        if in_ is not None and not depthwise:
            if layer._groups != 1:
                raise ValueError("cannot cut the input channels of a grouped conv")
            w = np.take(w, in_, axis=1)
        set_tensor(layer.weight, w)
        out_c, in_g = layer.weight.shape[:2]
        if depthwise:
            layer._groups = out_c
            layer._in_channels = out_c
        else:
            layer._in_channels = in_g * layer._groups
        layer._out_channels = out_c
    elif _is_bn(layer):
        if out is not None:
            for t in layer_tensors(layer).values():
                set_tensor(t, np.take(t.numpy(), out, axis=0))
    elif isinstance(layer, Shift):
        kept = out if out is not None else in_
        if kept is not None:
            set_tensor(layer.weight, np.take(layer.weight.numpy(), kept, axis=1))
    else:
        raise ValueError(f"cannot cut channels of a {type(layer).__name__}")


def find_layer(model, path):
    layer = model
    for part in path.split("."):
        subs = layer._sub_layers
        if part not in subs:
            raise KeyError(path)
        layer = subs[part]
    return layer


def replay(model, layer_plan):
    """Cut every layer named in ``layer_plan`` (values are then loaded from weights)."""
    for path, cut in layer_plan.items():
        try:
            layer = find_layer(model, path)
        except KeyError:
            raise ValueError(f"it cuts layer '{path}', which this model lacks: wrong config "
                             f"for these weights?") from None
        slice_layer(layer, out=cut.get("out"), in_=cut.get("in"))
    model.channel_cuts = compose(getattr(model, "channel_cuts", None), layer_plan)
    return model


def live_cuts(model):
    """``model.channel_cuts`` without the layers removed since (what a checkpoint stores)."""
    out = {}
    for path, cut in (getattr(model, "channel_cuts", None) or {}).items():
        try:
            find_layer(model, path)
        except KeyError:
            continue
        out[path] = cut
    return out


def compose(first, then):
    """The layer plan that cuts as ``first`` followed by ``then`` (indices of ``then`` count
    the channels ``first`` left), relative to the uncut model."""
    out = {k: dict(v) for k, v in (first or {}).items()}
    for path, cut in (then or {}).items():
        done = out.setdefault(path, {})
        for side, kept in cut.items():
            done[side] = [int(i) for i in (np.asarray(done[side])[np.asarray(kept, "int64")]
                                           if side in done else kept)]
    return out


def remove_layers(model, paths, shifts=None):
    """Replace the sublayers at ``paths`` with identities (a residual block then passes its
    input through), or, for paths in ``shifts`` (``{path: [channels, act]}``), with a
    :class:`Shift` (its values are then set, or loaded from weights). Recorded on
    ``model.removed_layers`` / ``model.removed_shifts`` for checkpoints."""
    shifts = dict(shifts or {})
    for path in paths:
        parent_path, _, last = path.rpartition(".")
        try:
            parent = find_layer(model, parent_path) if parent_path else model
        except KeyError:
            parent = None
        if parent is None or last not in parent._sub_layers:
            raise ValueError(f"it removes layer '{path}', which this model lacks: "
                             f"wrong config for these weights?")
        if path in shifts:
            channels, act = shifts[path]
            frozen = all(p.stop_gradient for p in parent._sub_layers[last].parameters())
            shift = Shift(int(channels), act, name=path)
            shift.weight.stop_gradient = frozen     # a frozen stage stays frozen
            parent._sub_layers[last] = shift
        else:
            parent._sub_layers[last] = paddle.nn.Identity()
    model.removed_layers = list(getattr(model, "removed_layers", [])) + list(paths)
    model.removed_shifts = {**getattr(model, "removed_shifts", {}),
                            **{p: list(v) for p, v in shifts.items() if p in paths}}
    return model
