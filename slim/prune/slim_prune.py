"""Network slimming: prune channels by a global BN-scale threshold, then residual layers,
then fine-tune (an example script; the work is in ppdet.slim.slimming).

    # 1. sparsity training, from a normally trained model
    python tools/train.py -c CFG -o pretrain_weights=W --sr --s 0.0001 --prune 1
    # 2. prune channels (and 2 residual blocks), fine-tune, write the before/after table
    python slim/prune/slim_prune.py -c CFG -o weights=output/NAME_sparse/model_final \\
        --global_percent 0.2 --layer_keep 0.7 --shortcuts 2 --finetune --report slim.md

Removed channels' BN offsets are folded into the next layer, so the pruned model computes
what the sparsity-trained model computes with those scales set to zero. Checkpoints
(``channels``, ``layers``, then the fine-tuned ones) carry their channel plan and removed
blocks: eval/export/infer need no other flags.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from ppdet.utils.cli import (  # noqa: E402
    ArgsParser,
    UserError,
    check_range,
    load_config_from_args,
    run_main,
)


@run_main
def main(argv=None):
    parser = ArgsParser(description=__doc__)
    parser.add_argument("--global_percent", type=float, default=0.2,
                        help="share of all prunable BN scales under the threshold")
    parser.add_argument("--layer_keep", type=float, default=0.0,
                        help="keep at least this share of every layer's channels; without "
                             "it a threshold that would empty a layer is refused")
    parser.add_argument("--shortcuts", type=int, default=0,
                        help="residual blocks to remove (weakest mean |gamma| first)")
    parser.add_argument("--prune", type=int, default=1, choices=[0, 1],
                        help="1: also prune layers tied by shortcuts (one union mask)")
    parser.add_argument("--dw_rule", default="max", choices=["max", "intersection"],
                        help="depthwise convs: keep the larger layer's channels (max), or "
                             "remove only channels both sides remove (intersection)")
    parser.add_argument("--finetune", action="store_true", help="fine-tune after pruning")
    parser.add_argument("--eval", action="store_true", help="evaluate while fine-tuning")
    parser.add_argument("--report", default=None, metavar="FILE.md",
                        help="write the before/after table (mAP, params, FLOPs, latency)")
    parser.add_argument("-v", "--verbose", action="store_true", help="list blocked groups")
    args = parser.parse_args(argv)
    check_range("--global_percent", args.global_percent, 0, 1, low_open=True, high_open=True)
    check_range("--layer_keep", args.layer_keep, 0, 1, high_open=True)
    check_range("--shortcuts", args.shortcuts, 0, integer=True)
    cfg = load_config_from_args(args)

    import paddle

    from ppdet.engine.builder import build_model, image_size_for
    from ppdet.engine.checkpoint import (
        channel_plan,
        ensure_outside,
        load_weights,
        save_checkpoint,
    )
    from ppdet.engine.trainer import Trainer, set_seed
    from ppdet.slim import slimming
    from ppdet.slim.prune_plan import count_params
    from ppdet.slim.pruner import model_flops
    if args.eval and not args.finetune:
        raise UserError("--eval evaluates while fine-tuning: add --finetune (or drop --eval)")
    if args.report and (os.path.isdir(args.report) or not os.path.isdir(
            os.path.dirname(os.path.abspath(args.report)))):
        raise UserError(f"--report {args.report}: give a file path in an existing folder")
    set_seed(int(cfg.get("seed", 0)))
    size = image_size_for(cfg, "eval")
    save_dir = os.path.join(cfg.get("save_dir", "output"), cfg["filename"] + "_slim")
    ensure_outside(cfg.get("weights"), save_dir)
    model = build_model(cfg)
    load_weights(model, cfg.get("weights"))
    slimming.check_shortcuts(model, args.shortcuts)
    flops0, params0 = model_flops(model, size), count_params(model)

    graph = slimming.SlimGraph(model, args.prune)
    blocked = [g for g in graph.groups if g.blocked]
    print(f"{len(graph.prunable)} prunable groups, {len(blocked)} left whole"
          + (":" if args.verbose else " (-v lists them)"))
    for g in blocked if args.verbose else []:
        print(f"  {g.layers[0].name}: {g.blocked}")
    threshold, safe = slimming.global_threshold(graph, args.global_percent)
    print(f"global threshold {threshold:.4f} (largest safe one: {safe:.4f}, the smallest "
          f"per-layer max |gamma|)")
    if threshold > safe:
        if args.layer_keep <= 0:
            raise UserError(f"--global_percent {args.global_percent} gives threshold "
                            f"{threshold:.4f}, above {safe:.4f}: some layer would lose every "
                            f"channel; lower --global_percent, or give --layer_keep")
        print(f"threshold above {safe:.4f}: layers with no |gamma| over it keep their "
              f"--layer_keep {args.layer_keep} share (largest gammas)")
    masks = slimming.group_masks(graph, threshold, args.layer_keep, args.dw_rule)
    kept = slimming.prune_channels(graph, masks)
    total = sum(b for b, _ in kept.values()) if kept else 0
    gone = sum(b - a for b, a in kept.values()) if kept else 0
    print("| layer | total channels | remaining |\n|---|---|---|")
    for name, (b, a) in kept.items():
        print(f"| {name} | {b} | {a} |")
    print(f"pruned channels: {gone} of {total} in pruned groups ({gone / max(total, 1):.1%})")
    os.makedirs(save_dir, exist_ok=True)
    stages = [("Before", cfg.get("weights"))]

    def checkpoint(name, label):
        flops, params = model_flops(model, size), count_params(model)
        print(f"{label}: params {params0:,} -> {params:,} ({1 - params / params0:.1%} fewer), "
              f"FLOPs {flops0 / 1e6:.1f}M -> {flops / 1e6:.1f}M ({1 - flops / flops0:.1%} "
              f"fewer)")
        path = os.path.join(save_dir, name)
        save_checkpoint(model, path, plan=channel_plan(model),
                        extra={"slim": {"global_percent": args.global_percent,
                                        "layer_keep": args.layer_keep,
                                        "threshold": threshold, "dw_rule": args.dw_rule}})
        if paddle.distributed.get_rank() == 0:   # the only rank that writes
            print(f"saved {path}.pdparams")
        stages.append((label, path))

    checkpoint("channels", "After prune channels")
    if args.shortcuts:
        for path, score in slimming.prune_layers(model, args.shortcuts):
            print(f"removed residual block {path} (mean |gamma| {score:.4f})")
        checkpoint("layers", "After prune layers")
    if args.finetune:
        trainer = Trainer(cfg, model=model, save_dir=save_dir)
        trainer.train(validate=args.eval)
        best = os.path.join(save_dir, "best_model")
        stages.append(("After finetune", best if args.eval and os.path.isfile(
            best + ".pdparams") else os.path.join(save_dir, "model_final")))
    if args.report and paddle.distributed.get_rank() == 0:
        import tempfile

        from ppdet.slim.report import model_row, stage_table
        from ppdet.utils.atomic import atomic_write_bytes
        rows = []
        for label, weights in stages:
            with tempfile.TemporaryDirectory(prefix="slim_report_") as tmp:
                rows.append((label, model_row(cfg, weights, tmp)))
        table = stage_table(rows)
        print(table)
        atomic_write_bytes(args.report, (table + "\n").encode())
        print(f"written to {args.report}")


if __name__ == "__main__":
    main()
