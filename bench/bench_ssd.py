"""MobileNetV1-SSD targets on the shapes set (issue 6), in one run:

    python bench/bench_ssd.py [--skip_train]

1. trains configs/shapes/ssd_mobilenet_v1_shapes.yml from scratch with --eval, timed;
   writes the mAP-vs-epoch curve (bench/ssd_map_curve.png) and the minutes to mAP 0.5;
2. the seed's uniform pruning: the 12 backbone pointwise convs
   (``conv2d_[1-9].w_0|conv2d_1[0-2].w_0``), one ratio found for -20% FLOPs, fine-tuned
   briefly; table of mAP, params, FLOPs and Paddle Inference latency (CPU, batch 1,
   oneDNN, one thread) for the model before pruning, after pruning, after fine-tuning.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "bench"))
CFG = "configs/shapes/ssd_mobilenet_v1_shapes.yml"
NAME = "ssd_mobilenet_v1_shapes"
SEED_REGEX = "conv2d_[1-9].w_0|conv2d_1[0-2].w_0"


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="output/bench_ssd")
    parser.add_argument("--skip_train", action="store_true", help="reuse the last run")
    parser.add_argument("--finetune_epochs", type=int, default=6)
    parser.add_argument("--finetune_lr", type=float, default=0.0006)
    args = parser.parse_args()
    from bench_train import plot_curve
    run_dir = os.path.join(ROOT, args.out, NAME)
    minutes = float("nan")
    if not args.skip_train:
        tic = time.time()
        subprocess.run([sys.executable, "tools/train.py", "-c", CFG, "--eval", "-o",
                        f"save_dir={args.out}"], cwd=ROOT, check=True)
        minutes = (time.time() - tic) / 60
    history = json.load(open(os.path.join(run_dir, "eval_history.json")))
    per_epoch = minutes / max(history[-1]["epoch"], 1)
    first = next((h for h in history if h["mAP"] >= 0.5), None)
    reach = f"{first['epoch'] * per_epoch:.1f} min (epoch {first['epoch']})" \
        if first else "not reached"
    plot_curve(history, minutes, os.path.join(ROOT, "bench", "ssd_map_curve.png"),
               "tiny MobileNetV1-SSD on shapes", target=50)
    best = max(h["mAP"] for h in history)
    curve = " ".join(f"{h['mAP'] * 100:.1f}" for h in history)
    print(f"\n| tiny SSD on shapes | value | target |\n|---|---|---|\n"
          f"| best VOC mAP (11point) | {best * 100:.1f} | >= 50 |\n"
          f"| time to mAP 0.5 (2 CPU cores) | {reach} | <= 10 min |\n"
          f"| training time, whole run | {minutes:.1f} min | |\n"
          f"| mAP at each evaluation | {curve} | |\n")

    base = os.path.join(args.out, NAME, "best_model")
    prune_out = os.path.join(args.out, "uniform20")
    drop = max(1, int(args.finetune_epochs * 0.8))
    subprocess.run([sys.executable, "slim/prune/prune.py", "-c", CFG, "-o", f"weights={base}",
                    f"save_dir={prune_out}", f"epoch={args.finetune_epochs}",
                    f"snapshot_epoch={args.finetune_epochs}",
                    f"LearningRate.base_lr={args.finetune_lr}",
                    f"LearningRate.schedulers=[{{name: PiecewiseDecay, milestones: [{drop}]}}, "
                    f"{{name: LinearWarmup, start_factor: 0.1, steps: 50}}]",
                    "--pruned_params", SEED_REGEX, "--target_ratio", "0.2"],
                   cwd=ROOT, check=True)
    from ppdet.core.config import load_config
    from ppdet.slim.report import model_row, report_table
    cfg = load_config(os.path.join(ROOT, CFG))
    pruned = os.path.join(prune_out, f"{NAME}_pruned")
    rows = [(label, model_row(cfg, os.path.join(ROOT, w), tempfile.mkdtemp()))
            for label, w in [("trained (best epoch)", base),
                             ("uniform -20% FLOPs, pruned", os.path.join(pruned, "pruned")),
                             (f"uniform -20% FLOPs, fine-tuned {args.finetune_epochs} epochs",
                              os.path.join(pruned, "model_final"))]]
    print(report_table(rows))


if __name__ == "__main__":
    main()
