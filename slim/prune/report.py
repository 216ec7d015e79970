"""Compare baseline, pruned and fine-tuned checkpoints (an example script).

    python slim/prune/report.py -c CFG --models baseline=W0 pruned=W1 "pruned+fine-tuned=W2" \
        [--output report.md] [--layout stages]

Prints a Markdown table: mAP, params, FLOPs, exported size and measured latency (Paddle
Inference, CPU, batch 1, oneDNN, one thread).
"""
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from ppdet.utils.cli import ArgsParser, UserError, load_config_from_args, run_main  # noqa: E402


@run_main
def main(argv=None):
    parser = ArgsParser(description=__doc__)
    parser.add_argument("--models", nargs="+", required=True, metavar="LABEL=WEIGHTS")
    parser.add_argument("--output", default=None, help="also write the table here")
    parser.add_argument("--layout", default="rows", choices=["rows", "stages"],
                        help="rows: one row per model; stages: one column per model")
    args = parser.parse_args(argv)
    cfg = load_config_from_args(args)
    pairs = []
    for item in args.models:
        if "=" not in item:
            raise UserError(f"--models takes LABEL=WEIGHTS, got '{item}'")
        pairs.append(tuple(item.split("=", 1)))

    from ppdet.slim.report import model_row, report_table, stage_table
    rows = [(label, model_row(cfg, weights, tempfile.mkdtemp(prefix="report_")))
            for label, weights in pairs]
    table = stage_table(rows) if args.layout == "stages" else report_table(rows)
    print(table)
    if args.output:
        from ppdet.utils.atomic import atomic_write_bytes
        atomic_write_bytes(args.output, (table + "\n").encode())
        print(f"written to {args.output}")


if __name__ == "__main__":
    main()
