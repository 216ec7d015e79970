"""Layer pruning for network slimming: remove whole residual blocks, weakest first.

A block's strength is the mean |gamma| of the BN feeding its shortcut add (``add_bn``). A
removed block becomes ``act(x + c)`` (:class:`ppdet.modeling.surgery.Shift`), ``c`` being
what its branch outputs with that BN's scales at zero (the BN offsets through the branch's
last activation): exact for a block whose scales sparsity training took to zero, and the
offsets are not lost otherwise (``fold=False``: an identity). The checkpoint records the
removed blocks so the shapes replay.
"""
import numpy as np

from ppdet.core.errors import UserError
from ppdet.modeling import surgery

__all__ = ["residual_blocks", "branch_constant", "remove_layers", "check_shortcuts",
           "prune_layers"]


def residual_blocks(model):
    """``[(path, block, mean |gamma| of the BN feeding its add)]`` for blocks with a shortcut."""
    out = []
    for path, layer in model.named_sublayers():
        if getattr(layer, "use_shortcut", False):
            bn = layer.add_bn
            out.append((path, layer, float(np.abs(bn.weight.numpy()).mean())))
    return out


def branch_constant(block):
    """What ``block``'s residual branch outputs when its ``add_bn`` scales are zero: the
    BN offsets through the activation between that BN and the add ([C])."""
    beta = block.add_bn.bias.numpy()
    act = getattr(block, "branch_act", None)
    if act == "leaky":
        return np.where(beta > 0, beta, 0.1 * beta)
    return beta


def remove_layers(model, paths, fold=True):
    """Remove the residual blocks at ``paths``; ``fold`` keeps each branch's constant
    (:func:`branch_constant`) as a :class:`~ppdet.modeling.surgery.Shift`."""
    layers = dict(model.named_sublayers())
    consts = {p: branch_constant(layers[p]) for p in paths} if fold else {}
    shifts = {p: [len(c), getattr(layers[p], "add_act", None)] for p, c in consts.items()}
    surgery.remove_layers(model, paths, shifts)
    for p, c in consts.items():
        surgery.find_layer(model, p).weight.set_value(c.reshape(1, -1, 1, 1).astype("float32"))
    return model


def check_shortcuts(model, n):
    count = len(residual_blocks(model))
    if not 0 <= n <= count:
        raise UserError(f"--shortcuts {n}: this model has {count} residual blocks; use "
                        f"0..{count}")


def prune_layers(model, n, fold=True):
    """Remove the ``n`` residual blocks whose add-feeding BN has the smallest mean |gamma|
    (``fold``: see :func:`remove_layers`). Returns ``[(path, mean |gamma|)]`` of them."""
    blocks = residual_blocks(model)
    check_shortcuts(model, n)
    weakest = sorted(blocks, key=lambda b: b[2])[:n]
    remove_layers(model, [p for p, _, _ in weakest], fold)
    return [(p, s) for p, _, s in weakest]
