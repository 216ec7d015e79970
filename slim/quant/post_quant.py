"""Quantize a trained or pruned detector to INT8 after training (an example script).

    python slim/quant/post_quant.py -c CFG -o weights=output/NAME_pruned/model_final \
        [--calib_samples 32] [--algo hist] [--output_dir output_inference]

Exports the model (a pruned checkpoint keeps its channel plan), calibrates on
--calib_samples TrainDataset images with the eval transforms (in a child process on the
legacy IR), and writes OUTPUT_DIR/<run>_int8/ (model.pdmodel, model.pdiparams,
infer_cfg.yml with `precision: int8`). Then prints the FP32 and INT8 mAP, both through
Paddle Inference, side by side. With --sensitivities_file F it first measures (or resumes)
each conv's quantization sensitivity into F; --max_loss L then keeps in FP32 the fewest
convs (largest gain first) for an INT8 mAP at most L points below FP32. Run the result with
deploy/python/infer.py: INT8 needs oneDNN, and the predictor switches its INT8 mode on.
With an INT8 latency table beside the weights (``prune.py --precision int8`` copies it to
the pruned run's folder) it also prints the INT8 model's measured latency next to the
table's prediction.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from ppdet.engine.legacy_ir import ALGOS  # noqa: E402
from ppdet.utils.cli import (  # noqa: E402
    ArgsParser,
    check_conflicts,
    check_range,
    check_writable_file,
    from_args,
    load_config_from_args,
    run_main,
)


@run_main
def main(argv=None):
    parser = ArgsParser(description=__doc__)
    parser.add_argument("--output_dir", default="output_inference",
                        help="parent of the INT8 model folder <run>_int8")
    parser.add_argument("--calib_samples", type=int, default=32,
                        help="TrainDataset images to calibrate on")
    parser.add_argument("--calib_batch_size", type=int, default=8)
    parser.add_argument("--algo", default="hist", choices=ALGOS,
                        help="activation calibration (Paddle's PostTrainingQuantization names)")
    parser.add_argument("--skip", nargs="+", default=[], metavar="CONV_WEIGHT",
                        help="conv weights (parameter names) kept in FP32")
    parser.add_argument("--sensitivities_file", default=None,
                        help="per-conv quantization sensitivity (JSON; measured, or resumed)")
    parser.add_argument("--sensitive_convs", nargs="+", default=None, metavar="CONV_WEIGHT",
                        help="measure only these convs (default: every conv)")
    parser.add_argument("--max_loss", type=float, default=None,
                        help="with --sensitivities_file: keep in FP32 the fewest convs for an "
                             "INT8 mAP at most this many points below FP32")
    parser.add_argument("--no_eval", action="store_true", help="skip the mAP comparison")
    parser.add_argument("--cpu_threads", type=int, default=1, help="predictor threads (eval)")
    args = parser.parse_args(argv)
    check_conflicts(args, ("skip", "max_loss"), needs=[("max_loss", "sensitivities_file"),
                                                       ("sensitive_convs", "sensitivities_file")])
    check_range("--max_loss", args.max_loss, 0)
    if args.sensitivities_file:
        check_writable_file("--sensitivities_file", args.sensitivities_file)
    cfg = load_config_from_args(args)
    from ppdet.slim.quant.pipeline import QuantRequest, post_quant
    req = from_args(QuantRequest, args, cfg=cfg, weights=cfg.get("weights"))
    if args.sensitivities_file:
        from ppdet.slim.quant.sensitivity import skip_for_max_loss
        skip, _ = skip_for_max_loss(req, args.sensitivities_file, args.max_loss,
                                    args.sensitive_convs)
        if skip is None:                # measured only
            return print(f"sensitivities in {args.sensitivities_file}")
        req.skip = tuple(skip)
    result = post_quant(req)
    if result.int8_map is not None:
        print(f"| precision | {result.metric}, x100 |\n|---|---|\n"
              f"| FP32 (predictor) | {result.fp32_map:.2f} |\n"
              f"| INT8 (predictor) | {result.int8_map:.2f} "
              f"({result.int8_map - result.fp32_map:+.2f}) |")
    # an INT8 latency table beside the weights (prune.py --precision int8 copies it there):
    # the INT8 model measured beside the table's prediction
    from ppdet.slim.pipelines import check_exported_latency
    check_exported_latency(cfg, None, result.out_dir, args.cpu_threads, "int8")
    return result


if __name__ == "__main__":
    main()
