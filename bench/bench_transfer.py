"""Transfer: BCCD trained from scratch vs. from the tiny shapes YOLOv3 (issue 12).

    python bench/bench_transfer.py [--shapes_epochs N] [--epochs N] [--snapshot K]
                                   [--parallel] [--plot_only]

1. The tiny YOLOv3 on the shapes set (configs/shapes/yolov3_mobilenet_v1_shapes.yml):
   output/yolov3_mobilenet_v1_shapes/model_final.pdparams is reused when it exists,
   otherwise it is trained (``--shapes_epochs``, the config's 30 by default; a shorter
   schedule scales the LR milestones as below).
2. configs/bccd/yolov3_mobilenet_v1_bccd.yml is trained twice with the same epochs, LR
   schedule, seed and evaluation schedule: from scratch, and with ``pretrain_weights`` = the
   shapes model (4 classes there, 3 here: the class-dependent output convolutions start
   fresh; ``load_pretrain`` says so in one line).
When ``--epochs`` shortens the BCCD schedule, the PiecewiseDecay milestones are scaled by the
same factor so both runs keep the config's recipe in miniature.

Each training runs in its own Python process (a fresh Paddle state, no shared RNG or
allocator); the child calls the library directly (Trainer, load_pretrain), no YAML is
written. Results: output/bench/transfer/{scratch,pretrained}/eval_history.json, the curves
in bench/transfer_map_curve.png and a Markdown table on stdout.
"""
import argparse
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
OUT = os.path.join(ROOT, "output", "bench", "transfer")
SHAPES_CFG = "configs/shapes/yolov3_mobilenet_v1_shapes.yml"
BCCD_CFG = "configs/bccd/yolov3_mobilenet_v1_bccd.yml"
SHAPES_DIR = os.path.join(ROOT, "output", "yolov3_mobilenet_v1_shapes")
PNG = os.path.join(ROOT, "bench", "transfer_map_curve.png")


def train_child(job):
    """Run in a child process: one training with evaluation, described by ``job``."""
    from ppdet.core.config import load_config
    from ppdet.engine.trainer import Trainer, set_seed
    cfg = load_config(os.path.join(ROOT, job["config"]), job["overrides"])
    full = job.get("full_epochs")
    if full and full != cfg["epoch"]:      # scale the LR milestones with the schedule
        for s in cfg["LearningRate"]["schedulers"]:
            if s.get("name") == "PiecewiseDecay":
                s["milestones"] = [max(1, round(m * cfg["epoch"] / full))
                                   for m in s["milestones"]]
    set_seed(int(cfg.get("seed", 0)))
    trainer = Trainer(cfg, save_dir=job["save_dir"])
    if job.get("pretrain"):
        trainer.load_pretrain(job["pretrain"])
    tic = time.time()
    trainer.train(validate=True)
    with open(os.path.join(job["save_dir"], "timing.json"), "w") as f:
        json.dump({"minutes": (time.time() - tic) / 60,
                   "milestones": [s.get("milestones") for s in
                                  cfg["LearningRate"]["schedulers"]]}, f)


def spawn(job, log):
    os.makedirs(job["save_dir"], exist_ok=True)
    fh = open(log, "w")
    proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--child",
                             json.dumps(job)], cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT)
    return proc, fh


def wait(procs):
    for (proc, fh), log in procs:
        if proc.wait() != 0:
            raise SystemExit(f"training failed (exit {proc.returncode}): see {log}")
        fh.close()


def read_run(save_dir):
    with open(os.path.join(save_dir, "eval_history.json")) as f:
        history = json.load(f)
    with open(os.path.join(save_dir, "timing.json")) as f:
        timing = json.load(f)
    return history, timing


def plot(runs, path, title):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=110)
    for label, (history, _), style in zip(runs, runs.values(), ("o-", "s--")):
        ax.plot([h["epoch"] for h in history], [h["mAP"] * 100 for h in history], style,
                label=label)
    ax.set_xlabel("epoch")
    ax.set_ylabel("BCCD val VOC mAP (11point) x100")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.xaxis.set_major_locator(plt.MaxNLocator(integer=True))
    ax.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(path)


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--shapes_epochs", type=int, default=None,
                        help="epochs for the shapes model when it has to be trained")
    parser.add_argument("--epochs", type=int, default=None, help="BCCD epochs (both runs)")
    parser.add_argument("--snapshot", type=int, default=None,
                        help="evaluate every K epochs (both runs)")
    parser.add_argument("--parallel", action="store_true",
                        help="train the two BCCD runs at the same time (one core each)")
    parser.add_argument("--plot_only", action="store_true", help="reuse the last runs")
    args = parser.parse_args()
    if args.child:
        return train_child(json.loads(args.child))

    shapes = os.path.join(SHAPES_DIR, "model_final.pdparams")
    if not args.plot_only and not os.path.isfile(shapes):
        from ppdet.core.config import load_config
        job = {"config": SHAPES_CFG, "save_dir": SHAPES_DIR,
               "full_epochs": int(load_config(os.path.join(ROOT, SHAPES_CFG))["epoch"]),
               "overrides": [f"epoch={args.shapes_epochs}"] if args.shapes_epochs else []}
        print(f"training the shapes model -> {SHAPES_DIR}", flush=True)
        log = os.path.join(OUT, "shapes.log")
        os.makedirs(OUT, exist_ok=True)
        wait([(spawn(job, log), log)])
    from ppdet.core.config import load_config
    full = int(load_config(os.path.join(ROOT, BCCD_CFG))["epoch"])
    overrides = [f"epoch={args.epochs}"] if args.epochs else []
    overrides += [f"snapshot_epoch={args.snapshot}"] if args.snapshot else []
    jobs = {"from scratch": {"config": BCCD_CFG, "overrides": overrides, "full_epochs": full,
                             "save_dir": os.path.join(OUT, "scratch")},
            "from the shapes model": {"config": BCCD_CFG, "overrides": overrides,
                                      "full_epochs": full, "pretrain": shapes,
                                      "save_dir": os.path.join(OUT, "pretrained")}}
    if not args.plot_only:
        procs = []
        for name, job in jobs.items():
            log = job["save_dir"] + ".log"
            print(f"training BCCD {name} -> {job['save_dir']} (log {log})", flush=True)
            procs.append((spawn(job, log), log))
            if not args.parallel:
                wait(procs[-1:])
        wait([p for p in procs if p[0][0].returncode is None])
    runs = {name: read_run(job["save_dir"]) for name, job in jobs.items()}
    epochs = runs["from scratch"][0][-1]["epoch"]
    plot(runs, PNG, f"tiny YOLOv3-MobileNetV1 on BCCD, {epochs} epochs: "
                    f"from scratch vs. shapes pretrain")
    names = list(runs)
    print(f"\n| epoch | {' | '.join(names)} |\n|---|{'---|' * len(names)}")
    for i, h in enumerate(runs[names[0]][0]):
        print(f"| {h['epoch']} | " + " | ".join(
            f"{runs[n][0][i]['mAP'] * 100:.1f}" for n in names) + " |")
    print("| best | " + " | ".join(
        f"{max(h['mAP'] for h in runs[n][0]) * 100:.1f}" for n in names) + " |")
    print("| training minutes (wall) | " + " | ".join(
        f"{runs[n][1]['minutes']:.1f}" for n in names) + " |")
    print(f"\nLR milestones used: {runs[names[0]][1]['milestones']}; plot: "
          f"{os.path.relpath(PNG, ROOT)}")


if __name__ == "__main__":
    main()
