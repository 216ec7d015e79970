"""Full-width YOLOv3-DarkNet53 / -ResNet34: build, count, prune to PaddleDetection's FPGM
config, export at 608 px and verify (random weights: structure and counts only).

    python bench/bench_backbones.py [--no_export]

For each of configs/yolov3_darknet53_coco.yml and configs/yolov3_r34_voc.yml:
1. parameters, and the size of the float32 weights file (parameters + BN statistics) in MiB,
   which is what PaddleDetection's model zoo calls "model size (MB)";
2. FLOPs at 608x608, batch 1, as paddleslim's ``flops`` counts them (multiply-adds of convs,
   2 per BN element, 1 per ReLU element) and x2;
3. DarkNet only: FLOPs after PaddleDetection 2.x's configs/slim/prune/
   yolov3_darknet_prune_fpgm.yml (conv2d_52..57, 59..64 at 0.75, 66..71 at 0.875: its names
   for the 18 head convs), counted from the pruning graph;
4. export at 608 (legacy program, oneDNN predictor) and the predictor's raw head outputs
   against the dygraph model's on one random image (max abs difference).
Prints a Markdown table for bench/HISTORY.md / RESULTS.md.
"""
import argparse
import os
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
SIZE = (608, 608)
FPGM = {**{f"conv2d_{n}.w_0": 0.75 for n in list(range(52, 58)) + list(range(59, 65))},
        **{f"conv2d_{n}.w_0": 0.875 for n in range(66, 72)}}


def counts(model):
    from ppdet.slim.prune.costs import count_flops, count_params
    n_bytes = sum(int(np.prod(v.shape)) * 4 for v in model.state_dict().values())
    return count_params(model), n_bytes / 2 ** 20, count_flops(model, SIZE)


def fpgm_flops(model):
    """FLOPs at 608 after the FPGM config's ratios (named by PaddleDetection's auto names)."""
    from ppdet.slim.prune.costs import Costs, removed_for_ratios
    from ppdet.slim.prune.graph import PruneGraph
    from ppdet.slim.prune.params import select_params
    names = select_params(model, ",".join(FPGM))
    ratios = dict(zip(names, FPGM.values()))
    graph = PruneGraph.of(model)
    costs = Costs(graph, SIZE)
    return costs.flops(removed_for_ratios(graph, ratios)), costs.n_params(
        removed_for_ratios(graph, ratios))


def export_and_verify(model, cfg):
    import paddle

    from ppdet.engine.builder import class_names_for
    from ppdet.engine.export import Predictor, export_model
    out = os.path.join(tempfile.mkdtemp(), "export")
    tic = time.time()
    export_model(model, cfg, out, class_names_for(cfg))
    seconds = time.time() - tic
    x = np.random.RandomState(0).uniform(-1, 1, (1, 3, *SIZE)).astype("float32")
    with paddle.no_grad():
        want = [o.numpy() for o in model.head_outputs(paddle.to_tensor(x))]
    pred = Predictor(out, use_mkldnn=True, cpu_threads=1)
    got = pred.run(x, np.array([SIZE], "float32"), np.ones((1, 2), "float32"), raw=True)[2]
    assert len(got) == len(want), "the export holds no raw head outputs"
    diff = max(float(np.abs(np.asarray(g) - w).max()) for g, w in zip(got, want))
    return seconds, diff, max(float(np.abs(w).max()) for w in want)


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--no_export", action="store_true")
    args = parser.parse_args()
    from ppdet.core.config import load_config
    from ppdet.engine.builder import build_model
    rows = []
    for cfg_path in ("configs/yolov3_darknet53_coco.yml", "configs/yolov3_r34_voc.yml"):
        cfg = load_config(os.path.join(ROOT, cfg_path))          # its test size is 608
        model = build_model(cfg)
        model.eval()
        params, mib, flops = counts(model)
        row = [cfg_path, f"{params:,}", f"{mib:.1f}", f"{flops / 1e9:.2f}",
               f"{2 * flops / 1e9:.2f}"]
        if "darknet" in cfg_path:
            f2, p2 = fpgm_flops(model)
            row += [f"{f2 / 1e9:.2f} ({1 - f2 / flops:.1%} fewer), params {p2:,}"]
        else:
            row += ["-"]
        if not args.no_export:
            seconds, diff, scale = export_and_verify(model, cfg)
            row += [f"{seconds:.0f} s, max diff {diff:.2e} (outputs up to {scale:.1f})"]
        rows.append(row)
        print(" | ".join(row), flush=True)
        del model
    print("\n| config | params | weights MiB | GFLOPs (MACs) | GFLOPs x2 | after 2.x FPGM "
          "config | export 608 + verify |\n|---|---|---|---|---|---|---|")
    for r in rows:
        print("| " + " | ".join(r + ([""] if len(r) < 7 else [])) + " |")


if __name__ == "__main__":
    main()
