"""Network slimming: BN-scale sparsity training, then channel and residual-layer pruning.

Owns the sparsity hook of the training loop (:mod:`.sparsity`), the global BN threshold and
exact channel removal with offsets folded into consumers (:mod:`.channels`, on the groups of
:class:`~ppdet.slim.prune.graph.PruneGraph`) and whole residual blocks removed
(:mod:`.layers`). May import :mod:`ppdet.slim.prune`, :mod:`ppdet.slim.plots`,
``ppdet.modeling``, ``ppdet.core`` and ``ppdet.utils``; not sensitivity, latency or
pipelines.
"""
from ppdet.utils.lazy import lazy_getattr

# the room's public names, imported on first use (the CLI's start-up stays lean)
_API = {
    "BNSparsity": "sparsity",
    "DW_RULES": "channels",
    "S_DECAYS": "sparsity",
    "SlimGraph": "channels",
    "SlimGroup": "channels",
    "branch_constant": "layers",
    "check_shortcuts": "layers",
    "global_threshold": "channels",
    "group_masks": "channels",
    "layer_masks": "channels",
    "prune_channels": "channels",
    "prune_layers": "layers",
    "remove_layers": "layers",
    "residual_blocks": "layers",
    "sparsity_from_config": "sparsity",
    "zero_scales": "channels",
}

__getattr__ = lazy_getattr(__name__, _API)
