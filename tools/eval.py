"""Evaluate a trained (or pruned) detector (an example script: the work is in ppdet.engine).

    python tools/eval.py -c configs/shapes/yolov3_mobilenet_v1_shapes.yml \
        -o weights=output/yolov3_mobilenet_v1_shapes/model_final
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ppdet.utils.cli import (  # noqa: E402
    ArgsParser,
    check_writable_dir,
    load_config_from_args,
    run_main,
)


@run_main
def main(argv=None):
    parser = ArgsParser(description=__doc__)
    parser.add_argument("--output_eval", default=None,
                        help="directory for the detections as COCO bbox.json")
    args = parser.parse_args(argv)
    check_writable_dir("--output_eval", args.output_eval)
    cfg = load_config_from_args(args)

    from ppdet.engine.builder import build_metric_for, build_model, build_reader
    from ppdet.engine.checkpoint import load_weights
    from ppdet.engine.evaluate import evaluate
    loader = build_reader(cfg, "eval")      # a missing dataset is reported before anything loads
    model = build_model(cfg)
    load_weights(model, cfg.get("weights"))
    metric = build_metric_for(cfg, loader.dataset)
    result = evaluate(model, loader, metric, output_eval=args.output_eval)
    metric.log()
    if args.output_eval:
        print(f"detections written to {os.path.join(args.output_eval, 'bbox.json')}")
    else:
        print("wrote nothing (pass --output_eval DIR to keep the detections as bbox.json)")
    return result


if __name__ == "__main__":
    main()
