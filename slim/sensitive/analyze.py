"""Read a sensitivities file: plot, table, and ratios to feed slim/prune/prune.py.

    python analyze.py demo.data --loss 0.05
    python analyze.py demo.data --target_flops 0.5 -c CFG

With -c, the proposed ratios get their FLOPs and, when the config has a latency table
(slim/prune/latency_table.py), their predicted latency beside it.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from ppdet.utils.cli import (  # noqa: E402
    ArgumentParser,
    UserError,
    check_conflicts,
    check_range,
    check_writable_file,
    run_main,
)


@run_main
def main(argv=None):
    parser = ArgumentParser(description=__doc__)
    parser.add_argument("sensitivities_file")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--loss", type=float, default=None, help="loss threshold")
    group.add_argument("--target_flops", type=float, default=None,
                       help="share of FLOPs to remove (needs -c)")
    parser.add_argument("-c", "--config", default=None, help="model config (for FLOPs)")
    parser.add_argument("-o", "--opt", nargs="+", default=[], help="config overrides")
    parser.add_argument("--plot", default=None, help="PNG path (default: FILE.png)")
    args = parser.parse_args(argv)
    check_conflicts(args, needs=[("target_flops", "config"), ("opt", "config")])
    check_range("--loss", args.loss, 0, 1, low_open=True, high_open=True)
    check_range("--target_flops", args.target_flops, 0, 1, low_open=True, high_open=True)
    if not os.path.isfile(args.sensitivities_file):
        raise UserError(f"sensitivities file not found: {args.sensitivities_file}")
    plot = args.plot or os.path.splitext(args.sensitivities_file)[0] + ".png"
    check_writable_file("--plot", plot)
    from ppdet.slim.plots import plot_sensitivities
    from ppdet.slim.report import sensitivity_table
    from ppdet.slim.sensitivity.store import META_SUFFIX, load_sensitivities_file, read_meta
    sens = load_sensitivities_file(args.sensitivities_file)
    if not sens:
        raise UserError(f"{args.sensitivities_file} holds no measurements yet")
    try:
        meta = read_meta(args.sensitivities_file + META_SUFFIX) or {}
    except UserError:
        meta = {}       # reading never needs the sidecar
    fp = meta.get("fingerprint") or {}
    if fp.get("metric"):
        what = "AP(0.50:0.95)" if fp["metric"] == "COCO" else f"VOC mAP ({fp.get('map_type')})"
        print(f"losses measured on {what}, baseline {meta.get('baseline', 0) * 100:.2f}")
    ratios, threshold, costs = None, args.loss, None
    if args.target_flops is not None:
        if not args.config:
            raise UserError("--target_flops needs the model: pass -c CONFIG")
        from ppdet.core.config import load_config
        from ppdet.engine.builder import build_model, image_size_for
        from ppdet.slim.prune.costs import Costs
        from ppdet.slim.prune.graph import PruneGraph
        from ppdet.slim.prune.search import SearchError, loss_for_flops
        cfg = load_config(args.config, args.opt)
        from ppdet.slim.prune.ratios import check_sensitivities_fit
        graph = PruneGraph.of(build_model(cfg))
        check_sensitivities_fit(graph, sens, args.sensitivities_file)
        costs = Costs(graph, image_size_for(cfg, "eval"))
        try:
            threshold, ratios, got = loss_for_flops(costs, sens, args.target_flops)
        except SearchError as e:
            raise UserError(str(e)) from None
        print(f"loss threshold {threshold:.4f} removes {got:.1%} of FLOPs "
              f"(target {args.target_flops:.0%})")
    elif args.loss is not None:
        from ppdet.slim.prune.search import ratios_by_loss
        ratios = ratios_by_loss(sens, args.loss)
    stops = [v for d in (meta.get("skipped") or {}).values() for v in d.values()]
    if stops and threshold is not None and threshold >= min(stops):
        print(f"note: {sum(map(len, meta['skipped'].values()))} pairs were skipped by "
              f"--stop_loss {min(stops):g}; at a loss of {threshold:.4f} (not below it) the "
              f"ratios may be smaller than a full analysis would give")
    plot_sensitivities(sens, plot, os.path.basename(args.sensitivities_file), threshold,
                       ratios)
    print(sensitivity_table(sens, ratios))
    print(f"plot: {plot}")
    if ratios and args.config:
        print(_cost_table(args, ratios, costs))
    if ratios:
        names = list(ratios)
        print("feed to slim/prune/prune.py:")
        print(f'  --pruned_params "{",".join(names)}" '
              f'--pruned_ratios "{",".join(f"{ratios[n]:g}" for n in names)}"')
    elif ratios is not None:
        print("no conv can be pruned within that loss")


def _cost_table(args, ratios, costs=None):
    """FLOPs and predicted latency (when a latency table exists) of the proposed ratios."""
    from ppdet.core.config import load_config
    from ppdet.engine.builder import build_model, image_size_for
    from ppdet.slim.latency.table import load_latency_table
    from ppdet.slim.prune.costs import Costs, removed_for_ratios
    from ppdet.slim.prune.graph import PruneGraph
    cfg = load_config(args.config, args.opt)
    graph = costs.graph if costs is not None else PruneGraph.of(build_model(cfg))
    costs = costs or Costs(graph, image_size_for(cfg, "eval"))
    known = {n: r for n, r in ratios.items() if graph.has(n)}
    removed = removed_for_ratios(graph, known)
    from ppdet.slim.latency.error_bars import predict_plan
    table = load_latency_table(cfg, graph)
    f0, f1 = costs.flops(), costs.flops(removed)
    rows = [("unpruned", f0, predict_plan(table, {}) if table else None),
            ("proposed", f1, predict_plan(table, {k: graph.group(k).size - v
                                                  for k, v in removed.items()})
             if table else None)]
    lines = ["| ratios | FLOPs (M) | predicted latency (ms) |", "|---|---|---|"]
    for label, f, ms in rows:
        lat = "- (no latency table)" if ms is None else \
            f"{ms} ({rows[0][2].ms / ms.ms:.2f}x)"
        lines.append(f"| {label} | {f / 1e6:.1f} ({f / f0 - 1:+.0%}) | {lat} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
