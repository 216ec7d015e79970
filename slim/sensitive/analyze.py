"""Read a sensitivities file: plot, table, and ratios to feed slim/prune/prune.py.

    python analyze.py demo.data --loss 0.05
    python analyze.py demo.data --target_flops 0.5 -c CFG
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from ppdet.utils.cli import UserError, run_main  # noqa: E402


@run_main
def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sensitivities_file")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--loss", type=float, default=None, help="loss threshold")
    group.add_argument("--target_flops", type=float, default=None,
                       help="share of FLOPs to remove (needs -c)")
    parser.add_argument("-c", "--config", default=None, help="model config (for FLOPs)")
    parser.add_argument("-o", "--opt", nargs="+", default=[], help="config overrides")
    parser.add_argument("--plot", default=None, help="PNG path (default: FILE.png)")
    args = parser.parse_args(argv)
    from ppdet.slim.report import plot_sensitivities, sensitivity_table
    from ppdet.slim.sensitivity_store import load_sensitivities_file
    if not os.path.isfile(args.sensitivities_file):
        raise UserError(f"sensitivities file not found: {args.sensitivities_file}")
    sens = load_sensitivities_file(args.sensitivities_file)
    if not sens:
        raise UserError(f"{args.sensitivities_file} holds no measurements yet")
    ratios, threshold = None, args.loss
    if args.target_flops is not None:
        if not args.config:
            raise UserError("--target_flops needs the model: pass -c CONFIG")
        from ppdet.core.config import load_config
        from ppdet.engine.builder import build_model, image_size_for
        from ppdet.slim.ratios import search_loss_for_flops
        cfg = load_config(args.config, args.opt)
        model = build_model(cfg)
        threshold, ratios, got = search_loss_for_flops(model, sens, args.target_flops,
                                                       image_size_for(cfg, "eval"))
        print(f"loss threshold {threshold:.4f} removes {got:.1%} of FLOPs "
              f"(target {args.target_flops:.0%})")
    elif args.loss is not None:
        from ppdet.slim.ratios import ratios_by_loss
        ratios = ratios_by_loss(sens, args.loss)
    plot = args.plot or os.path.splitext(args.sensitivities_file)[0] + ".png"
    plot_sensitivities(sens, plot, os.path.basename(args.sensitivities_file), threshold)
    print(sensitivity_table(sens, ratios))
    print(f"plot: {plot}")
    if ratios:
        names = list(ratios)
        print("feed to slim/prune/prune.py:")
        print(f'  --pruned_params "{",".join(names)}" '
              f'--pruned_ratios "{",".join(f"{ratios[n]:g}" for n in names)}"')
    elif ratios is not None:
        print("no conv can be pruned within that loss")


if __name__ == "__main__":
    main()
