"""Network slimming: channel and residual-layer pruning driven by BN scales.

The groups are the pruning graph's (:class:`ppdet.slim.graph.PruneGraph`): a group is every
ConvBNLayer whose output channels must move together (convs tied by a shortcut add, and the
depthwise convs that follow them), plus the convs that consume those channels.

Exactness: a channel whose BN scale is zero outputs the constant ``act(beta)``. Removing it
is exact when that constant is folded into each consumer (its BN mean, or its bias), which
holds when every consumer is a 1x1 conv: a constant map through a zero-padded 3x3 conv is
not constant at the border. Groups feeding a regular kxk conv are therefore not prunable
(``SlimGroup.blocked`` says why) unless ``prune_mode`` 2 asks for the fold that is exact
inside the image only (seed 002's; DarkNet / ResNet need it). The constants are read from
the masked model itself (a forward pass with the removed scales zeroed), so concat routes,
upsampling and summed shortcuts need no special cases.
"""
import math
from dataclasses import dataclass, field

import numpy as np
import paddle

from ppdet.core.errors import UserError
from ppdet.slim.prune.graph import TRACE_SIZE, PruneGraph
from ppdet.slim.prune.plan import ChannelPlan, apply_plan, layer_plan

__all__ = ["DW_RULES", "SlimGroup", "SlimGraph", "global_threshold", "layer_masks", "group_masks",
           "zero_scales", "prune_channels"]


DW_RULES = ("max", "intersection")


@dataclass
class SlimGroup:
    master: str                                    # the group's master conv weight
    key: str = ""                                  # the pruning graph's group key
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


def _conv_bn(graph, conv_path):
    """The Conv+BN layer whose ``conv`` is the conv at ``conv_path``, or None."""
    parent = graph.layers.get(conv_path.rpartition(".")[0])
    if parent is not None and getattr(parent, "conv", None) is graph.layers[conv_path] and \
            getattr(parent, "bn", None) is not None:
        return parent
    return None


class SlimGraph:
    """The slimming view of the pruning graph of ``model``, reused by sparsity training and
    pruning.

    ``prune_mode`` 0: groups of a single regular conv (with its depthwise followers);
    1: also groups tied by shortcut adds (pruned with one union mask); 2: also groups that
    feed a kxk conv (their offsets are folded as a 1x1 conv would see them: exact inside
    the image, not on its border of (k - 1) / 2 pixels, which fine-tuning makes up; seed
    002's way, and what makes DarkNet / ResNet backbones prunable at all).
    """

    def __init__(self, model, prune_mode=0):
        if prune_mode not in (0, 1, 2):
            raise UserError(f"--prune must be 0, 1 or 2, got {prune_mode}")
        self.model = model
        self.prune_mode = prune_mode
        self.graph = PruneGraph.of(model)
        self.groups = []
        for g in self.graph.groups:
            if _conv_bn(self.graph, g.key) is None:
                continue
            group = SlimGroup(g.name, key=g.key, blocked=g.blocked)
            for path in g.producers:
                layer = _conv_bn(self.graph, path)
                if layer is None:
                    group.blocked = group.blocked or \
                        f"{self.graph.layers[path].weight.name} has no BN after it"
                    continue
                group.layers.append(layer)
                if path in g.depthwise:
                    group.depthwise.append(layer)
            for path in g.consumers:
                conv = self.graph.layers[path]
                group.consumers.append(conv.weight.name)
                if group.blocked is not None:
                    continue
                if max(conv._kernel_size) > 1 and prune_mode < 2:
                    group.blocked = (f"feeds the {conv._kernel_size[0]}x"
                                     f"{conv._kernel_size[1]} conv {conv.weight.name}: its "
                                     f"offsets cannot be folded exactly")
                elif _conv_bn(self.graph, path) is None and conv.bias is None:
                    group.blocked = f"consumer {conv.weight.name} has neither BN nor bias"
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


def _consumer_inputs(model, layers, image_size):
    """Run the (masked) model once and keep the input of each layer in ``layers``
    (``{path: layer}``)."""
    seen, hooks = {}, []
    for path, layer in layers.items():
        def hook(lyr, inputs, _path=path):
            seen[_path] = inputs[0].numpy()
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
    model, pgraph = graph.model, graph.graph
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
    plan = ChannelPlan({groups[k].key: np.flatnonzero(v) for k, v in masks.items()})
    cuts = layer_plan(pgraph, plan)
    removed = {}                                  # consumer conv path -> removed inputs
    for path, cut in cuts.items():
        layer = pgraph.layers[path]
        if isinstance(layer, paddle.nn.Conv2D) and layer._groups == 1 and "in" in cut:
            removed[path] = np.setdiff1d(np.arange(layer.weight.shape[1]), cut["in"])
    seen = _consumer_inputs(model, {p: pgraph.layers[p] for p in removed}, image_size)
    for path, idx in removed.items():
        if len(idx) == 0:
            continue
        conv = pgraph.layers[path]
        x = seen[path][0, idx]                       # [removed, H, W]: constant maps
        value = x.reshape(len(idx), -1).mean(axis=1)
        spread = float(np.abs(x - value[:, None, None]).max())
        if spread > 1e-4 * (1 + float(np.abs(value).max())):
            raise RuntimeError(f"removed inputs of {conv.weight.name} are not constant "
                               f"({spread:.2e}): the slimming groups are wrong")
        weight = conv.weight.numpy()[:, idx]         # [out, removed, kh, kw]
        delta = (weight.sum(axis=(2, 3)) * value[None, :]).sum(axis=1)
        owner = _conv_bn(pgraph, path)
        if owner is not None:                        # conv -> BN: shift the running mean
            bn = owner.bn
            bn._mean.set_value(bn._mean.numpy() - delta.astype("float32"))
        else:                                        # conv with bias (an output conv)
            conv.bias.set_value(conv.bias.numpy() + delta.astype("float32"))
    before = {m.name: m.bn.weight.shape[0] for k in masks for m in groups[k].layers}
    apply_plan(pgraph, plan, keep_backup=False)
    return {m.name: (before[m.name], m.bn.weight.shape[0])
            for k in masks for m in groups[k].layers}
