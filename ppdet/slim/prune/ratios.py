"""From user choices to a pruned model: ratios, alignment, summary tables.

Ratio searches count FLOPs on the pruning graph (:mod:`ppdet.slim.search`): nothing is
pruned or traced while searching.
"""
from ppdet.core.errors import UserError
from ppdet.slim.prune.costs import count_params
from ppdet.slim.prune.params import conv_table, parse_ratios, select_groups
from ppdet.slim.prune.pruner import FilterPruner

__all__ = ["check_filters_left", "check_sensitivities_fit", "pair_ratios", "destructive_warnings",
           "align_ratios", "count_params", "prune_model", "summary"]


def check_sensitivities_fit(graph, sens, path, groups=True):
    """Every conv a sensitivities file names belongs to this model (and, with ``groups``,
    has a pruning group of its own, as FLOPs searches need): else one line naming it."""
    names = {p.name for p in graph.model.parameters()}
    unknown = [n for n in sens if n not in names]
    if unknown:
        raise UserError(f"{path} names '{unknown[0]}', which this model does not have: it "
                        f"was measured on another model")
    untied = [n for n in sens if not graph.has(n)] if groups else []
    if untied:
        raise UserError(f"{path} measures '{untied[0]}', which has no pruning group of its "
                        f"own: analyse the conv it follows")


def pair_ratios(model, pruned_params, pruned_ratios):
    """``--pruned_ratios`` paired with ``--pruned_params`` position by position, as the
    static-era tools did: one ratio for every conv, or one per name or pattern (a pattern
    gives all its convs its ratio). Returns ``{conv: ratio}`` in network order."""
    groups = select_groups(model, pruned_params)
    values = parse_ratios(pruned_ratios)
    if len(values) == 1:
        values = values * len(groups)
    if len(values) != len(groups):
        raise UserError(f"--pruned_params has {len(groups)} params (names or patterns) but "
                        f"--pruned_ratios has {len(values)} ratios: give one ratio for all, "
                        f"or one per name, in the same order")
    chosen = {}
    for (token, names), value in zip(groups, values):
        for name in names:
            if name in chosen and chosen[name][1] != value:
                raise UserError(f"'{name}' is matched by '{chosen[name][0]}' (ratio "
                                f"{chosen[name][1]:g}) and by '{token}' (ratio {value:g}): "
                                f"name each conv once")
            chosen[name] = (token, value)
    order = {c.name: i for i, c in enumerate(conv_table(model))}
    return {n: chosen[n][1] for n in sorted(chosen, key=order.__getitem__)}


MIN_FILTERS = 16
MAX_REMOVED = 0.8


def destructive_warnings(ratios, filters):
    """Warning lines for convs that a ratio leaves with fewer than MIN_FILTERS filters or
    strips of more than MAX_REMOVED of them (mAP usually collapses before fine-tuning)."""
    lines = []
    for name, r in ratios.items():
        n = filters[name]
        kept = n - int(round(n * r))
        if r > MAX_REMOVED or (kept < MIN_FILTERS and kept < n):
            lines.append(f"warning: {name} keeps {kept} of {n} filters ({r:.0%} removed): "
                         f"expect mAP near 0 until fine-tuned; lower the target or name "
                         f"more convs")
    return lines


def align_ratios(model, ratios, align):
    """Round the kept filters of each conv to a multiple of ``align`` (at least ``align``)."""
    if not align or align <= 1:
        return ratios
    shapes = {p.name: p.shape[0] for p in model.parameters()}
    out = {}
    for name, r in ratios.items():
        n = shapes[name]
        kept = max(align, int(round(n * (1 - r) / align)) * align)
        out[name] = max(0.0, 1 - min(kept, n) / n)
    return {k: v for k, v in out.items() if v > 0}


def prune_model(model, ratios, criterion="l1_norm", idx_selector="default", pruner=None):
    """Prune in place for good; returns {name: (filters before, after)}."""
    before = {p.name: p.shape[0] for p in model.parameters()}
    pruner = pruner or FilterPruner(model, criterion, idx_selector)
    for name, r in ratios.items():
        if int(round(before[name] * r)) >= before[name]:
            raise UserError(f"ratio {r} would empty {name} ({before[name]} filters)")
    pruner.prune(ratios)
    pruner.drop_backups()
    after = {p.name: p.shape[0] for p in model.parameters() if len(p.shape) == 4}
    return {n: (before[n], a) for n, a in after.items() if a != before[n]}   # conv weights


def summary(kept, flops_before, flops_after, params_before, params_after):
    lines = [f"FLOPs  {flops_before / 1e6:10.2f} M -> {flops_after / 1e6:10.2f} M "
             f"({1 - flops_after / flops_before:.1%} removed)",
             f"params {params_before / 1e6:10.3f} M -> {params_after / 1e6:10.3f} M "
             f"({1 - params_after / params_before:.1%} removed)",
             "", "| conv | filters before | kept | pruned |", "|---|---|---|---|"]
    for name, (b, a) in kept.items():
        lines.append(f"| {name} | {b} | {a} | {1 - a / b:.1%} |")
    return "\n".join(lines)


def check_filters_left(option, value, ratio, filters, align=None, reduction=None):
    """A uniform filter ``ratio`` (what ``option value``, e.g. ``--target_ratio 0.9``,
    asks for) must leave every conv of ``filters`` (``{name: filter count}``) at least
    ``align`` filters (1 without ``--align``); else one UserError naming the conv that loses
    most, with the largest filter ratio that works and, when ``reduction(ratio)`` (the
    share of FLOPs a filter ratio removes) is given, the largest ``option`` value that
    works. Returns ``ratio``."""
    floor = max(int(align or 1), 1)
    if not filters:
        return ratio
    kept = {n: c - int(round(c * ratio)) for n, c in filters.items()}
    worst = min(kept, key=lambda n: (kept[n], filters[n]))
    if kept[worst] >= floor:
        return ratio
    if filters[worst] < floor:
        raise UserError(f"{option} {value:g}: {worst} has only {filters[worst]} filters, "
                        f"fewer than --align {floor}: leave it out of --pruned_params or "
                        f"lower --align")
    # the largest ratio r with c - round(c * r) >= floor for every conv c
    best = min((c - floor + 0.5) / c for c in filters.values()) - 1e-9
    best = max(0.0, int(best * 1e4) / 1e4)
    fix = f"filter ratio at most {best:g}"
    if reduction is not None and best > 0:
        fix = f"{option} at most {int(reduction(best) * 1000) / 1000:g} ({fix})"
    left = f"leaves {worst} {kept[worst]} of {filters[worst]} filters, fewer than --align " \
        f"{floor}" if floor > 1 else f"empties {worst} (all {filters[worst]} filters)"
    raise UserError(f"{option} {value:g} takes filter ratio {ratio:g}, which {left}: give "
                    f"{fix}, or name fewer small convs")
