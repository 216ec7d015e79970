"""Network slimming target on the tiny YOLOv3-MobileNetV2 (shapes), with L1-norm filter
pruning at the same FLOPs as the reference, all in one run:

    python bench/bench_slim.py            # trains the baseline too if it is missing
    python bench/bench_slim.py --config configs/shapes/yolov3_darknet_shapes.yml --prune 2 \
        --baseline output/NAME/model_final --no_l1       # DarkNet: see docs/backbones.md

Stages (each is skipped when its checkpoint exists, so a stopped run resumes):
1. baseline: tools/train.py (the config's 30 epochs);
2. sparsity training from the baseline: tools/train.py --sr --s S --prune 1;
3. slim_prune.py: global BN threshold + layer_keep, N residual blocks removed, fine-tuned;
4. prune.py: L1-norm filters, one ratio for all prunable convs, found for the FLOPs share
   that step 3 removed, from the same sparsity-trained model, fine-tuned as long.
Target: step 3 removes >= 30% FLOPs and its fine-tuned mAP is within 1.0 point of the
sparsity-trained model. Latency: Paddle Inference, CPU, batch 1, oneDNN, one thread.
"""
import argparse
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
CFG = "configs/shapes/yolov3_mobilenet_v2_shapes.yml"
NAME = "yolov3_mobilenet_v2_shapes"
# the convs slimming may prune (one per group; prune.py picks one ratio for all of them)
L1_PARAMS = (r"conv1_1_weights|conv\d_\d_expand_weights|conv\d_1_linear_weights|"
             r"yolo_block\.\d\.(0|1)\.1\.conv\.weights|yolo_block\.\d\.tip\.conv\.weights|"
             r"yolo_transition\.\d\.conv\.weights")


def _schedule(epochs, lr):
    drop = max(1, int(epochs * 0.8))
    return [f"epoch={epochs}", f"snapshot_epoch={epochs}", f"LearningRate.base_lr={lr}",
            f"LearningRate.schedulers=[{{name: PiecewiseDecay, milestones: [{drop}]}}, "
            f"{{name: LinearWarmup, start_factor: 0.1, steps: 50}}]"]


def _run(*args):
    print("+", " ".join(args), flush=True)
    subprocess.run([sys.executable, *args], cwd=ROOT, check=True)


def _done(path):
    return os.path.isfile(os.path.join(ROOT, path) + ".pdparams")


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="output/bench_slim")
    parser.add_argument("--config", default=CFG)
    parser.add_argument("--prune", type=int, default=1, choices=[0, 1, 2],
                        help="slimming's --prune (2 for DarkNet / ResNet)")
    parser.add_argument("--no_l1", action="store_true",
                        help="skip the L1-norm reference (its conv list is MobileNetV2's)")
    parser.add_argument("--baseline", default=None, help="weights of a trained baseline")
    parser.add_argument("--s", type=float, default=5e-3)
    parser.add_argument("--sparse_epochs", type=int, default=15)
    parser.add_argument("--sparse_lr", type=float, default=0.003)
    parser.add_argument("--global_percent", type=float, default=0.7)
    parser.add_argument("--layer_keep", type=float, default=0.1)
    parser.add_argument("--shortcuts", type=int, default=2)
    parser.add_argument("--finetune_epochs", type=int, default=10)
    parser.add_argument("--finetune_lr", type=float, default=0.001)
    args = parser.parse_args()
    out = args.out
    cfg_path = args.config
    name = os.path.splitext(os.path.basename(cfg_path))[0]
    base = args.baseline or f"{out}/{name}/model_final"
    if not _done(base):
        _run("tools/train.py", "-c", cfg_path, "-o", f"save_dir={out}")
    sparse = f"{out}/{name}_sparse/model_final"
    if not _done(sparse):
        _run("tools/train.py", "-c", cfg_path, "-o", f"save_dir={out}", f"pretrain_weights={base}",
             *_schedule(args.sparse_epochs, args.sparse_lr), "--sr", "--s", str(args.s),
             "--prune", str(args.prune))
    slim_final = f"{out}/{name}_slim/model_final"
    from ppdet.core.config import load_config
    from ppdet.slim import pipelines
    if not _done(slim_final):
        pipelines.slim_and_finetune(
            load_config(os.path.join(ROOT, cfg_path), [f"weights={sparse}", f"save_dir={out}",
                                                  *_schedule(args.finetune_epochs,
                                                             args.finetune_lr)]),
            pipelines.SlimRequest(args.global_percent, args.layer_keep, args.shortcuts,
                                  prune_mode=args.prune, finetune=True).check())

    from ppdet.slim.report import model_row, report_table, stage_table
    cfg = load_config(os.path.join(ROOT, cfg_path))
    row = lambda w: model_row(cfg, os.path.join(ROOT, w), tempfile.mkdtemp())  # noqa: E731
    stages = [("Before (sparsity-trained)", row(sparse)),
              ("After prune channels", row(f"{out}/{name}_slim/channels"))]
    if args.shortcuts:
        stages.append(("After prune layers", row(f"{out}/{name}_slim/layers")))
    stages.append(("After finetune", row(slim_final)))
    removed = 1 - stages[-1][1]["flops"] / stages[0][1]["flops"]

    rows = [("baseline (normal training)", row(base)), *stages[:1],
            (f"slimming, fine-tuned {args.finetune_epochs} ep", stages[-1][1])]
    if not args.no_l1:
        l1_final = f"{out}/l1/{name}_pruned/model_final"
        if not _done(l1_final):
            pipelines.prune_and_finetune(
                load_config(os.path.join(ROOT, cfg_path),
                            [f"weights={sparse}", f"save_dir={out}/l1",
                             *_schedule(args.finetune_epochs, args.finetune_lr)]),
                pipelines.PruneRequest(pruned_params=L1_PARAMS, target_ratio=round(removed, 4)))
        rows.append((f"L1-norm uniform, same FLOPs, fine-tuned {args.finetune_epochs} ep",
                     row(l1_final)))
    print()
    print(stage_table(stages))
    print()
    print(report_table(rows))
    drop = stages[0][1]["mAP"] - stages[-1][1]["mAP"]
    print(f"\nslimming removed {removed:.1%} of FLOPs (target >= 30%); fine-tuned mAP is "
          f"{drop:+.2f} points below the sparsity-trained model (target <= 1.0)"
          + ("" if args.no_l1 else f"; L1 at the same FLOPs: {rows[-1][1]['mAP']:.2f}"))

if __name__ == "__main__":
    main()
