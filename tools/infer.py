"""Run a detector on images and write them with boxes drawn (an example script).

    python tools/infer.py -c CFG -o weights=output/NAME/model_final \
        --infer_img demo.jpg | --infer_dir images/ [--output_dir output] [--draw_threshold 0.5]
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ppdet.utils.cli import (  # noqa: E402
    ArgsParser,
    UserError,
    check_conflicts,
    check_not_inputs,
    check_range,
    check_writable_dir,
    load_config_from_args,
    run_main,
)

_IMAGE_EXT = (".jpg", ".jpeg", ".png", ".bmp")


def _images(args):
    if args.infer_img:
        if not os.path.isfile(args.infer_img):
            raise UserError(f"image not found: {args.infer_img}")
        return [args.infer_img]
    if args.infer_dir and os.path.isdir(args.infer_dir):
        files = sorted(os.path.join(args.infer_dir, f) for f in os.listdir(args.infer_dir)
                       if f.lower().endswith(_IMAGE_EXT))
        if files:
            return files
        raise UserError(f"no images ({', '.join(_IMAGE_EXT)}) in {args.infer_dir}")
    raise UserError("give --infer_img FILE or --infer_dir DIR (an existing directory)")


@run_main
def main(argv=None):
    parser = ArgsParser(description=__doc__)
    parser.add_argument("--infer_img", default=None, help="one image")
    parser.add_argument("--infer_dir", default=None, help="a directory of images")
    parser.add_argument("--output_dir", default="output",
                        help="where drawn images go, under their own names (default output/)")
    parser.add_argument("--draw_threshold", type=float, default=0.5, help="score threshold")
    args = parser.parse_args(argv)
    check_conflicts(args, ("infer_img", "infer_dir"))
    check_range("--draw_threshold", args.draw_threshold, 0, 1)
    check_writable_dir("--output_dir", args.output_dir)
    files = _images(args)
    check_not_inputs("--output_dir", args.output_dir, files)
    cfg = load_config_from_args(args)

    import cv2
    import paddle

    from ppdet.data.transforms import Compose
    from ppdet.engine.builder import build_model, class_names_for
    from ppdet.engine.checkpoint import load_weights
    from ppdet.utils.atomic import atomic_imwrite
    from ppdet.utils.visualize import draw_detections
    model = build_model(cfg)
    load_weights(model, cfg.get("weights"))
    model.eval()
    names = class_names_for(cfg)
    transform = Compose(cfg["TestReader"]["sample_transforms"])
    os.makedirs(args.output_dir, exist_ok=True)
    for path in files:
        sample = transform({"im_file": path, "im_id": 0})
        inputs = {k: paddle.to_tensor(sample[k][None]) for k in
                  ("image", "im_shape", "scale_factor")}
        with paddle.no_grad():
            bbox = model(inputs)["bbox"].numpy()
        drawn = draw_detections(cv2.imread(path), bbox, names, args.draw_threshold)
        out = os.path.join(args.output_dir, os.path.basename(path))
        atomic_imwrite(out, drawn)           # never a half-written image
        kept = int(((bbox[:, 1] >= args.draw_threshold) & (bbox[:, 0] >= 0)).sum())
        print(f"{path}: {kept} detections -> {out}")
    print(f"{len(files)} drawn image(s) written to {args.output_dir}/")


if __name__ == "__main__":
    main()
