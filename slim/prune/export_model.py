"""Export a pruned detector for Paddle Inference and verify the export (an example script).

    python slim/prune/export_model.py -c CFG -o weights=output/NAME_pruned/model_final \
        --output_dir output_inference

Writes OUTPUT_DIR/<run name>/ (NAME_pruned for output/NAME_pruned/model_final), so the
pruned export never replaces the baseline's. The checkpoint's channel plan rebuilds the
pruned shapes (no ratios needed). Prints every
pruned parameter's shape, exports (paddle.jit.save + infer_cfg.yml), then checks that
Paddle Inference with oneDNN gives the dygraph model's detections on sample images. The
export is verified before it is swapped in: a failed verification, a full disk or a kill
leaves a previous export in that folder exactly as it was.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from ppdet.utils.cli import (  # noqa: E402
    ArgsParser,
    UserError,
    check_range,
    check_writable_dir,
    load_config_from_args,
    run_main,
)


@run_main
def main(argv=None):
    parser = ArgsParser(description=__doc__)
    parser.add_argument("--output_dir", default="output_inference")
    parser.add_argument("--verify_images", type=int, default=4,
                        help="eval images to compare exported vs dygraph outputs on (0: skip)")
    args = parser.parse_args(argv)
    check_range("--verify_images", args.verify_images, 0)
    check_writable_dir("--output_dir", args.output_dir)
    cfg = load_config_from_args(args)

    from ppdet.engine.builder import build_dataset, build_model, class_names_for
    from ppdet.engine.checkpoint import load_weights
    from ppdet.engine.export import check_export_target, export_model, verify_export
    reference = {p.name: list(p.shape) for p in build_model(cfg).parameters()}
    from ppdet.utils.outputs import run_name
    model = build_model(cfg)
    meta = load_weights(model, cfg.get("weights"))
    pruned = [(p.name, reference[p.name], list(p.shape)) for p in model.parameters()
              if list(p.shape) != reference[p.name]]
    print(f"{len(pruned)} pruned parameters:" if pruned else "no pruned parameters")
    for name, before, after in pruned:
        print(f"  {name}: {before} -> {after}")
    folder = os.path.join(args.output_dir, run_name(cfg, cfg.get("weights"), meta))
    check_export_target(folder)
    images = [r["im_file"] for r in build_dataset(cfg, "eval").records[:args.verify_images]] \
        if args.verify_images > 0 else []
    verified = []

    def verify(tmp):                # before the swap: a failure keeps the previous export
        try:
            verified.append(verify_export(model, tmp, images))
        except AssertionError as e:
            raise UserError(f"export verification failed: {e} (nothing was replaced in "
                            f"{folder})") from e
    out = export_model(model, cfg, folder, class_names_for(cfg),
                       verify=verify if images else None)
    print(f"exported to {out}/ (model.pdmodel, model.pdiparams, infer_cfg.yml)")
    if verified:
        result = verified[0]
        n, boxes, box_err, score_err = result
        print(f"verified with Paddle Inference + oneDNN on {n} images: {result.values} raw "
              f"head output values (max relative difference {result.head_diff:.1e}), "
              f"{boxes} boxes, max relative box difference {box_err:.1e}, max score "
              f"difference {score_err:.1e}")
    from ppdet.slim.pipelines import check_exported_latency
    check_exported_latency(cfg, model, out)     # a latency table for this config: check it

if __name__ == "__main__":
    main()
