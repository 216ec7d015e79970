"""Prune a trained detector's filters, then fine-tune it (an example script).

    # ratios given
    python slim/prune/prune.py -c CFG -o weights=W --pruned_params "a,b" --pruned_ratios "0.3,0.5"
    # from a sensitivity file, to a loss or a FLOPs target
    python slim/prune/prune.py -c CFG -o weights=W --sensitivities_file s.data --target_flops 0.5
    # uniform: one ratio for every matched conv, found for a FLOPs target
    python slim/prune/prune.py -c CFG -o weights=W --pruned_params "conv2d_[1-9].w_0" \
        --target_ratio 0.2
    # to a measured latency (table from slim/prune/latency_table.py): least sensitivity loss,
    # or one uniform ratio snapped to the table's channel counts (or to multiples of --align)
    python slim/prune/prune.py -c CFG -o weights=W --sensitivities_file s.data \
        --target_speedup 1.5
    python slim/prune/prune.py -c CFG -o weights=W --pruned_params "*" --target_latency 3.0

Prints FLOPs/params before and after and the filters kept per conv, then fine-tunes with the
normal training loop; checkpoints carry their channel plan, so eval/infer/export need no ratios.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from ppdet.slim.criteria import CRITERIA  # noqa: E402
from ppdet.utils.cli import (  # noqa: E402
    ArgsParser,
    UserError,
    check_conflicts,
    check_range,
    check_writable_dir,
    load_config_from_args,
    run_main,
)

_HOW = ("pruned_params", "pruned_ratios", "sensitivities_file", "loss", "target_flops",
        "target_ratio", "target_latency", "target_speedup", "align", "no_finetune")


def check_args(args):
    """Every option before the config, the model or the data are touched; all conflicts
    are named in one line."""
    check_conflicts(args, ("pruned_ratios", "target_ratio", "sensitivities_file"),
                    ("loss", "target_flops", "target_latency", "target_speedup"),
                    ("pruned_ratios", "target_ratio", "target_latency", "target_speedup"),
                    ("eval", "no_finetune"),
                    *[("resume_checkpoint", k) for k in _HOW],
                    needs=[("loss", "sensitivities_file"), ("target_flops", "sensitivities_file"),
                           ("target_ratio", "pruned_params"), ("pruned_ratios", "pruned_params"),
                           ("target_latency", ("sensitivities_file", "pruned_params")),
                           ("target_speedup", ("sensitivities_file", "pruned_params"))])
    for name in ("target_ratio", "target_flops", "loss"):
        check_range(f"--{name}", getattr(args, name), 0, 1, low_open=True, high_open=True)
    check_range("--align", args.align, 1, integer=True)
    check_range("--target_latency", args.target_latency, 0, low_open=True)
    check_range("--target_speedup", args.target_speedup, 1, low_open=True)
    if args.latency_table and not os.path.isfile(args.latency_table):
        raise UserError(f"latency table not found: {args.latency_table}: build it with "
                        f"slim/prune/latency_table.py -c CONFIG -o weights=W --output "
                        f"{args.latency_table}")
    if args.sensitivities_file and not os.path.isfile(args.sensitivities_file):
        raise UserError(f"sensitivities file not found: {args.sensitivities_file}")


@run_main
def main(argv=None):
    parser = ArgsParser(description=__doc__)
    parser.add_argument("-p", "--pruned_params", default=None, help="names, globs or a regex")
    parser.add_argument("--pruned_ratios", default=None,
                        help="one ratio for all, or one per param (comma-separated)")
    parser.add_argument("--sensitivities_file", default=None)
    parser.add_argument("--loss", type=float, default=None, help="loss threshold (with -s)")
    parser.add_argument("--target_flops", type=float, default=None,
                        help="share of FLOPs to remove, ratios from the sensitivities")
    parser.add_argument("--target_ratio", type=float, default=None,
                        help="share of FLOPs to remove with one ratio for --pruned_params")
    parser.add_argument("--target_latency", type=float, default=None,
                        help="milliseconds per image on the latency table's target")
    parser.add_argument("--target_speedup", type=float, default=None,
                        help="times faster than unpruned on the latency table's target")
    parser.add_argument("--latency_table", default=None,
                        help="table of slim/prune/latency_table.py (default: beside weights)")
    parser.add_argument("--threads", type=int, default=1,
                        help="CPU threads the latency table was measured with")
    parser.add_argument("--criterion", "--prune_criterion", default="l1_norm",
                        choices=list(CRITERIA))
    parser.add_argument("--idx_selector", default="default",
                        choices=["default", "optimal_threshold"])
    parser.add_argument("--align", type=int, default=None, help="keep multiples of N filters")
    parser.add_argument("-P", "--print_params", action="store_true")
    parser.add_argument("--eval", action="store_true", help="evaluate while fine-tuning")
    parser.add_argument("-r", "--resume_checkpoint", default=None,
                        help="resume fine-tuning from a checkpoint of this script, in its "
                             "own folder")
    parser.add_argument("--no_finetune", action="store_true", help="prune and save only")
    args = parser.parse_args(argv)
    check_args(args)
    cfg = load_config_from_args(args)
    check_writable_dir("save_dir", cfg.get("save_dir", "output"))
    if not args.no_finetune and not args.print_params:
        from ppdet.engine.optim import check_schedule
        check_schedule(cfg)         # before the pruning: fine-tuning could not run

    from ppdet.slim import pipelines
    if args.print_params:
        return pipelines.print_params(cfg)
    if args.resume_checkpoint:          # the checkpoint's plan rebuilds the shapes
        return pipelines.resume_finetune(cfg, args.resume_checkpoint, validate=args.eval)
    return pipelines.prune_and_finetune(
        cfg, args.pruned_params, args.pruned_ratios, args.sensitivities_file, args.loss,
        args.target_flops, args.target_ratio, args.criterion, args.idx_selector, args.align,
        finetune=not args.no_finetune, validate=args.eval, target_latency=args.target_latency,
        target_speedup=args.target_speedup, latency_table=args.latency_table,
        threads=args.threads)


if __name__ == "__main__":
    main()
