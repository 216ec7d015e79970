"""Run an exported model with Paddle Inference (oneDNN on by default; an INT8 model, as its
infer_cfg.yml says, runs with oneDNN's INT8 kernels, and --no_mkldnn is refused for it).

    python deploy/python/infer.py --model_dir output_inference/NAME --image_file img.jpg
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from ppdet.utils.cli import (  # noqa: E402
    ArgumentParser,
    UserError,
    check_not_inputs,
    check_range,
    check_writable_dir,
    run_main,
)


@run_main
def main(argv=None):
    parser = ArgumentParser(description=__doc__)
    parser.add_argument("--model_dir", required=True, help="directory written by export_model")
    parser.add_argument("--image_file", required=True, help="image to run on")
    parser.add_argument("--output_dir", default=os.path.join("output", "deploy"),
                        help="where the drawn image goes, under its own name (default "
                             "output/deploy/, apart from tools/infer.py's output/)")
    parser.add_argument("--threshold", type=float, default=None, help="draw threshold "
                        "(default: infer_cfg.yml's draw_threshold)")
    parser.add_argument("--no_mkldnn", action="store_true", help="turn oneDNN off (refused "
                        "for an INT8 model: infer_cfg.yml's precision turns INT8 on)")
    parser.add_argument("--cpu_threads", type=int, default=1)
    args = parser.parse_args(argv)
    check_range("--threshold", args.threshold, 0, 1)
    check_range("--cpu_threads", args.cpu_threads, 1)
    check_writable_dir("--output_dir", args.output_dir)
    check_not_inputs("--output_dir", args.output_dir, [args.image_file])
    for need in ("model.pdmodel", "model.pdiparams", "infer_cfg.yml"):
        if not os.path.exists(os.path.join(args.model_dir, need)):   # the rest: below
            raise UserError(f"{os.path.join(args.model_dir, need)} not found: export the "
                            f"model first with tools/export_model.py")

    import cv2

    from ppdet.engine.export import Predictor, check_model_dir, read_image
    from ppdet.utils.atomic import atomic_imwrite
    from ppdet.utils.visualize import draw_detections
    rgb = read_image(args.image_file)       # a missing or corrupt image: one line, exit 2
    bgr = cv2.imread(args.image_file)
    # every file readable, the program parseable, the parameters whole: one line naming
    # the broken file, before Paddle Inference sees the folder
    check_model_dir(args.model_dir)
    predictor = Predictor(args.model_dir, use_mkldnn=not args.no_mkldnn,
                          cpu_threads=args.cpu_threads)
    print(f"precision: {predictor.precision}")
    bbox, _ = predictor.predict_image(rgb)
    threshold = args.threshold if args.threshold is not None else \
        predictor.infer_cfg.get("draw_threshold", 0.5)
    names = predictor.infer_cfg.get("label_list", [])
    for cls, score, x1, y1, x2, y2 in bbox:
        if cls >= 0 and score >= threshold:
            name = names[int(cls)] if int(cls) < len(names) else int(cls)
            print(f"{name} {score:.3f} [{x1:.1f}, {y1:.1f}, {x2:.1f}, {y2:.1f}]")
    os.makedirs(args.output_dir, exist_ok=True)
    out = os.path.join(args.output_dir, os.path.basename(args.image_file))
    atomic_imwrite(out, draw_detections(bgr, bbox, names, threshold))
    print(f"drawn image written to {out}")


if __name__ == "__main__":
    main()
