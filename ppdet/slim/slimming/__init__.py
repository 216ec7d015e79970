"""Network slimming: BN-scale sparsity training, then channel and residual-layer pruning.

Owns the sparsity hook of the training loop (:mod:`.sparsity`), the global BN threshold and
exact channel removal with offsets folded into consumers (:mod:`.channels`, on the groups of
:class:`~ppdet.slim.prune.graph.PruneGraph`) and whole residual blocks removed
(:mod:`.layers`). May import :mod:`ppdet.slim.prune`, :mod:`ppdet.slim.plots`,
``ppdet.modeling``, ``ppdet.core`` and ``ppdet.utils``; not sensitivity, latency or
pipelines.
"""
import importlib

# the room's public names, imported on first use (the CLI's start-up stays lean)
_API = {
    "BNSparsity": "sparsity",
    "DW_RULES": "channels",
    "S_DECAYS": "sparsity",
    "SlimGraph": "channels",
    "SlimGroup": "channels",
    "check_shortcuts": "layers",
    "global_threshold": "channels",
    "group_masks": "channels",
    "layer_masks": "channels",
    "plot_sparsity": "sparsity",
    "prune_channels": "channels",
    "prune_layers": "layers",
    "remove_layers": "layers",
    "residual_blocks": "layers",
    "sparsity_from_config": "sparsity",
    "zero_scales": "channels",
}


def __getattr__(name):
    if name in _API:
        return getattr(importlib.import_module(f"{__name__}.{_API[name]}"), name)
    try:                                   # a submodule: ``room.store``
        return importlib.import_module(f"{__name__}.{name}")
    except ModuleNotFoundError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
