"""Build (or finish) the latency table of a config on this machine (CPU, oneDNN).

    python slim/prune/latency_table.py -c CFG -o weights=W [--threads 1] [--step 8] \
        [--max_counts N] [--passes N] [--output PATH]

Every prunable group at every multiple of ``--step`` channels (and its full width), timed
with Paddle Inference at the config's deploy size, plus the whole exported model. Written
beside the weights (``latency_cpu-onednn_t<N>_<H>x<W>.json``) entry by entry: stop it any
time and run it again to go on; run it again with a larger ``--passes`` to add timings to
every entry (the fastest is kept: on a busy machine more passes steady the table).
See ppdet/slim/latency.py for the model it predicts with.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from ppdet.utils.cli import (  # noqa: E402
    ArgsParser,
    check_range,
    load_config_from_args,
    run_main,
)


@run_main
def main(argv=None):
    parser = ArgsParser(description=__doc__)
    parser.add_argument("--threads", type=int, default=1, help="CPU threads of the predictor")
    parser.add_argument("--step", type=int, default=8, help="measure every multiple of N")
    parser.add_argument("--max_counts", type=int, default=None,
                        help="at most N counts per group (evenly spread), for big models")
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--passes", type=int, default=None,
                        help="timings of each entry, in separate passes, the fastest kept "
                             "(default: 2)")
    parser.add_argument("--output", default=None, help="table file (default: beside weights)")
    args = parser.parse_args(argv)
    check_range("--threads", args.threads, 1, integer=True)
    check_range("--step", args.step, 1, integer=True)
    check_range("--repeats", args.repeats, 1, integer=True)
    if args.passes is not None:
        check_range("--passes", args.passes, 1, integer=True)
    if args.max_counts is not None:
        check_range("--max_counts", args.max_counts, 2, integer=True)
    cfg = load_config_from_args(args)
    from ppdet.engine.builder import build_model, image_size_for
    from ppdet.engine.checkpoint import load_weights
    from ppdet.slim.graph import PruneGraph
    from ppdet.slim.latency import build_table, table_path
    size = image_size_for(cfg, "test")
    path = args.output or table_path(cfg.get("weights"), size, args.threads)
    model = build_model(cfg)
    if cfg.get("weights"):
        load_weights(model, cfg.get("weights"))
    table = build_table(PruneGraph.of(model), cfg, path, size, threads=args.threads,
                        step=args.step, max_counts=args.max_counts, repeats=args.repeats,
                        passes=args.passes)
    print(f"{path}: {sum(len(e) for e in table.entries.values())} entries over "
          f"{len(table.entries)} groups; whole model {table.full_ms:.2f} ms at "
          f"{size[0]}x{size[1]}, {args.threads} thread(s)")


if __name__ == "__main__":
    main()
