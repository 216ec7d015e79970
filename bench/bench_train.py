"""Training and inference numbers for the tiny YOLOv3 on the shapes set (issue targets).

    python bench/bench_train.py [--epochs N] [--bccd]

1. trains configs/shapes/yolov3_mobilenet_v1_shapes.yml from scratch with --eval, timing
   it; writes the mAP-vs-epoch curve as PNG; reports minutes to reach mAP 0.6;
2. exports at 320 and 608 px and times Paddle Inference, batch 1, with and without
   oneDNN (the reference in each row is the run without oneDNN, same size, same run);
3. with --bccd, trains the BCCD config from scratch too and reports its mAP and time.
Prints a Markdown table; add it with the command line at the top of its section in
bench/HISTORY.md, and update its rows in bench/RESULTS.md.
"""
import argparse
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
OUT = os.path.join(ROOT, "output", "bench")


def train(cfg, name, extra=()):
    save = os.path.join(OUT, name)
    tic = time.time()
    subprocess.run([sys.executable, "tools/train.py", "-c", cfg, "--eval", "-o",
                    f"save_dir={save}", *extra], cwd=ROOT, check=True)
    minutes = (time.time() - tic) / 60
    stem = os.path.splitext(os.path.basename(cfg))[0]
    with open(os.path.join(save, stem, "eval_history.json")) as f:
        history = json.load(f)
    return os.path.join(save, stem), history, minutes


def plot_curve(history, minutes, path, title, target=60):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 4), dpi=110)
    ax.plot([h["epoch"] for h in history], [h["mAP"] * 100 for h in history], marker="o")
    ax.axhline(target, color="gray", ls="--", lw=1)
    ax.set_xlabel("epoch")
    ax.set_ylabel("VOC mAP (11point) x100")
    ax.set_title(f"{title} ({minutes:.1f} min in all)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=None, help="override the epochs")
    parser.add_argument("--bccd", action="store_true", help="also train BCCD from scratch")
    parser.add_argument("--skip_train", action="store_true", help="reuse the last run")
    args = parser.parse_args()
    cfg = "configs/shapes/yolov3_mobilenet_v1_shapes.yml"
    extra = [f"epoch={args.epochs}"] if args.epochs else []
    rows = []
    if args.skip_train:
        run_dir = os.path.join(OUT, "shapes", "yolov3_mobilenet_v1_shapes")
        history = json.load(open(os.path.join(run_dir, "eval_history.json")))
        minutes = float("nan")
    else:
        run_dir, history, minutes = train(cfg, "shapes", extra)
    epoch_minutes = minutes / max(history[-1]["epoch"], 1)
    first = next((h for h in history if h["mAP"] >= 0.6), None)
    reach = f"{first['epoch'] * epoch_minutes:.1f} min (epoch {first['epoch']})" \
        if first else "not reached"
    os.makedirs(OUT, exist_ok=True)
    plot_curve(history, minutes, os.path.join(ROOT, "bench", "shapes_map_curve.png"),
               "tiny YOLOv3-MobileNetV1 on shapes")
    best = max(h["mAP"] for h in history)
    ips = history[-1].get("train_ips", float("nan"))
    rows.append(("shapes: best VOC mAP (11point)", f"{best * 100:.1f}", "target >= 60"))
    rows.append(("shapes: time to mAP 0.6 (2 CPU cores)", reach, "target <= 10 min"))
    rows.append(("shapes: training time, whole run", f"{minutes:.1f} min", ""))
    rows.append(("shapes: training images/s", f"{ips:.1f}", ""))

    from ppdet.core.config import load_config
    from ppdet.engine.builder import build_model, class_names_for
    from ppdet.engine.checkpoint import load_weights
    from ppdet.engine.export import export_model
    from ppdet.engine.latency import measure_latency
    for size in (320, 608):
        c = load_config(os.path.join(ROOT, cfg), [
            f"TestReader.sample_transforms=[{{Decode: {{}}}}, {{Resize: {{target_size: "
            f"[{size}, {size}], keep_ratio: false, interp: 2}}}}, {{NormalizeImage: {{mean: "
            f"[0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225]}}}}, {{Permute: {{}}}}]"])
        model = build_model(c)
        load_weights(model, os.path.join(run_dir, "model_final"))
        d = export_model(model, c, os.path.join(OUT, f"export_{size}"), class_names_for(c))
        plain = measure_latency(d, [size, size], use_mkldnn=False)
        fast = measure_latency(d, [size, size], use_mkldnn=True)
        rows.append((f"latency {size}px, batch 1, no oneDNN (reference)", f"{plain:.2f} ms",
                     "1.00x"))
        rows.append((f"latency {size}px, batch 1, oneDNN", f"{fast:.2f} ms",
                     f"{plain / fast:.2f}x faster"))
    if args.bccd:
        _, hist, mins = train("configs/bccd/yolov3_mobilenet_v1_bccd.yml", "bccd")
        rows.append(("BCCD from scratch: best VOC mAP (11point)",
                     f"{max(h['mAP'] for h in hist) * 100:.1f}", f"{mins:.1f} min"))
    print("\n| measure | value | vs reference / target |\n|---|---|---|")
    for r in rows:
        print(f"| {r[0]} | {r[1]} | {r[2]} |")


if __name__ == "__main__":
    main()
