"""Train a detector from a YAML config (an example script: the work is in ppdet.engine).

    python tools/train.py -c configs/shapes/yolov3_mobilenet_v1_shapes.yml --eval
    python -m paddle.distributed.launch --nproc_per_node 2 tools/train.py -c CFG
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ppdet.utils.cli import ArgsParser, load_config_from_args, run_main  # noqa: E402


@run_main
def main(argv=None):
    parser = ArgsParser(description=__doc__)
    parser.add_argument("--eval", action="store_true", help="evaluate at each snapshot, "
                        "keep best_model")
    parser.add_argument("-r", "--resume", default=None, help="checkpoint to resume from")
    parser.add_argument("--seed", type=int, default=None, help="random seed")
    args = parser.parse_args(argv)
    cfg = load_config_from_args(args)

    from ppdet.engine.trainer import Trainer, load_pretrain, set_seed
    set_seed(args.seed if args.seed is not None else int(cfg.get("seed", 0)))
    trainer = Trainer(cfg)
    if args.resume:
        trainer.resume(args.resume)
    elif cfg.get("pretrain_weights"):
        load_pretrain(trainer.model, cfg["pretrain_weights"])
    trainer.train(validate=args.eval)


if __name__ == "__main__":
    main()
