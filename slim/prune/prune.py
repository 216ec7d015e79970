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
    # for the INT8 model that will run (table from latency_table.py --precision int8)
    python slim/prune/prune.py -c CFG -o weights=W --pruned_params "*" --target_speedup 1.5 \
        --precision int8

    # fine-tune under a teacher: the unpruned model (--distill), or another detector
    python slim/prune/prune.py -c CFG -o weights=W -p "yolo_block.*" --pruned_ratios 0.5 --distill
    python slim/prune/prune.py -c CFG -o weights=W -p "yolo_block.*" --pruned_ratios 0.5 \
        --teacher_config WIDER_CFG --teacher_weights WIDER_W

Prints FLOPs/params before and after and the filters kept per conv, then fine-tunes with the
normal training loop; checkpoints carry their channel plan, so eval/infer/export need no ratios.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from ppdet.engine.distill import add_distill_args  # noqa: E402
from ppdet.slim.pipelines.requests import PruneRequest, from_args  # noqa: E402
from ppdet.slim.prune.criteria import CRITERIA  # noqa: E402
from ppdet.utils.cli import (  # noqa: E402
    ArgsParser,
    check_writable_dir,
    load_config_from_args,
    run_main,
)


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
    parser.add_argument("--precision", default="fp32",
                        help="fp32 or int8: the deployment (and latency table) to prune for")
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
    add_distill_args(parser)
    args = parser.parse_args(argv)
    req = from_args(PruneRequest, args)            # every option, before anything slow
    cfg = load_config_from_args(args)
    check_writable_dir("save_dir", cfg.get("save_dir", "output"))
    if not args.no_finetune and not args.print_params:
        from ppdet.engine.optim import check_schedule
        check_schedule(cfg)         # before the pruning: fine-tuning could not run

    from ppdet.slim import pipelines
    if args.print_params:
        return pipelines.print_params(cfg)
    if args.resume_checkpoint:          # the checkpoint's plan rebuilds the shapes
        return pipelines.resume_finetune(cfg, req.resume_checkpoint, validate=req.validate)
    return pipelines.prune_and_finetune(cfg, req)


if __name__ == "__main__":
    main()
