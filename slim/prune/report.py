"""Compare baseline, pruned and fine-tuned checkpoints (an example script).

    python slim/prune/report.py -c CFG --models baseline=W0 pruned=W1 "pruned+fine-tuned=W2" \
        [--output report.md] [--layout stages]

Prints a Markdown table: mAP, params, FLOPs, exported size and measured latency (Paddle
Inference, CPU, batch 1, oneDNN, one thread).
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from ppdet.utils.cli import (  # noqa: E402
    ArgsParser,
    UserError,
    check_writable_file,
    load_config_from_args,
    run_main,
)


@run_main
def main(argv=None):
    parser = ArgsParser(description=__doc__)
    parser.add_argument("--models", nargs="+", required=True, metavar="LABEL=WEIGHTS")
    parser.add_argument("--output", default=None, help="also write the table here")
    parser.add_argument("--layout", default="rows", choices=["rows", "stages"],
                        help="rows: one row per model; stages: one column per model")
    args = parser.parse_args(argv)
    check_writable_file("--output", args.output)
    pairs = []
    for item in args.models:
        if "=" not in item:
            raise UserError(f"--models takes LABEL=WEIGHTS, got '{item}'")
        pairs.append(tuple(item.split("=", 1)))
    labels = [label for label, _ in pairs]
    twice = sorted({label for label in labels if labels.count(label) > 1})
    if twice:
        raise UserError(f"--models gives the label '{twice[0]}' twice: labels name the rows")
    cfg = load_config_from_args(args)
    from ppdet.engine.checkpoint import resolve_weights
    for _, weights in pairs:            # every checkpoint found before the first evaluation
        resolve_weights(weights)

    from ppdet.slim.report import report_table, stage_rows, stage_table
    rows = stage_rows(cfg, pairs)       # each temporary export is removed after its row
    table = stage_table(rows) if args.layout == "stages" else report_table(rows)
    print(table)
    if args.output:
        from ppdet.utils.atomic import atomic_write_bytes
        atomic_write_bytes(args.output, (table + "\n").encode())
        print(f"written to {args.output}")


if __name__ == "__main__":
    main()
