"""What one latency-table entry times: the convs a group's channel count changes.

For a group at ``k`` channels: its producers as deployed (conv + BN + activation), its
depthwise followers, and the input side of its consumers, each at its deploy input size
(one forward pass records them), everything else at full width.
"""
import numpy as np
import paddle

__all__ = ["group_specs"]


def _unit_of(graph, conv_path):
    """The deployed unit of a conv: its ConvBN parent (conv + BN + act), or the conv."""
    parent = conv_path.rpartition(".")[0]
    holder = graph.layers.get(parent)
    if holder is not None and getattr(holder, "conv", None) is graph.layers[conv_path]:
        return parent, holder
    return conv_path, graph.layers[conv_path]


def _input_shapes(graph, image_size):
    """``{conv path: [C, H, W] of its input}`` at the deploy size (one forward)."""
    shapes, hooks = {}, []
    for path in graph.conv_paths:
        def hook(layer, inputs, _path=path):
            shapes[_path] = [int(s) for s in inputs[0].shape[1:]]
        hooks.append(graph.layers[path].register_forward_pre_hook(hook))
    model = graph.model
    was_training = model.training
    model.eval()
    try:
        with paddle.no_grad():
            model.head_outputs(paddle.zeros([1, 3, int(image_size[0]), int(image_size[1])]))
    finally:
        for h in hooks:
            h.remove()
        if was_training:
            model.train()
    return shapes


def _conv_spec(graph, conv_path, in_ch, out_ch, hw):
    conv = graph.layers[conv_path]
    _, unit = _unit_of(graph, conv_path)
    dw = conv._groups > 1
    return {"in": int(in_ch), "out": int(out_ch), "k": list(conv._kernel_size),
            "stride": list(conv._stride), "padding": conv._padding,
            "dilation": list(conv._dilation), "groups": int(out_ch) if dw else 1,
            "bias": conv.bias is not None, "bn": unit is not conv,
            "act": getattr(unit, "act", None) if unit is not conv else None, "hw": list(hw)}


def group_specs(graph, group, kept, shapes):
    """``{conv path: spec}``: the layers whose shapes depend on ``group`` keeping ``kept``
    channels, everything else at full width."""
    specs = {}
    for p in group.producers:
        c, h, w = shapes[p]
        if p in group.depthwise:
            specs[p] = _conv_spec(graph, p, kept, kept, (h, w))
        else:
            specs[p] = _conv_spec(graph, p, c, kept, (h, w))
    for p in group.consumers:
        if p in group.producers:
            continue
        c, h, w = shapes[p]
        member = next(m for m in group.members if m.layer == p and m.axis == 1
                      and m.attr == "weight")
        per = np.bincount(member.channels[member.channels >= 0]).max() \
            if (member.channels >= 0).any() else 0
        in_ch = c - (group.size - kept) * int(per)
        specs[p] = _conv_spec(graph, p, in_ch, graph.layers[p]._out_channels, (h, w))
    return specs
