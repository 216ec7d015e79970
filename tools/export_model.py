"""Export a trained (or pruned) detector for Paddle Inference (an example script).

    python tools/export_model.py -c CFG -o weights=output/NAME/model_final --output_dir out
writes out/<run name>/model.pdmodel, model.pdiparams and infer_cfg.yml, where the run name
is the weights' folder (NAME, NAME_pruned, ...), so exports of different runs never collide.
The export is built beside that folder, checked, and swapped in whole: a full disk or a kill
leaves a previous export there exactly as it was.
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
    from ppdet.engine.export import check_export_target, export_model
    from ppdet.utils.outputs import run_name
    model = build_model(cfg)
    meta = load_weights(model, cfg.get("weights"))
    names = class_names_for(cfg)
    folder = os.path.join(args.output_dir, run_name(cfg, cfg.get("weights"), meta))
    check_export_target(folder)
    out = export_model(model, cfg, folder, names)
    print(f"exported to {out}/ (model.pdmodel, model.pdiparams, infer_cfg.yml)")
    return out


if __name__ == "__main__":
    main()
