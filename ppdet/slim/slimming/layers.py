"""Layer pruning for network slimming: remove whole residual blocks, weakest first.

A block's strength is the mean |gamma| of the BN feeding its shortcut add; a removed block
becomes an identity (:func:`ppdet.modeling.surgery.remove_layers`), which the checkpoint
records so the shapes replay.
"""
import numpy as np

from ppdet.core.errors import UserError
from ppdet.modeling import surgery

__all__ = ["residual_blocks", "remove_layers", "check_shortcuts", "prune_layers"]


def residual_blocks(model):
    """``[(path, block, mean |gamma| of the BN feeding its add)]`` for blocks with a shortcut."""
    out = []
    for path, layer in model.named_sublayers():
        if getattr(layer, "use_shortcut", False):
            bn = layer.linear.bn
            out.append((path, layer, float(np.abs(bn.weight.numpy()).mean())))
    return out


def remove_layers(model, paths):
    """Replace the sublayers at ``paths`` with identities (see ``surgery.remove_layers``)."""
    return surgery.remove_layers(model, paths)


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
