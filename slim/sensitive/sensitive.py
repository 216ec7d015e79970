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

from ppdet.slim.pipelines.requests import SensitivityRequest, from_args  # noqa: E402
from ppdet.slim.prune.criteria import CRITERIA  # noqa: E402
from ppdet.utils.cli import ArgsParser, load_config_from_args, run_main  # noqa: E402


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
                        choices=list(CRITERIA))
    parser.add_argument("--eval_samples", type=int, default=None,
                        help="evaluate on the first N eval images only (quick looks)")
    parser.add_argument("--batch_size", type=int, default=16, help="eval batch size")
    parser.add_argument("--mode", default="fast", choices=["fast", "real"],
                        help="fast: one oneDNN program, pruned channels zeroed (same mAP); "
                             "real: prune the dygraph model each time (slower)")
    parser.add_argument("--cpu_threads", type=int, default=None,
                        help="fast mode: one predictor with this many threads. Default: one "
                             "1-thread predictor per core, over disjoint pairs, shared with "
                             "the other sensitive.py processes on this machine (side by side "
                             "or under paddle.distributed.launch)")
    parser.add_argument("--device", default=None, choices=["cpu", "gpu"],
                        help="fast mode: run the predictor on the CPU (every core, oneDNN) or "
                             "on GPU 0 (Paddle Inference GPU). Default: the GPU when this "
                             "paddlepaddle has CUDA and sees one, else the CPU")
    parser.add_argument("--bn_calib", type=int, default=0, metavar="N",
                        help="before each measurement (and the baseline) re-estimate BN "
                             "statistics on N training batches of --batch_size images (eval "
                             "transforms, no gradients); 0: off. Recorded in the sidecar")
    parser.add_argument("--stop_loss", type=float, default=None, metavar="L",
                        help="measure each conv's ratios in ascending order and skip its larger "
                             "ratios once a loss passes L (listed as skipped in the sidecar); "
                             "loss thresholds below L choose the same ratios as the full grid")
    parser.add_argument("--shards", type=int, default=None, help="split pairs into N shards")
    parser.add_argument("--shard_id", type=int, default=None, help="which shard to run")
    parser.add_argument("--adopt", action="store_true",
                        help="add measurements to a sensitivities file that has no sidecar "
                             "(e.g. written by PaddleSlim's own script); it gets this run's")
    parser.epilog = ("loss = (baseline - pruned) / baseline of the config's metric: VOC mAP\n"
                     "(map_type 11point or integral), or with metric: COCO the AP at IoU\n"
                     "0.50:0.95 (COCOeval stats[0], PaddleDetection's headline number).")
    args = parser.parse_args(argv)
    req = from_args(SensitivityRequest, args)      # every option, before anything slow
    cfg = load_config_from_args(args)

    from ppdet.slim import pipelines
    if args.print_params:
        return pipelines.print_params(cfg)
    return pipelines.analyse_sensitivity(cfg, req).sensitivities


if __name__ == "__main__":
    main()
