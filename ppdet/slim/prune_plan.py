"""From user choices to a pruned model: ratios, alignment, summary tables."""
import numpy as np

from ppdet.slim.params import parse_ratios, select_params
from ppdet.slim.pruner import FilterPruner
from ppdet.utils.cli import UserError

__all__ = ["choose_ratios", "align_ratios", "count_params", "prune_model", "summary"]


def count_params(model):
    return int(sum(np.prod(p.shape) for p in model.parameters()))


def choose_ratios(model, image_size, pruned_params=None, pruned_ratios=None,
                  sensitivities_file=None, loss=None, target_flops=None, target_ratio=None,
                  pruner=None):
    """Exactly one way of choosing: explicit ratios, a sensitivity file with --loss or
    --target_flops, or uniform pruning of --pruned_params to --target_ratio of FLOPs."""
    from ppdet.slim import ratios as rsearch
    if sensitivities_file:
        from ppdet.slim.sensitivity_store import load_sensitivities_file
        if (loss is None) == (target_flops is None):
            raise UserError("with --sensitivities_file give exactly one of --loss or "
                            "--target_flops")
        sens = load_sensitivities_file(sensitivities_file)
        if pruned_params:
            wanted = select_params(model, pruned_params)
            missing = [n for n in wanted if n not in sens]
            if missing:
                raise UserError(f"{sensitivities_file} has no measurements for '{missing[0]}'"
                                f": analyse it with slim/sensitive/sensitive.py first")
            sens = {n: sens[n] for n in wanted}
        unknown = [n for n in sens if n not in {p.name for p in model.parameters()}]
        if unknown:
            raise UserError(f"{sensitivities_file} names '{unknown[0]}', which this model "
                            f"does not have: it was measured on another model")
        if loss is not None:
            ratios = rsearch.ratios_by_loss(sens, loss)
            if not ratios:
                raise UserError(f"no conv stays under loss {loss}: raise --loss")
            return ratios, f"ratios for loss <= {loss}"
        threshold, ratios, got = rsearch.search_loss_for_flops(model, sens, target_flops,
                                                               image_size, pruner=pruner)
        return ratios, f"loss threshold {threshold:.4f} for {got:.1%} fewer FLOPs"
    if not pruned_params:
        raise UserError("say what to prune: --pruned_params with --pruned_ratios or "
                        "--target_ratio, or --sensitivities_file with --loss/--target_flops")
    names = select_params(model, pruned_params)
    if target_ratio is not None:
        ratio, got = rsearch.uniform_ratio_for_flops(model, names, target_ratio, image_size,
                                                     pruner=pruner)
        return {n: ratio for n in names}, f"uniform ratio {ratio} for {got:.1%} fewer FLOPs"
    if pruned_ratios is None:
        raise UserError("--pruned_params needs --pruned_ratios (or --target_ratio)")
    values = parse_ratios(pruned_ratios)
    if len(values) == 1:
        values = values * len(names)
    if len(values) != len(names):
        raise UserError(f"{len(names)} params but {len(values)} ratios: give one ratio, or "
                        f"one per param")
    return dict(zip(names, values)), "ratios as given"


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

