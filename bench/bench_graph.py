"""FLOPs-target search against pruning with given ratios, on the full-width YOLOv3 (random
weights), same run. The graph traces once and counts FLOPs arithmetically. (The path it
replaced, which pruned, re-traced and restored at every bisection step, was timed in the
same process before it was removed: bench/HISTORY.md, "One pruning graph", issue 15.)

    python bench/bench_graph.py [-c configs/yolov3_mobilenet_v1_voc.yml]
"""
import argparse
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def _timed(fn):
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def graph_path(cfg, pattern, target):
    """Rows of (step, seconds) for the graph: search, then prune with the ratio found, then
    prune with given ratios from a fresh trace, as ``prune.py`` would."""
    from ppdet.engine.builder import build_model, image_size_for
    from ppdet.slim.prune import search
    from ppdet.slim.prune.costs import Costs
    from ppdet.slim.prune.graph import PruneGraph
    from ppdet.slim.prune.plan import apply_plan, make_plan
    size = image_size_for(cfg, "eval")
    model = build_model(cfg)
    model.eval()
    t_trace, graph = _timed(lambda: PruneGraph(model))
    names = [g.name for g in graph.prunable if pattern in g.name]
    t_costs, costs = _timed(lambda: Costs(graph, size))
    t_search, (ratio, got) = _timed(lambda: search.uniform_ratio_for_flops(costs, names, target))
    t_plan, plan = _timed(lambda: make_plan(graph, {n: ratio for n in names}))
    t_apply, _ = _timed(lambda: apply_plan(graph, plan, keep_backup=False))
    given = t_trace + t_costs + t_plan + t_apply
    rows = [("trace the graph (once)", t_trace),
            (f"record output sizes at {size[0]}x{size[1]} (once)", t_costs),
            (f"search: uniform ratio for -{target:.0%} FLOPs -> {ratio:g} ({got:.1%})",
             t_search),
            ("choose channels (l1_norm)", t_plan), ("cut the model", t_apply),
            ("prune with given ratios (trace + sizes + choose + cut)", given),
            ("--target_ratio: the same + search", given + t_search)]
    return rows, ratio, names


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-c", "--config", default="configs/yolov3_mobilenet_v1_voc.yml")
    parser.add_argument("--params", default="yolo_block", help="prune groups whose name "
                        "contains this (default: every head conv)")
    parser.add_argument("--target", type=float, default=0.5)
    args = parser.parse_args()
    from ppdet.core.config import load_config
    from ppdet.slim import compat
    cfg = load_config(os.path.join(ROOT, args.config))
    t_import, _ = _timed(compat.import_paddleslim)     # once per process, outside the rows
    print(f"import paddleslim: {t_import:.2f} s (not in the rows)")
    rows, ratio, names = graph_path(cfg, args.params, args.target)
    print(f"{args.config}, {len(names)} convs matching '{args.params}', random weights, "
          f"{os.cpu_count()} CPUs")
    print("| step | seconds |\n|---|---|")
    for label, t in rows:
        print(f"| {label} | {t:.3f} |")
    given = dict(rows)["prune with given ratios (trace + sizes + choose + cut)"]
    search = dict(rows)["--target_ratio: the same + search"]
    print(f"\n--target_ratio / given ratios: {search / given:.2f}x")


if __name__ == "__main__":
    main()
