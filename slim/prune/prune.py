"""Prune a trained detector's filters, then fine-tune it (an example script).

    # ratios given
    python slim/prune/prune.py -c CFG -o weights=W --pruned_params "a,b" --pruned_ratios "0.3,0.5"
    # from a sensitivity file, to a loss or a FLOPs target
    python slim/prune/prune.py -c CFG -o weights=W --sensitivities_file s.data --target_flops 0.5
    # uniform: one ratio for every matched conv, found for a FLOPs target
    python slim/prune/prune.py -c CFG -o weights=W --pruned_params "conv2d_[1-9].w_0" \
        --target_ratio 0.2

Prints FLOPs/params before and after and the filters kept per conv, then fine-tunes with the
normal training loop; checkpoints carry their channel plan, so eval/infer/export need no ratios.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from ppdet.utils.cli import (  # noqa: E402
    ArgsParser,
    UserError,
    check_conflicts,
    check_range,
    check_writable_dir,
    load_config_from_args,
    run_main,
)

_HOW = ("pruned_params", "pruned_ratios", "sensitivities_file", "loss", "target_flops",
        "target_ratio", "align", "no_finetune")


def check_args(args):
    """Every option before the config, the model or the data are touched; all conflicts
    are named in one line."""
    check_conflicts(args, ("pruned_ratios", "target_ratio", "sensitivities_file"),
                    ("loss", "target_flops"), ("eval", "no_finetune"),
                    *[("resume_checkpoint", k) for k in _HOW],
                    needs=[("loss", "sensitivities_file"), ("target_flops", "sensitivities_file"),
                           ("target_ratio", "pruned_params"), ("pruned_ratios", "pruned_params")])
    for name in ("target_ratio", "target_flops", "loss"):
        check_range(f"--{name}", getattr(args, name), 0, 1, low_open=True, high_open=True)
    check_range("--align", args.align, 1, integer=True)
    if args.sensitivities_file and not os.path.isfile(args.sensitivities_file):
        raise UserError(f"sensitivities file not found: {args.sensitivities_file}")


def resume_folder(checkpoint):
    """The folder of a checkpoint of this script's fine-tuning, where ``-r`` goes on.

    Refused: a folder without the run's ``pruned.pdparams`` (not a run of this script), or
    one whose ``pruned.pdparams`` has another channel plan (another run's files, which
    resuming there would overwrite)."""
    import paddle

    from ppdet.engine.checkpoint import META_KEY, CheckpointError, resolve_weights
    base = os.path.abspath(resolve_weights(checkpoint))
    folder = os.path.dirname(base)

    def plan_of(path):
        try:
            state = paddle.load(path + ".pdparams")
        except Exception as e:
            raise CheckpointError(f"cannot read weights {path}.pdparams: "
                                  f"{type(e).__name__}") from e
        meta = state.get(META_KEY) if isinstance(state, dict) else None
        return (meta or {}).get("channel_plan") or {}

    first = os.path.join(folder, "pruned")
    if not os.path.isfile(first + ".pdparams"):
        raise UserError(f"-r {checkpoint}: {folder} holds no pruned.pdparams, so it is not a "
                        f"run of slim/prune/prune.py; resume other runs with tools/train.py -r")
    if first != base and plan_of(first) != plan_of(base):
        raise UserError(f"-r {checkpoint}: {folder} holds another run's files (its "
                        f"pruned.pdparams has another channel plan); resuming there would "
                        f"overwrite them: copy the checkpoint to a folder of its own")
    return folder


@run_main
def main(argv=None):
    parser = ArgsParser(description=__doc__)
    parser.add_argument("-p", "--pruned_params", default=None, help="names, globs or a regex")
    parser.add_argument("--pruned_ratios", default=None,
                        help="one ratio for all, or one per param (comma-separated)")
    parser.add_argument("--sensitivities_file", default=None)
    parser.add_argument("--loss", type=float, default=None, help="loss threshold (with -s)")
    parser.add_argument("--target_flops", type=float, default=None,
                        help="share of FLOPs to remove, ratios from the sensitivities")
    parser.add_argument("--target_ratio", type=float, default=None,
                        help="share of FLOPs to remove with one ratio for --pruned_params")
    parser.add_argument("--criterion", "--prune_criterion", default="l1_norm",
                        choices=["l1_norm", "bn_scale", "geometry_median"])
    parser.add_argument("--idx_selector", default="default",
                        choices=["default", "optimal_threshold"])
    parser.add_argument("--align", type=int, default=None, help="keep multiples of N filters")
    parser.add_argument("-P", "--print_params", action="store_true")
    parser.add_argument("--eval", action="store_true", help="evaluate while fine-tuning")
    parser.add_argument("-r", "--resume_checkpoint", default=None,
                        help="resume fine-tuning from a checkpoint of this script, in its "
                             "own folder")
    parser.add_argument("--no_finetune", action="store_true", help="prune and save only")
    args = parser.parse_args(argv)
    check_args(args)
    cfg = load_config_from_args(args)
    check_writable_dir("save_dir", cfg.get("save_dir", "output"))

    import paddle

    from ppdet.engine.builder import build_model, image_size_for
    from ppdet.engine.checkpoint import (
        channel_plan,
        ensure_outside,
        load_weights,
        save_checkpoint,
    )
    from ppdet.engine.trainer import Trainer, set_seed
    from ppdet.slim.params import format_params
    from ppdet.slim.prune_plan import (
        align_ratios,
        choose_ratios,
        count_params,
        prune_model,
        summary,
    )
    from ppdet.slim.pruner import FilterPruner, model_flops
    set_seed(int(cfg.get("seed", 0)))
    model = build_model(cfg)
    if args.print_params:
        print(format_params(model))
        return None
    save_dir = os.path.join(cfg.get("save_dir", "output"), cfg["filename"] + "_pruned")
    if args.resume_checkpoint:          # the checkpoint's channel plan rebuilds the shapes
        trainer = Trainer(cfg, model=model, save_dir=resume_folder(args.resume_checkpoint))
        trainer.resume(args.resume_checkpoint)
        trainer.train(validate=args.eval)
        return None
    size = image_size_for(cfg, "eval")
    ensure_outside(cfg.get("weights"), save_dir)
    load_weights(model, cfg.get("weights"))
    pruner = FilterPruner(model, args.criterion, args.idx_selector)
    ratios, how = choose_ratios(model, size, args.pruned_params, args.pruned_ratios,
                                args.sensitivities_file, args.loss, args.target_flops,
                                args.target_ratio, pruner=pruner)
    ratios = align_ratios(model, ratios, args.align)
    if not ratios:
        raise UserError("nothing to prune with these settings")
    flops0, params0 = model_flops(model, size), count_params(model)
    kept = prune_model(model, ratios, pruner=pruner)
    print(f"{how}:")
    print(summary(kept, flops0, model_flops(model, size), params0, count_params(model)))
    os.makedirs(save_dir, exist_ok=True)
    save_checkpoint(model, os.path.join(save_dir, "pruned"), plan=channel_plan(model),
                    extra={"ratios": ratios})
    if paddle.distributed.get_rank() == 0:       # the only rank that writes
        print(f"pruned model (before fine-tuning): {os.path.join(save_dir, 'pruned')}")
    if args.no_finetune:
        return None
    trainer = Trainer(cfg, model=model, save_dir=save_dir)
    trainer.train(validate=args.eval)
    return None


if __name__ == "__main__":
    main()
