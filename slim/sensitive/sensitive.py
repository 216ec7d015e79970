"""Sensitivity analysis of a detector's convs (an example script: the work is in ppdet.slim).

    python sensitive.py -c ../../configs/yolov3_mobilenet_v1_voc.yml --print_params
    python sensitive.py -c CFG -o weights=output/NAME/model_final \
        --pruned_params "yolo_block.0.0.0.conv.weights,yolo_block.0.tip.conv.weights" \
        --pruned_ratios "0.1 0.2 0.3" --sensitivities_file ./demo.data

Restartable: pairs already in the file are skipped. Split the work by ratio over several
processes (one file each, then merge.py), or with --shards N --shard_id K, or under
``python -m paddle.distributed.launch --nproc_per_node N`` (one shared file).
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from ppdet.utils.cli import ArgsParser, UserError, load_config_from_args, run_main  # noqa: E402


def _shard(args):
    """Explicit flags win; under paddle.distributed.launch each worker takes its rank."""
    if args.shards is not None:
        return args.shards, args.shard_id or 0
    n = int(os.environ.get("PADDLE_TRAINERS_NUM", "1"))
    return n, int(os.environ.get("PADDLE_TRAINER_ID", "0"))


@run_main
def main(argv=None):
    parser = ArgsParser(description=__doc__)
    parser.add_argument("-s", "--sensitivities_file", default="sensitivities.data",
                        help="pickle {param: {ratio: loss}}; measurements are added to it")
    parser.add_argument("-p", "--pruned_params", default=None,
                        help="comma-separated conv weight names, globs or a regex "
                             "(default: every prunable conv)")
    parser.add_argument("-r", "--pruned_ratios", default="0.1 0.2 0.3 0.4 0.5 0.6 0.7 0.8 0.9",
                        help="space-separated ratios of filters to prune")
    parser.add_argument("-P", "--print_params", action="store_true",
                        help="list parameters with shapes and prunability, then exit")
    parser.add_argument("--criterion", default="l1_norm",
                        choices=["l1_norm", "bn_scale", "geometry_median"])
    parser.add_argument("--eval_samples", type=int, default=None,
                        help="evaluate on the first N eval images only (quick looks)")
    parser.add_argument("--batch_size", type=int, default=16, help="eval batch size")
    parser.add_argument("--mode", default="fast", choices=["fast", "real"],
                        help="fast: one oneDNN program, pruned channels zeroed (same mAP); "
                             "real: prune the dygraph model each time (slower)")
    parser.add_argument("--cpu_threads", type=int, default=1,
                        help="threads of the fast-mode predictor (1 suits parallel processes)")
    parser.add_argument("--shards", type=int, default=None, help="split pairs into N shards")
    parser.add_argument("--shard_id", type=int, default=None, help="which shard to run")
    args = parser.parse_args(argv)
    cfg = load_config_from_args(args)

    from ppdet.engine.builder import build_model
    from ppdet.slim.params import format_params, parse_ratios, select_params
    model = build_model(cfg)
    if args.print_params:
        print(format_params(model))
        return None
    params = select_params(model, args.pruned_params or "*")
    ratios = parse_ratios(args.pruned_ratios)
    if args.eval_samples is not None and args.eval_samples < 1:
        raise UserError("--eval_samples must be a positive number of images")
    shards, shard_id = _shard(args)

    from ppdet.engine.builder import build_dataset, build_metric_for
    from ppdet.engine.checkpoint import load_weights, resolve_weights
    from ppdet.slim.pruner import FilterPruner
    from ppdet.slim.sensitivity import (
        CachedEvaluator,
        EvalCache,
        MaskedMeasure,
        RealPruneMeasure,
        fingerprint,
        run_sensitivity,
    )
    from ppdet.slim.sensitivity_store import SensitivityStore
    load_weights(model, cfg.get("weights"))
    cache = EvalCache(build_dataset(cfg, "eval"), cfg["EvalReader"]["sample_transforms"],
                      max_samples=args.eval_samples)
    fp = fingerprint(cfg, resolve_weights(cfg["weights"]) + ".pdparams", cache,
                     args.criterion)
    store = SensitivityStore(args.sensitivities_file, fp)
    pruner = FilterPruner(model, args.criterion)
    pruner.check(params)
    metric = build_metric_for(cfg, cache.dataset)
    if args.mode == "fast":
        from ppdet.slim.fast_eval import MaskedEvaluator
        measure = MaskedMeasure(MaskedEvaluator(model, cache, metric, pruner, args.batch_size,
                                                threads=args.cpu_threads))
    else:
        measure = RealPruneMeasure(pruner, CachedEvaluator(model, cache, metric,
                                                           args.batch_size))
    print(f"{len(params)} convs x {len(ratios)} ratios, shard {shard_id + 1}/{shards}, "
          f"{len(cache)} eval images, {args.mode} mode -> {store.path}")
    return run_sensitivity(measure, store, params, ratios, shards, shard_id)


if __name__ == "__main__":
    main()
