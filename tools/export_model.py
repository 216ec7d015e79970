"""Export a trained (or pruned) detector for Paddle Inference (an example script).

    python tools/export_model.py -c CFG -o weights=output/NAME/model_final --output_dir out
writes out/<config name>/model.pdmodel, model.pdiparams and infer_cfg.yml.
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
    parser.add_argument("--output_dir", default="output_inference",
                        help="parent directory of the exported model")
    args = parser.parse_args(argv)
    check_writable_dir("--output_dir", args.output_dir)
    cfg = load_config_from_args(args)

    from ppdet.engine.builder import build_model, class_names_for
    from ppdet.engine.checkpoint import load_weights
    from ppdet.engine.export import export_model
    model = build_model(cfg)
    load_weights(model, cfg.get("weights"))
    names = class_names_for(cfg)
    out = export_model(model, cfg, os.path.join(args.output_dir, cfg["filename"]), names)
    print(f"exported to {out}")
    return out


if __name__ == "__main__":
    main()
