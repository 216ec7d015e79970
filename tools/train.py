"""Train a detector from a YAML config (an example script: the work is in ppdet.engine).

    python tools/train.py -c configs/shapes/yolov3_mobilenet_v1_shapes.yml --eval
    python -m paddle.distributed.launch --nproc_per_node 2 tools/train.py -c CFG
    # sparsity training on BN scales (network slimming), from a trained model
    python tools/train.py -c CFG -o pretrain_weights=W --sr --s 0.0001 --prune 1
    # fine-tune W under itself as teacher, or under another detector
    python tools/train.py -c CFG -o pretrain_weights=W --distill
    python tools/train.py -c CFG -o pretrain_weights=W --teacher_config CFG2 --teacher_weights W2
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ppdet.engine.distill import add_distill_args  # noqa: E402
from ppdet.utils.cli import ArgsParser, load_config_from_args, run_main  # noqa: E402


@run_main
def main(argv=None):
    parser = ArgsParser(description=__doc__)
    parser.add_argument("--eval", action="store_true", help="evaluate at each snapshot, "
                        "keep best_model")
    parser.add_argument("-r", "--resume", default=None, help="checkpoint to resume from")
    parser.add_argument("--seed", type=int, default=None, help="random seed")
    parser.add_argument("--sr", action="store_true",
                        help="sparsity training: L1 on the BN scales of prunable layers")
    parser.add_argument("--s", type=float, default=None, help="sparsity factor (1e-4)")
    parser.add_argument("--prune", type=int, default=None, choices=[0, 1, 2],
                        help="BN scales --sr pushes to zero: 0: prunable layers; 1: also "
                             "layers tied by shortcuts; 2: also layers feeding 3x3 convs "
                             "(DarkNet, ResNet)")
    add_distill_args(parser)
    args = parser.parse_args(argv)
    from ppdet.engine.distill import check_distill_args
    check_distill_args(args, resume=args.resume)
    cfg = load_config_from_args(args)
    from ppdet.engine.optim import check_schedule
    check_schedule(cfg)             # epoch >= 1, a schedule that can run: before any data

    from ppdet.engine.builder import build_model
    from ppdet.engine.checkpoint import resolve_weights
    from ppdet.engine.distill import distillation_hooks, spec_from_args, spec_from_checkpoint
    from ppdet.engine.trainer import Trainer, set_seed
    from ppdet.slim.slimming.sparsity import sparsity_from_config
    from ppdet.utils.cli import UserError
    if (args.s is not None or args.prune is not None) and not args.sr:
        raise UserError("--s and --prune set up sparsity training: add --sr (or drop them)")
    if args.seed is not None:
        cfg["seed"] = args.seed       # the trainer's data order follows it too
    set_seed(int(cfg.get("seed", 0)))
    hook = sparsity_from_config(cfg, args.sr, args.s, args.prune)
    save_dir = None
    if args.resume:   # a resumed run goes on in its own folder (_sparse, _slim, ...)
        save_dir = os.path.dirname(os.path.abspath(resolve_weights(args.resume)))
    elif hook:        # never overwrite the regular model the sparsity run starts from
        save_dir = os.path.join(cfg.get("save_dir", "output"), cfg["filename"] + "_sparse")
    model = build_model(cfg)
    # the teacher: the one a resumed run recorded, or the flags' (--distill: the model of
    # pretrain_weights); built and checked against the student before the data loads
    spec = spec_from_checkpoint(args.resume) if args.resume else \
        spec_from_args(args, cfg.get("pretrain_weights"), what="pretrain_weights",
                       save_dir=save_dir or os.path.join(cfg.get("save_dir", "output"),
                                                         cfg["filename"]))
    hooks = ([hook] if hook else []) + distillation_hooks(spec, cfg, model)
    trainer = Trainer(cfg, model=model, hooks=hooks, save_dir=save_dir)
    if args.resume:
        trainer.resume(args.resume)
    elif cfg.get("pretrain_weights"):
        trainer.load_pretrain(cfg["pretrain_weights"])
    trainer.train(validate=args.eval)


if __name__ == "__main__":
    main()
