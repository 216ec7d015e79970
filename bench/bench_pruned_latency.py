"""Why a -50% FLOPs model is not 2x faster: latency of baseline vs pruned at several input
sizes (Paddle Inference, CPU, batch 1, oneDNN, one thread), same run.

    python bench/bench_pruned_latency.py --baseline W0 --pruned W1 [--sizes "160 320 608"]
"""
import argparse
import os
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
CFG = "configs/shapes/yolov3_mobilenet_v1_shapes.yml"


def _cfg_at(size):
    from ppdet.core.config import load_config
    return load_config(os.path.join(ROOT, CFG), [
        f"TestReader.sample_transforms=[{{Decode: {{}}}}, {{Resize: {{target_size: [{size}, "
        f"{size}]}}}}, {{NormalizeImage: {{mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, "
        f"0.225]}}}}, {{Permute: {{}}}}]"])


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--baseline", required=True)
    parser.add_argument("--pruned", required=True)
    parser.add_argument("--sizes", default="160 320 608")
    args = parser.parse_args()
    from ppdet.engine.builder import build_model
    from ppdet.engine.checkpoint import load_weights
    from ppdet.engine.export import export_model
    from ppdet.engine.latency import measure_latency
    from ppdet.slim.prune.pruner import model_flops
    print("| input | baseline ms | pruned ms | speed-up | FLOPs ratio |\n|---|---|---|---|---|")
    for size in [int(s) for s in args.sizes.split()]:
        cfg = _cfg_at(size)
        ms, flops = [], []
        for weights in (args.baseline, args.pruned):
            model = build_model(cfg)
            load_weights(model, weights)
            flops.append(model_flops(model, [size, size]))
            d = export_model(model, cfg, tempfile.mkdtemp(), ["a", "b", "c", "d"])
            ms.append(measure_latency(d, [size, size], use_mkldnn=True, repeats=80))
        print(f"| {size} | {ms[0]:.2f} | {ms[1]:.2f} | {ms[0] / ms[1]:.2f}x | "
              f"{flops[0] / flops[1]:.2f}x |")


if __name__ == "__main__":
    main()
