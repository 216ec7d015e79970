"""Latency table predictor vs the measured exported model, on random channel plans.

    python bench/bench_latency.py [-c CFG] [--size N] [--plans 5] [--threads 1] \
        [--max_counts 6] [--table PATH]

Random weights (latency does not depend on them, except NMS load, which the fixed part
holds). Builds (or resumes) the table, then for each random plan (every prunable group
keeps a random count among the table's, at least a quarter of its channels) prunes the
model, exports it as tools/export_model.py does and measures it with Paddle Inference
(oneDNN, batch 1), the plans in turn, several rounds, the minimum of each.
Prints predicted vs measured and the error, same run.
"""
import argparse
import os
import shutil
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def _cfg(path, size):
    from ppdet.core.config import load_config
    over = []
    if size:
        for reader in ("TestReader", "EvalReader"):
            over.append(
                f"{reader}.sample_transforms=[{{Decode: {{}}}}, {{Resize: {{target_size: "
                f"[{size}, {size}]}}}}, {{NormalizeImage: {{mean: [0.485, 0.456, 0.406], "
                f"std: [0.229, 0.224, 0.225]}}}}, {{Permute: {{}}}}]")
    return load_config(os.path.join(ROOT, path), over)


def _background(graph):
    """Random weights score boxes at random, so NMS load (the fixed part) would change from
    plan to plan; a trained detector scores almost every box as background: make the
    prediction convs do so too (small weights, bias -8)."""
    import numpy as np
    for e in graph.convs:
        if e.role == "prediction":
            conv = graph.layers[e.path]
            conv.weight.set_value((conv.weight.numpy() * 0.01).astype("float32"))
            if conv.bias is not None:
                conv.bias.set_value(np.full(conv.bias.shape, -8.0, "float32"))


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-c", "--config", default="configs/shapes/yolov3_mobilenet_v1_shapes.yml")
    parser.add_argument("--size", type=int, default=None, help="deploy size (default: config)")
    parser.add_argument("--plans", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--max_counts", type=int, default=None,
                        help="measure at most this many counts per group (default: every "
                             "multiple of 8)")
    parser.add_argument("--table", default=None)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    import numpy as np
    import paddle

    from ppdet.engine.builder import build_model, image_size_for
    from ppdet.engine.export import export_model
    from ppdet.engine.latency import measure_latency
    from ppdet.slim.latency.build import build_table
    from ppdet.slim.latency.gate import quiet_gate
    from ppdet.slim.latency.timing import STAT
    from ppdet.slim.prune.costs import Costs
    from ppdet.slim.prune.graph import PruneGraph
    from ppdet.slim.prune.plan import ChannelPlan, apply_plan
    cfg = _cfg(args.config, args.size)
    size = image_size_for(cfg, "test")
    paddle.seed(args.seed)
    model = build_model(cfg)
    graph = PruneGraph.of(model)
    _background(graph)
    table_file = args.table or os.path.join(
        ROOT, "output", "latency", f"{cfg['filename']}_{size[0]}_t{args.threads}.json")
    tic = time.time()
    table = build_table(graph, cfg, table_file, size, threads=args.threads,
                        max_counts=args.max_counts, repeats=30)
    print(f"table {table_file}: {sum(len(e) for e in table.entries.values())} entries, "
          f"{len(table.entries)} groups, full {table.full_ms:.2f} ms, fixed "
          f"{table.fixed_ms:.2f} ms ({time.time() - tic:.0f} s)")
    costs = Costs(graph, size)
    flops0 = costs.flops()
    rng = np.random.RandomState(args.seed)
    rows, dirs = [], []
    tmp_root = tempfile.mkdtemp(prefix="bench_latency_")
    for i in range(args.plans + 1):
        plan = ChannelPlan()
        if i > 0:                     # plan 0: unpruned
            for g in graph.prunable:     # a count the table measured, as the pruner picks
                counts = [k for k in table.counts(g.key) if k >= g.size * 0.25]
                plan[g.key] = np.arange(int(rng.choice(counts)))
        applied = apply_plan(graph, plan)
        d = os.path.join(tmp_root, str(i))
        export_model(model, cfg, d, ["c"] * int(cfg.get("num_classes", 1)))
        applied.restore()
        dirs.append(d)
        rows.append([i, costs.flops(plan) / flops0, table.predict(plan), float("inf")])
    # round robin, the minimum over rounds: the plans see the same machine load; each
    # timing waits for a quiet machine, as the table's did
    gate = quiet_gate(args.threads)
    for _ in range(args.rounds):
        for row, d in zip(rows, dirs):
            gate.wait()
            row[3] = min(row[3], measure_latency(d, size, use_mkldnn=True, warmup=5,
                                                 repeats=args.repeats, threads=args.threads,
                                                 stat=STAT))
    shutil.rmtree(tmp_root, ignore_errors=True)
    print(gate.summary())
    print(f"\n{args.config} at {size[0]} px, {args.threads} thread(s), oneDNN")
    p0, m0 = rows[0][2], rows[0][3]
    print("| plan | FLOPs | predicted ms | measured ms | error | predicted speed-up | "
          "measured speed-up | speed-up error |\n|---|---|---|---|---|---|---|---|")
    errs, rel = [], []
    for i, f, p, m in rows:
        err, r_err = p / m - 1, (p0 / p) / (m0 / m) - 1
        if i > 0:
            errs.append(abs(err))
            rel.append(abs(r_err))
        print(f"| {'unpruned' if i == 0 else i} | {f:.0%} | {p:.2f} | {m:.2f} | {err:+.1%} | "
              f"{p0 / p:.2f}x | {m0 / m:.2f}x | {r_err:+.1%} |")
    print(f"{len(errs)} random plans: mean |error| {np.mean(errs):.1%} (max "
          f"{np.max(errs):.1%}); speed-up vs unpruned, mean |error| {np.mean(rel):.1%} (max "
          f"{np.max(rel):.1%})")


if __name__ == "__main__":
    main()
