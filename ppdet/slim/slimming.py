"""Network slimming: channel and residual-layer pruning driven by BN scales.

The pruning groups come from the same traced dependency graph as filter pruning
(paddleslim's, with the ``compat`` concat worker): a group is every ConvBNLayer whose output
channels must move together (convs tied by a shortcut add, and the depthwise convs that
follow them), plus the convs that consume those channels.

Exactness: a channel whose BN scale is zero outputs the constant ``act(beta)``. Removing it
is exact when that constant is folded into each consumer (its BN mean, or its bias), which
holds when every consumer is a 1x1 conv: a constant map through a zero-padded 3x3 conv is
not constant at the border. Groups feeding a regular kxk conv are therefore not prunable
(``SlimGroup.blocked`` says why). The constants are read from the masked model itself (a
forward pass with the removed scales zeroed), so concat routes, upsampling and summed
shortcuts need no special cases.
"""
import math
from dataclasses import dataclass, field

import numpy as np
import paddle

from ppdet.modeling.layers import ConvBNLayer
from ppdet.slim.pruner import TRACE_SIZE, FilterPruner
from ppdet.utils.cli import UserError

__all__ = ["SlimGroup", "SlimGraph", "DW_RULES", "layer_masks", "global_threshold",
           "group_masks", "zero_scales", "prune_channels", "residual_blocks",
           "remove_layers", "prune_layers", "check_shortcuts"]

DW_RULES = ("max", "intersection")


@dataclass
class SlimGroup:
    master: str                                    # paddleslim's master conv weight
    layers: list = field(default_factory=list)     # ConvBNLayers that share the mask
    depthwise: list = field(default_factory=list)  # the depthwise ones among them
    consumers: list = field(default_factory=list)  # conv weight names reading the channels
    blocked: str = None                            # why the group cannot be pruned exactly

    @property
    def shortcut(self):
        return len(self.layers) - len(self.depthwise) > 1

    @property
    def channels(self):
        return self.layers[0].bn.weight.shape[0]


class SlimGraph:
    """The slimming groups of ``model``: traced once, reused by sparsity training and pruning.

    ``prune_mode`` 0: groups of a single regular conv (with its depthwise followers);
    1: also groups tied by shortcut adds (pruned with one union mask).
    """

    def __init__(self, model, prune_mode=0):
        if prune_mode not in (0, 1):
            raise UserError(f"--prune must be 0 or 1, got {prune_mode}")
        self.model = model
        self.prune_mode = prune_mode
        self.pruner = FilterPruner(model, "l1_norm")
        by_weight = {m.conv.weight.name: m for m in model.sublayers()
                     if isinstance(m, ConvBNLayer)}
        convs = {m.weight.name: m for m in model.sublayers()
                 if isinstance(m, paddle.nn.Conv2D)}
        self.groups = []
        for coll in self.pruner._pruner.collections:
            if coll.master_axis != 0 or coll.master_name not in by_weight:
                continue
            group = SlimGroup(coll.master_name)
            for d in coll.all_pruning_details():
                if d.name not in convs:
                    continue
                conv = convs[d.name]
                if d.axis == 0:
                    if d.name not in by_weight:
                        group.blocked = f"{d.name} has no BN after it"
                        continue
                    layer = by_weight[d.name]
                    if layer not in group.layers:
                        group.layers.append(layer)
                        if conv._groups > 1:
                            group.depthwise.append(layer)
                elif d.axis == 1 and d.name not in group.consumers:
                    group.consumers.append(d.name)
                    if max(conv._kernel_size) > 1 and group.blocked is None:
                        group.blocked = (f"feeds the {conv._kernel_size[0]}x"
                                         f"{conv._kernel_size[1]} conv {d.name}: its offsets "
                                         f"cannot be folded exactly")
                    elif d.name not in by_weight and conv.bias is None:
                        group.blocked = f"consumer {d.name} has neither BN nor bias"
            # regular convs first: the group is named after its first regular conv
            group.layers.sort(key=lambda m: m in group.depthwise)
            if group.shortcut and prune_mode == 0 and group.blocked is None:
                group.blocked = "tied by a shortcut add (use --prune 1)"
            self.groups.append(group)

    @property
    def prunable(self):
        return [g for g in self.groups if g.blocked is None]

    def scales(self):
        """The BN scale parameters that sparsity training pushes towards zero."""
        return [m.bn.weight for g in self.prunable for m in g.layers]


# --- choosing channels ----------------------------------------------------------------------

def _abs_gamma(layer):
    return np.abs(layer.bn.weight.numpy())


def global_threshold(graph, global_percent):
    """``(threshold, safe)``: |gamma| at ``global_percent`` over all prunable layers, and the
    largest threshold that leaves every layer a channel (the smallest per-layer maximum)."""
    if not 0 <= global_percent < 1:
        raise UserError(f"--global_percent must be in [0, 1), got {global_percent}")
    layers = [m for g in graph.prunable for m in g.layers]
    if not layers:
        raise UserError("no prunable layers in this model (slim_prune.py -v lists why each "
                        "group is left whole)")
    gammas = np.sort(np.concatenate([_abs_gamma(m) for m in layers]))
    threshold = float(gammas[min(int(len(gammas) * global_percent), len(gammas) - 1)])
    safe = float(min(_abs_gamma(m).max() for m in layers))
    return threshold, safe


def layer_masks(layer, threshold, layer_keep):
    """Keep |gamma| >= threshold, but at least ``layer_keep`` of the channels (largest first)."""
    gamma = _abs_gamma(layer)
    keep = gamma >= threshold
    least = int(math.ceil(len(gamma) * layer_keep))
    if keep.sum() < least:
        keep = np.zeros(len(gamma), bool)
        keep[np.argsort(-gamma, kind="stable")[:least]] = True
    return keep


def group_masks(graph, threshold, layer_keep=0.0, dw_rule="max"):
    """``{master: keep mask}`` for every prunable group.

    Convs tied by a shortcut keep the union of their masks (a channel goes only if every
    one of them drops it). Depthwise convs must keep what their input keeps:
    ``max`` takes the mask of whichever layer keeps more channels, ``intersection`` removes
    only channels that both sides would remove.
    """
    if dw_rule not in DW_RULES:
        raise UserError(f"--dw_rule must be one of {', '.join(DW_RULES)}, got '{dw_rule}'")
    if not 0 <= layer_keep <= 1:
        raise UserError(f"--layer_keep must be in [0, 1], got {layer_keep}")
    out = {}
    for g in graph.prunable:
        regular = [layer_masks(m, threshold, layer_keep) for m in g.layers
                   if m not in g.depthwise]
        keep = np.logical_or.reduce(regular)
        for m in g.depthwise:
            dw = layer_masks(m, threshold, layer_keep)
            if dw_rule == "intersection":
                keep = keep | dw
            elif dw.sum() > keep.sum():
                keep = dw
        out[g.master] = keep
    return out


# --- pruning --------------------------------------------------------------------------------

def zero_scales(graph, masks):
    """The masked model: scales of the channels to remove set to zero, in place."""
    for g in graph.prunable:
        keep = masks.get(g.master)
        if keep is None:
            continue
        for m in g.layers:
            gamma = m.bn.weight.numpy()
            gamma[~keep] = 0.0
            m.bn.weight.set_value(gamma)


def _consumer_inputs(model, names, image_size):
    """Run the (masked) model once and keep the input of each conv in ``names``."""
    seen, hooks = {}, []
    for layer in model.sublayers():
        if isinstance(layer, paddle.nn.Conv2D) and layer.weight.name in names:
            def hook(lyr, inputs, _name=layer.weight.name):
                seen[_name] = inputs[0].numpy()
            hooks.append(layer.register_forward_pre_hook(hook))
    was_training = model.training
    model.eval()
    try:
        with paddle.no_grad():
            rng = np.random.RandomState(0)
            model.head_outputs(paddle.to_tensor(
                rng.randn(1, 3, *image_size).astype("float32")))
    finally:
        for h in hooks:
            h.remove()
        if was_training:
            model.train()
    return seen


def prune_channels(graph, masks, image_size=(TRACE_SIZE, TRACE_SIZE)):
    """Remove the channels ``masks`` drops, folding their constant output into consumers.

    The result computes what the masked model (``zero_scales``) computes. Returns
    ``{layer name: (channels before, after)}`` for every ConvBNLayer of the pruned groups.
    """
    model = graph.model
    masks = {k: np.asarray(v, bool) for k, v in masks.items()}
    groups = {g.master: g for g in graph.prunable}
    unknown = [k for k in masks if k not in groups]
    if unknown:
        raise UserError(f"'{unknown[0]}' is not a prunable slimming group")
    masks = {k: v for k, v in masks.items() if not v.all()}
    if not masks:
        return {}
    for k, v in masks.items():
        if not v.any():
            raise UserError(f"the mask for {k} removes every channel")
    zero_scales(graph, masks)
    # the traced pruner, told to cut exactly these channels (1 = keep)
    pruner = graph.pruner._pruner
    pruner.cal_mask = lambda ratio, coll, num_head=-1: masks[coll.master_name].astype("int32")
    try:
        plan = pruner.prune_vars({k: 1 - v.mean() for k, v in masks.items()}, 0, apply=None)
    finally:
        del pruner.cal_mask
    convs = {m.weight.name: m for m in model.sublayers() if isinstance(m, paddle.nn.Conv2D)}
    by_weight = {m.conv.weight.name: m for m in model.sublayers()
                 if isinstance(m, ConvBNLayer)}
    removed_inputs = {}
    for name, pmasks in plan._masks.items():
        conv = convs.get(name)
        if conv is None or conv._groups > 1:
            continue
        for pm in pmasks:
            dims = pm.dims if isinstance(pm.dims, (list, tuple)) else [pm.dims]
            if 1 in dims:
                removed_inputs[name] = np.flatnonzero(np.asarray(pm.mask) == 0)
    seen = _consumer_inputs(model, set(removed_inputs), image_size)
    for name, idx in removed_inputs.items():
        if len(idx) == 0:
            continue
        x = seen[name][0, idx]                       # [removed, H, W]: constant maps
        value = x.reshape(len(idx), -1).mean(axis=1)
        spread = float(np.abs(x - value[:, None, None]).max())
        if spread > 1e-4 * (1 + float(np.abs(value).max())):
            raise RuntimeError(f"removed inputs of {name} are not constant ({spread:.2e}): "
                               f"the slimming groups are wrong")
        weight = convs[name].weight.numpy()[:, idx]  # [out, removed, kh, kw]
        delta = (weight.sum(axis=(2, 3)) * value[None, :]).sum(axis=1)
        if name in by_weight:                        # conv -> BN: shift the running mean
            bn = by_weight[name].bn
            bn._mean.set_value(bn._mean.numpy() - delta.astype("float32"))
        else:                                        # conv with bias (an output conv)
            bias = convs[name].bias
            bias.set_value(bias.numpy() + delta.astype("float32"))
    before = {m.name: m.bn.weight.shape[0] for k in masks for m in groups[k].layers}
    plan.apply(model, lazy=False, opt=None, prune_type=pruner.prune_type)
    graph.pruner.drop_backups()
    return {m.name: (before[m.name], m.bn.weight.shape[0])
            for k in masks for m in groups[k].layers}


# --- layer pruning --------------------------------------------------------------------------

def residual_blocks(model):
    """``[(path, block, mean |gamma| of the BN feeding its add)]`` for blocks with a shortcut."""
    out = []
    for path, layer in model.named_sublayers():
        if getattr(layer, "use_shortcut", False):
            bn = layer.linear.bn
            out.append((path, layer, float(np.abs(bn.weight.numpy()).mean())))
    return out


def remove_layers(model, paths):
    """Replace the sublayers at ``paths`` with identities (a residual block then passes its
    input through: the add of a removed branch). Recorded on the model for checkpoints."""
    for path in paths:
        parent, parts = model, path.split(".")
        for part in parts[:-1]:
            if part not in parent._sub_layers:
                raise ValueError(f"it removes layer '{path}', which this model lacks: "
                                 f"wrong config for these weights?")
            parent = parent._sub_layers[part]
        if parts[-1] not in parent._sub_layers:
            raise ValueError(f"it removes layer '{path}', which this model lacks: "
                             f"wrong config for these weights?")
        parent._sub_layers[parts[-1]] = paddle.nn.Identity()
    model.removed_layers = list(getattr(model, "removed_layers", [])) + list(paths)
    return model


def check_shortcuts(model, n):
    count = len(residual_blocks(model))
    if not 0 <= n <= count:
        raise UserError(f"--shortcuts {n}: this model has {count} residual blocks; use "
                        f"0..{count}")


def prune_layers(model, n):
    """Remove the ``n`` residual blocks whose add-feeding BN has the smallest mean |gamma|.
    Returns ``[(path, mean |gamma|)]`` of the removed blocks."""
    blocks = residual_blocks(model)
    check_shortcuts(model, n)
    weakest = sorted(blocks, key=lambda b: b[2])[:n]
    remove_layers(model, [p for p, _, _ in weakest])
    return [(p, s) for p, _, s in weakest]
