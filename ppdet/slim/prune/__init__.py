"""The pruning core: which channels go together, how they are scored, cut, counted and chosen.

Owns the pruning graph (:mod:`.graph`, traced once per model: groups of tensors that lose the
same channels), the criteria (:mod:`.criteria`, one callable each), channel plans and their
application (:mod:`.plan`), FLOPs/parameter counts of any plan (:mod:`.costs`), fast-evaluation
masks (:mod:`.masks`), the in-place :class:`~.pruner.FilterPruner`, turning user input into
parameter names (:mod:`.params`), FLOPs and loss searches (:mod:`.search`) and ratio helpers
(:mod:`.ratios`: pairing, alignment, warnings, summary). May import :mod:`ppdet.slim.compat`,
:mod:`ppdet.modeling`, ``ppdet.core`` and ``ppdet.utils``; nothing else of ``ppdet.slim`` and
no engine: every other room builds on this one.
"""
from ppdet.utils.lazy import lazy_getattr

# the room's public names, imported on first use (the CLI's start-up stays lean)
_API = {
    "Applied": "plan",
    "CRITERIA": "criteria",
    "ChannelPlan": "plan",
    "ConvEntry": "graph",
    "ConvInfo": "params",
    "Costs": "costs",
    "FilterPruner": "pruner",
    "Group": "graph",
    "Member": "graph",
    "PruneGraph": "graph",
    "SELECTORS": "criteria",
    "SearchError": "search",
    "TRACE_SIZE": "graph",
    "align_ratios": "ratios",
    "apply_plan": "plan",
    "bn_scale": "criteria",
    "check_filters_left": "ratios",
    "check_sensitivities_fit": "ratios",
    "conv_table": "params",
    "count_flops": "costs",
    "count_params": "costs",
    "criterion": "criteria",
    "destructive_warnings": "ratios",
    "flops_reduction": "search",
    "format_params": "params",
    "fpgm": "criteria",
    "kept_channels": "criteria",
    "l1": "criteria",
    "l2": "criteria",
    "layer_plan": "plan",
    "loss_for_flops": "search",
    "make_plan": "plan",
    "mask_units": "masks",
    "masked": "masks",
    "masks": "masks",
    "model_flops": "pruner",
    "paddledet_aliases": "params",
    "pair_ratios": "ratios",
    "parse_ratios": "params",
    "prune_model": "ratios",
    "pruned_count": "criteria",
    "ratios_by_loss": "search",
    "removed_for_ratios": "costs",
    "select_groups": "params",
    "select_params": "params",
    "summary": "ratios",
    "trace_count": "graph",
    "uniform_ratio_for_flops": "search",
}

__getattr__ = lazy_getattr(__name__, _API)
