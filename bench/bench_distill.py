"""Fine-tuning a pruned detector with and without a teacher, same run: mean +- sd mAP over
seeds, and the epoch-time ratio (teacher / plain).

    python bench/bench_distill.py --weights B --cases r578 sens65 --sensitivities S \
        --teacher_config configs/shapes/yolov3_mobilenet_v1_x050_shapes.yml \
        --teacher_weights T --seeds 3 --epochs 4

Cases: ``r578`` (PaddleDetection's head ratios: 0.5 on the six yolo_block convs of level 0,
0.7 on level 1, 0.8 on level 2), ``sens65`` (ratios from a sensitivities file for -65%
FLOPs), ``uniform50`` (one ratio on every prunable conv for -50% FLOPs; SSD). Variants:
``plain`` (no teacher), ``self`` (``--distill``: the unpruned model), ``wide`` (the
``--teacher_*`` model). Every variant of a seed prunes the same weights the same way and
sees the same data order; mAP is the config's eval set after the last epoch.
"""
import argparse
import json
import os
import statistics
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
CFG = "configs/shapes/yolov3_mobilenet_v1_shapes.yml"
LEVEL_RATIOS = (0.5, 0.7, 0.8)
TAGS = ("0.0", "0.1", "1.0", "1.1", "2", "tip")


def r578():
    names = [f"yolo_block.{i}.{t}.conv.weights" for i in range(3) for t in TAGS]
    return dict(pruned_params=",".join(names),
                pruned_ratios=",".join(str(r) for r in LEVEL_RATIOS for _ in TAGS))


def request(case, variant, args, weight=None):
    from ppdet.slim.pipelines import PruneRequest
    how = {"r578": r578,
           "sens65": lambda: dict(sensitivities_file=args.sensitivities, target_flops=0.65),
           "uniform50": lambda: dict(pruned_params="*", target_ratio=0.5)}[case]()
    teacher = {"plain": {}, "self": dict(distill=True),
               "wide": dict(teacher_config=args.teacher_config,
                            teacher_weights=args.teacher_weights)}[variant]
    if variant != "plain" and weight is not None:
        teacher["distill_weight"] = weight
    return PruneRequest(**how, **teacher, validate=True)


def run_one(case, variant, seed, args, weight=None):
    from ppdet.core.config import load_config
    from ppdet.slim.pipelines import prune_and_finetune
    name = variant if weight is None else f"{variant}_x{weight:g}"
    save = os.path.join(args.workdir, case, name, str(seed))
    cfg = load_config(os.path.join(ROOT, args.config), [
        f"weights={args.weights}", f"save_dir={save}", f"epoch={args.epochs}",
        f"snapshot_epoch={args.epochs}", f"seed={seed}", f"LearningRate.base_lr={args.lr}",
        *args.opt])
    result = prune_and_finetune(cfg, request(case, variant, args, weight),
                                log=lambda *a: None)
    if variant != "plain" and weight is not None:
        variant = f"{variant} x{weight:g}"
    if variant != "plain" and args.tag:
        variant = f"{variant} {args.tag}"
    return {"case": case, "variant": variant, "seed": seed,
            "mAP": result.history[-1]["mAP"] * 100,
            "flops": 1 - result.flops[1] / result.flops[0],
            # the first epoch also pays the process's warm-up: left out when there are more
            "epoch_s": statistics.mean(result.epoch_seconds[1:] or result.epoch_seconds)}


def summary(rows):
    lines = ["| case | variant | FLOPs removed | mAP mean | sd | n | vs plain | epoch (s) | "
             "epoch / plain |", "|---" * 9 + "|"]
    for case in dict.fromkeys(r["case"] for r in rows):
        got = {v: [r for r in rows if r["case"] == case and r["variant"] == v]
               for v in dict.fromkeys(r["variant"] for r in rows if r["case"] == case)}
        base = got.get("plain")
        for v, rs in got.items():
            maps = [r["mAP"] for r in rs]
            mean, sd = statistics.mean(maps), statistics.stdev(maps) if len(maps) > 1 else 0.
            sec = statistics.mean(r["epoch_s"] for r in rs)
            vs = f"{mean - statistics.mean(r['mAP'] for r in base):+.2f}" if base else "-"
            ratio = f"{sec / statistics.mean(r['epoch_s'] for r in base):.2f}x" if base else "-"
            lines.append(f"| {case} | {v} | {rs[0]['flops']:.1%} | {mean:.2f} | {sd:.2f} | "
                         f"{len(maps)} | {vs} | {sec:.1f} | {ratio} |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-c", "--config", default=CFG)
    parser.add_argument("--weights", required=True, help="the trained, unpruned model")
    parser.add_argument("--cases", nargs="+", default=["r578"],
                        choices=["r578", "sens65", "uniform50"])
    parser.add_argument("--variants", nargs="+", default=["plain", "self", "wide"],
                        choices=["plain", "self", "wide"])
    parser.add_argument("--sensitivities", default=None, help="for sens65")
    parser.add_argument("--teacher_config", default=None, help="for wide")
    parser.add_argument("--teacher_weights", default=None, help="for wide")
    parser.add_argument("--distill_weight", type=float, nargs="+", default=[None],
                        help="the distilled variants' weight (default: the loss's own); "
                             "several: each distilled variant once per weight, in turn")
    parser.add_argument("--tag", default="", help="appended to the distilled variants' names")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--first_seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=8, help="fine-tuning epochs")
    parser.add_argument("--lr", default="0.0006")
    parser.add_argument("--workdir", default=os.path.join(ROOT, "output", "bench_distill"))
    parser.add_argument("--json", default=None, help="append every run's row here")
    parser.add_argument("-o", "--opt", nargs="*", default=[], help="more config overrides")
    parser.add_argument("--summarize", nargs="+", default=None, metavar="JSON",
                        help="only print the table of the rows in these --json files")
    if "--summarize" in sys.argv:
        sys.argv += ["--weights", "-"]
    args = parser.parse_args()
    if args.summarize:
        rows = [json.loads(line) for path in args.summarize for line in open(path)]
        print(summary(rows))
        return
    rows = []
    for case in args.cases:
        # per seed every variant in turn: they meet the same load of a shared machine
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            for variant, weight in [(v, w) for v in args.variants
                                    for w in ([None] if v == "plain" else args.distill_weight)]:
                rows.append(run_one(case, variant, seed, args, weight))
                print(json.dumps(rows[-1]), flush=True)
                if args.json:
                    with open(args.json, "a") as f:
                        f.write(json.dumps(rows[-1]) + "\n")
    print(summary(rows))


if __name__ == "__main__":
    main()
