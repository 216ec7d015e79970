"""Compare baseline, pruned and fine-tuned checkpoints (an example script).

    python slim/prune/report.py -c CFG --models baseline=W0 pruned=W1 "pruned+fine-tuned=W2" \
        [--output report.md] [--layout stages]

Prints a Markdown table: mAP, params, FLOPs, exported size and measured latency (Paddle
Inference, CPU, batch 1, oneDNN, one thread). With --int8 each model is followed by its
INT8 row (post-training quantized; mAP through the predictor, size, latency, speed-up).
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
    parser.add_argument("--int8", action="store_true", help="an INT8 row after each model "
                        "(slim/quant/post_quant.py; mAP through the predictor)")
    parser.add_argument("--calib_samples", type=int, default=32, help="with --int8")
    parser.add_argument("--algo", default="hist", help="with --int8: calibration algorithm")
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
    if args.int8:                       # INT8 options too, before the first evaluation
        from ppdet.slim.quant.report import check_int8_rows, with_int8_rows
        check_int8_rows(cfg, pairs, args.algo, args.calib_samples)

    from ppdet.slim.report import report_table, stage_rows, stage_table
    rows = stage_rows(cfg, pairs)       # each temporary export is removed after its row
    if args.int8:
        rows = with_int8_rows(cfg, rows, pairs, args.algo, args.calib_samples)
    table = stage_table(rows) if args.layout == "stages" else report_table(rows)
    print(table)
    if args.output:
        from ppdet.utils.atomic import atomic_write_bytes
        atomic_write_bytes(args.output, (table + "\n").encode())
        print(f"written to {args.output}")


if __name__ == "__main__":
    main()
