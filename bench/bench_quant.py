"""Prune, then quantize: FP32 and INT8 of an unpruned and a pruned checkpoint, same run.

    python bench/bench_quant.py --baseline W0 --pruned W1 [--size 320] [--calib_samples 64]
    # latency only, any width: random weights, the pruned one uniformly at filter ratio R
    python bench/bench_quant.py --baseline random --pruned uniform:0.3 --latency_only \
        -o MobileNetV1.scale=1.0 "YOLOv3Head.in_channels=[256, 512, 1024]" \
        "YOLOv3Head.channels=[512, 256, 128]"

Both checkpoints are exported in FP32 and quantized (slim/quant/post_quant.py's pipeline,
--algo, --calib_samples TrainDataset images); every model's mAP is measured through Paddle
Inference on the config's eval set at --size, and its latency (batch 1, one thread, oneDNN;
INT8 with oneDNN's INT8 kernels) in --rounds interleaved rounds, the fastest round kept
(other processes on a shared machine only ever add time). Prints a Markdown table of ratios
against the FP32 models of the same run, the CPU's INT8 flags and the load average.
"""
import argparse
import os
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
CFG = "configs/shapes/yolov3_mobilenet_v1_shapes.yml"


def _cfg_at(config, size, opts=()):
    from ppdet.core.config import load_config
    steps = (f"[{{Decode: {{}}}}, {{Resize: {{target_size: [{size}, {size}], keep_ratio: "
             f"false, interp: 2}}}}, {{NormalizeImage: {{mean: [0.485, 0.456, 0.406], std: "
             f"[0.229, 0.224, 0.225], is_scale: true}}}}, {{Permute: {{}}}}]")
    return load_config(os.path.join(ROOT, config), [f"TestReader.sample_transforms={steps}",
                                                    f"EvalReader.sample_transforms={steps}",
                                                    *opts])


def _checkpoints(cfg, baseline, pruned, tmp):
    """``random`` and ``uniform:R`` (every prunable conv at filter ratio R, from the
    baseline) become checkpoints in ``tmp``; paths pass through."""
    import paddle

    from ppdet.engine.builder import build_model
    from ppdet.engine.checkpoint import load_weights, save_checkpoint
    if baseline == "random":
        paddle.seed(0)
        baseline = os.path.join(tmp, "random", "model")
        os.makedirs(os.path.dirname(baseline))
        save_checkpoint(build_model(cfg), baseline)
    if pruned.startswith("uniform:"):
        from ppdet.slim.prune.pruner import FilterPruner
        model = build_model(cfg)
        load_weights(model, baseline)
        pruner = FilterPruner(model)
        pruner.prune({name: float(pruned.split(":", 1)[1]) for name in sorted(pruner.groups)})
        pruner.drop_backups()
        pruned = os.path.join(tmp, "uniform", "model")
        os.makedirs(os.path.dirname(pruned))
        save_checkpoint(model, pruned)
    return baseline, pruned


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", required=True, help="unpruned checkpoint")
    parser.add_argument("--pruned", required=True, help="pruned (fine-tuned) checkpoint")
    parser.add_argument("-c", "--config", default=CFG)
    parser.add_argument("--size", type=int, default=320)
    parser.add_argument("--calib_samples", type=int, default=64)
    parser.add_argument("--algo", default="hist")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--latency_only", action="store_true", help="no mAP (random weights)")
    parser.add_argument("-o", "--opt", nargs="*", default=[], help="config overrides")
    args = parser.parse_args()
    from ppdet.engine.builder import build_model, class_names_for
    from ppdet.engine.checkpoint import load_weights
    from ppdet.engine.cpu_features import cpu_features, int8_advice
    from ppdet.engine.export import export_model
    from ppdet.engine.latency import measure_latency
    from ppdet.slim.prune.pruner import model_flops
    from ppdet.slim.quant.evaluation import exported_map
    from ppdet.slim.quant.pipeline import QuantRequest, post_quant
    cfg = _cfg_at(args.config, args.size, args.opt)
    start, load = time.time(), os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench_quant_") as tmp:
        folders, flops = {}, {}
        checkpoints = _checkpoints(cfg, args.baseline, args.pruned, tmp)
        for label, weights in zip(("unpruned", "pruned"), checkpoints):
            model = build_model(cfg)
            load_weights(model, weights)
            flops[label] = model_flops(model, [args.size, args.size])
            folders[(label, "FP32")] = export_model(model, cfg, os.path.join(tmp, label),
                                                    class_names_for(cfg))
            folder = os.path.join(tmp, label + "_int8")
            post_quant(QuantRequest(cfg, weights, output_dir=tmp, folder=folder,
                                    algo=args.algo, calib_samples=args.calib_samples,
                                    evaluate=False))
            folders[(label, "INT8")] = folder
        maps = {key: float("nan") if args.latency_only else exported_map(cfg, folder)[0]
                for key, folder in folders.items()}
        best = {key: float("inf") for key in folders}
        for _ in range(args.rounds):
            for key, folder in folders.items():
                best[key] = min(best[key], measure_latency(
                    folder, [args.size, args.size], threads=1, repeats=args.repeats,
                    stat="median"))
        sizes = {key: os.path.getsize(os.path.join(f, "model.pdiparams")) / 2 ** 20
                 for key, f in folders.items()}
    base = ("unpruned", "FP32")
    if args.opt:
        print(f"\nconfig overrides: {' '.join(args.opt)}")
    print(f"\n{args.size} px, batch 1, 1 thread, oneDNN; calibration: {args.calib_samples} "
          f"TrainDataset images, {args.algo}; latency: fastest of {args.rounds} interleaved "
          f"rounds of {args.repeats} runs (median each)\n")
    print("| model | precision | FLOPs (M) | size (MB) | VOC mAP via predictor | latency (ms) "
          "| speed-up vs same model FP32 | speed-up vs unpruned FP32 | mAP vs same FP32 | "
          "mAP vs unpruned FP32 |\n" + "|---" * 10 + "|")
    def pts(value, fmt):            # "-" where no mAP was measured (--latency_only)
        return "-" if value != value else format(value, fmt)
    for (label, prec), ms in best.items():
        same = (label, "FP32")
        print(f"| {label} | {prec} | {flops[label] / 1e6:.1f} | {sizes[(label, prec)]:.2f} | "
              f"{pts(maps[(label, prec)], '.2f')} | {ms:.2f} | {best[same] / ms:.2f}x | "
              f"{best[base] / ms:.2f}x | {pts(maps[(label, prec)] - maps[same], '+.2f')} | "
              f"{pts(maps[(label, prec)] - maps[base], '+.2f')} |")
    features = cpu_features()
    print(f"\nCPU INT8 flags: {', '.join(features) or 'none'} ({int8_advice(features)[0]})")
    print(f"load average at start {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f} on "
          f"{os.cpu_count()} cores, at end {os.getloadavg()[0]:.2f}; "
          f"{(time.time() - start) / 60:.1f} min")
    pruned_int8 = ("pruned", "INT8")
    goal1 = best[("pruned", "FP32")] / best[pruned_int8]
    goal2 = best[base] / best[pruned_int8]
    print(f"goal 1: pruned INT8 {goal1:.2f}x faster than pruned FP32 (>= 2.5x), mAP "
          f"{pts(maps[pruned_int8] - maps[('pruned', 'FP32')], '+.2f')} (>= -1.0)")
    print(f"goal 2: pruned INT8 {goal2:.2f}x faster than unpruned FP32 (>= 3.5x), mAP "
          f"{pts(maps[pruned_int8] - maps[base], '+.2f')} (>= -1.0)")


if __name__ == "__main__":
    main()
