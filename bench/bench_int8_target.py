"""`prune.py --target_speedup X --precision int8`, measured: asked against measured INT8 speed-up.

    python bench/bench_int8_target.py [-c CFG] [--size 320] --out DIR --speedup 1.2 \
        [--max_counts 8] [--step 8] [--passes 2] [--rounds 8] [--align N] [--no_quiet_gate]

1. Builds (or resumes) the INT8 latency table in DIR (`latency_table.py --precision int8`:
   every program quantized with a cheap calibration in a child process and timed with the
   INT8 predictor config).
2. Prunes as `prune.py --pruned_params "*" --target_speedup X --precision int8` does (one
   uniform ratio, counts snapped to the table's, or multiples of --align), printing the
   prediction with its ± and any too-coarse-table warning.
3. Exports the unpruned model twice and the pruned one, quantizes the three (abs_max on
   random images: timing only), and measures them in interleaved rounds (Paddle Inference,
   oneDNN INT8, one thread, batch 1, the fastest of each): asked vs measured speed-up
   (against the faster unpruned copy), and the two copies against each other (this run's
   noise). Without --weights: random weights
   with background-biased prediction convs (as bench/bench_latency.py). Writes
   DIR/int8_target.json.
"""
import argparse
import json
import os
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def _table(args, cfg, size, graph):
    from ppdet.slim.latency.build import build_table
    path = os.path.join(args.out, f"latency_cpu-onednn-int8_t1_{size[0]}x{size[1]}.json")
    return build_table(graph, cfg, path, size, step=args.step, max_counts=args.max_counts,
                       progress=sys.stderr.isatty(), quiet=not args.no_quiet_gate,
                       passes=args.passes, precision="int8")


def _plan(args, table, graph):
    """The uniform latency-target plan, its prediction (± error) and any warning."""
    from ppdet.slim.latency import search
    from ppdet.slim.latency.error_bars import coarse_warning, predict_with_error
    names = [g.name for g in graph.prunable]
    steady = search.steady(table)
    reach = steady.predict({g.key: min(table.counts(g.key)) for g in graph.prunable})
    print(f"INT8 table: unpruned {steady.predict({}):.2f} ms, every group at its smallest "
          f"count {reach:.2f} ms (at most {steady.predict({}) / reach:.2f}x)")
    target = search.latency_target(table, speedup=args.speedup)
    ratio, ratios, _ = search.uniform_ratio_for_latency(table, graph, names, target,
                                                        align=args.align)
    kept = {g.key: round(g.size * (1 - ratios.get(g.name, 0))) for g in graph.prunable}
    predicted, base = predict_with_error(steady, kept), predict_with_error(steady, {})
    print(f"uniform ratio {ratio:g}: predicted INT8 {predicted} (unpruned {base}, "
          f"{predicted.speedup(base)}); {predicted.detail()}")
    warning = coarse_warning(steady, kept, target, predicted)
    if warning:
        print(warning)
    return ratios, predicted, base, warning


def _measure(args, cfg, size, graph, ratios):
    """ms of unpruned, pruned, unpruned again, all INT8, fastest of interleaved rounds."""
    from ppdet.engine.export import export_model
    from ppdet.engine.latency import measure_latency
    from ppdet.slim.latency.build import _quantized_for_timing
    from ppdet.slim.latency.timing import STAT
    from ppdet.slim.prune.plan import apply_plan, make_plan
    classes = ["c"] * int(cfg.get("num_classes", 1))
    with tempfile.TemporaryDirectory(prefix="bench_int8_") as tmp:
        dirs = [os.path.join(tmp, n) for n in ("base", "pruned", "base2")]
        export_model(graph.model, cfg, dirs[0], classes)
        applied = apply_plan(graph, make_plan(graph, ratios))
        export_model(graph.model, cfg, dirs[1], classes)
        applied.restore()
        export_model(graph.model, cfg, dirs[2], classes)
        dirs = _quantized_for_timing(dirs, size)
        best = [float("inf")] * 3
        for _ in range(args.rounds):
            for i, d in enumerate(dirs):
                best[i] = min(best[i], measure_latency(d, size, warmup=5, repeats=30,
                                                       stat=STAT))
    return best


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-c", "--config", default="configs/shapes/yolov3_mobilenet_v1_shapes.yml")
    parser.add_argument("--size", type=int, default=320)
    parser.add_argument("--weights", default=None, help="trained weights (default: random)")
    parser.add_argument("--out", required=True)
    parser.add_argument("--speedup", type=float, default=1.2)
    parser.add_argument("--max_counts", type=int, default=8)
    parser.add_argument("--step", type=int, default=8, help="table: multiples of N")
    parser.add_argument("--passes", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--align", type=int, default=None)
    parser.add_argument("--no_quiet_gate", action="store_true")
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    from bench_latency_target import _setup

    from ppdet.engine.cpu_features import cpu_features
    cfg, size, _, graph = _setup(args)
    table = _table(args, cfg, size, graph)
    ratios, predicted, base, warning = _plan(args, table, graph)
    b1, p, b2 = _measure(args, cfg, size, graph, ratios)
    b = min(b1, b2)                  # the unpruned model's two copies: the fastest of both
    got = b / p
    print(f"| asked | predicted | measured | measured / asked | unpruned copies |\n"
          f"|---|---|---|---|---|\n"
          f"| {args.speedup:.2f}x | {predicted.speedup(base)} | {got:.2f}x ({b:.2f} -> "
          f"{p:.2f} ms) | {got / args.speedup - 1:+.1%} "
          f"({'within' if abs(got / args.speedup - 1) <= 0.10 else 'NOT within'} 10%) | "
          f"{b1:.2f} / {b2:.2f} ms ({b2 / b1 - 1:+.1%}) |")
    result = {"config": args.config, "size": size, "asked": args.speedup,
              "predicted_ms": predicted.ms, "predicted_err": predicted.err,
              "base_pred_ms": base.ms, "measured_base_ms": b1, "measured_pruned_ms": p,
              "measured_base2_ms": b2, "measured_speedup": got, "warning": warning,
              "max_counts": args.max_counts, "step": args.step, "passes": args.passes,
              "align": args.align,
              "cpu_features": cpu_features(), "ratios": ratios}
    with open(os.path.join(args.out, "int8_target.json"), "w") as f:
        json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
