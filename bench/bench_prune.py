"""Pruning targets: -30/-50/-70% FLOPs chosen from sensitivities, fine-tuned for a quarter
of the original epochs, against the baseline measured in the same run.

    python bench/bench_prune.py --weights output/demo/yolov3_mobilenet_v1_shapes/model_final \
        --sensitivities output/demo/sensitivities.data

Latency: Paddle Inference, CPU, batch 1, oneDNN, one thread; same machine, same run.
"""
import argparse
import os
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
CFG = "configs/shapes/yolov3_mobilenet_v1_shapes.yml"


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--weights", required=True)
    parser.add_argument("--sensitivities", required=True)
    parser.add_argument("--targets", default="0.3 0.5 0.7")
    parser.add_argument("--epochs", type=int, default=8, help="fine-tuning epochs")
    parser.add_argument("--lr", default="0.0006")
    args = parser.parse_args()
    from ppdet.core.config import load_config
    from ppdet.slim import pipelines
    from ppdet.slim.report import model_row, report_table
    cfg = load_config(os.path.join(ROOT, CFG))
    rows = [("baseline", model_row(cfg, args.weights, tempfile.mkdtemp()))]
    for target in args.targets.split():
        save = os.path.join(ROOT, "output", "bench_prune", target)
        result = pipelines.prune_and_finetune(
            load_config(os.path.join(ROOT, CFG), [f"weights={args.weights}",
                                                  f"save_dir={save}", f"epoch={args.epochs}",
                                                  f"LearningRate.base_lr={args.lr}"]),
            pipelines.PruneRequest(sensitivities_file=args.sensitivities,
                                   target_flops=float(target)))
        ckpt = result.save_dir
        rows.append((f"-{float(target):.0%} FLOPs, pruned",
                     model_row(cfg, os.path.join(ckpt, "pruned"), tempfile.mkdtemp())))
        rows.append((f"-{float(target):.0%} FLOPs, fine-tuned {args.epochs} epochs",
                     model_row(cfg, os.path.join(ckpt, "model_final"), tempfile.mkdtemp())))
    print()
    print(report_table(rows))
    base = rows[0][1]["mAP"]
    for label, r in rows[1:]:
        if "fine-tuned" in label:
            print(f"{label}: mAP {r['mAP'] - base:+.2f} points vs baseline (target >= -1.0 "
                  f"at -50%)")


if __name__ == "__main__":
    main()
