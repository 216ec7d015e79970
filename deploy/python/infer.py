"""Run an exported model with Paddle Inference (oneDNN on by default).

    python deploy/python/infer.py --model_dir output_inference/NAME --image_file img.jpg
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model_dir", required=True, help="directory written by export_model")
    parser.add_argument("--image_file", required=True, help="image to run on")
    parser.add_argument("--output_dir", default="output", help="where the drawn image goes")
    parser.add_argument("--threshold", type=float, default=None, help="draw threshold "
                        "(default: infer_cfg.yml's draw_threshold)")
    parser.add_argument("--no_mkldnn", action="store_true", help="turn oneDNN off")
    parser.add_argument("--cpu_threads", type=int, default=1)
    args = parser.parse_args(argv)
    for need in ("model.pdmodel", "infer_cfg.yml"):
        if not os.path.isfile(os.path.join(args.model_dir, need)):
            sys.exit(f"error: {os.path.join(args.model_dir, need)} not found: export the model "
                     f"first with tools/export_model.py")
    if not os.path.isfile(args.image_file):
        sys.exit(f"error: image not found: {args.image_file}")

    import cv2

    from ppdet.engine.export import Predictor
    from ppdet.utils.visualize import draw_detections
    predictor = Predictor(args.model_dir, use_mkldnn=not args.no_mkldnn,
                          cpu_threads=args.cpu_threads)
    bgr = cv2.imread(args.image_file)
    bbox, _ = predictor.predict_image(bgr[:, :, ::-1])
    threshold = args.threshold if args.threshold is not None else \
        predictor.infer_cfg.get("draw_threshold", 0.5)
    names = predictor.infer_cfg.get("label_list", [])
    for cls, score, x1, y1, x2, y2 in bbox:
        if cls >= 0 and score >= threshold:
            name = names[int(cls)] if int(cls) < len(names) else int(cls)
            print(f"{name} {score:.3f} [{x1:.1f}, {y1:.1f}, {x2:.1f}, {y2:.1f}]")
    os.makedirs(args.output_dir, exist_ok=True)
    out = os.path.join(args.output_dir, os.path.basename(args.image_file))
    cv2.imwrite(out, draw_detections(bgr, bbox, names, threshold))
    print(f"drawn image: {out}")


if __name__ == "__main__":
    main()
