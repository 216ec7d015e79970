"""Where the time goes in the exported tiny YOLOv3, and what the exporter's cuts save.

    python bench/profile_exported.py [--weights W] [--sizes 160 320] [--map]

For each size the model is measured five ways:
  before  the program as ``paddle.jit.save`` writes it, default Paddle Inference config;
  folded  as ``tools/export_model.py`` exports it now (conv biases folded so oneDNN fuses
          them), default config;
  after   the same, run as ``Predictor`` runs it now (memory optimisation on);
  heads   the backbone and head alone (no decode, no NMS), before and after.
Latency: oneDNN, 1 thread, batch 1, the first --images val images; a fresh predictor per
variant and round, variants in turn (same machine load); per image the minimum over rounds
x repeats, then the mean over images. Then Paddle's profiler (``Config.enable_profile``)
on before and after, summed per part of the model. ``--map``: VOC mAP of the exported
before and after on the eval set at each size (the same detections give the same mAP).
``--nms``: what the score filter and top-k settings could save: the ``yolo_box`` and
``multiclass_nms3`` kernels timed in dygraph on the decoded val images (minimum of 20 calls,
mean over images; each call carries ~5 us of Python) and the dygraph model's mAP, per
setting.
"""
import argparse
import gc
import os
import re
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

CFG = "configs/shapes/yolov3_mobilenet_v1_shapes.yml"
# profiler op types -> part of the model (concat: the two routes and the two decode joins)
PARTS = [("convs, conv+BN+act fused (`fused_conv2d`, `conv2d`)", ("fused_conv2d", "conv2d",
                                                                  "depthwise_conv2d")),
         ("prediction conv bias (`elementwise_add`, `reshape2`)", ("elementwise_add",
                                                                   "reshape2")),
         ("routes and joins (`concat`, `nearest_interp_v2`)", ("concat", "nearest_interp_v2")),
         ("decode (`yolo_box`, `transpose2`, `elementwise_div`, `scale`, `cast`)",
          ("yolo_box", "transpose2", "elementwise_div", "scale", "cast")),
         ("NMS (`multiclass_nms3`)", ("multiclass_nms3",))]


def _cfg(size):
    from ppdet.core.config import load_config
    resize = (f"{{Resize: {{target_size: [{size}, {size}], keep_ratio: false, interp: 2}}}}")
    steps = (f"[{{Decode: {{}}}}, {resize}, {{NormalizeImage: {{mean: [0.485, 0.456, 0.406], "
             f"std: [0.229, 0.224, 0.225], is_scale: true}}}}, {{Permute: {{}}}}]")
    return load_config(os.path.join(ROOT, CFG), [f"TestReader.sample_transforms={steps}",
                                                 f"EvalReader.sample_transforms={steps}"])


class _Heads:
    """The backbone + head program alone (what decode and NMS add is the difference)."""

    @staticmethod
    def export(model, size, folder, infer_cfg_from, simplify):
        import shutil

        import paddle

        from ppdet.engine.export import simplify_saved_program
        from ppdet.slim.prune.graph import _RawOutputs as Wrapper  # image -> raw head outputs

        spec = [paddle.static.InputSpec([None, 3, size, size], "float32", "image")]
        with paddle.pir_utils.DygraphOldIrGuard():
            paddle.jit.save(paddle.jit.to_static(Wrapper(model), input_spec=spec,
                                                 full_graph=True), os.path.join(folder, "model"))
        if simplify:
            simplify_saved_program(os.path.join(folder, "model.pdmodel"))
        shutil.copy(os.path.join(infer_cfg_from, "infer_cfg.yml"), folder)


def _images(size, n):
    import glob

    from ppdet.engine.export import preprocess_image, read_image
    files = sorted(glob.glob(os.path.join(ROOT, "dataset/shapes/voc/JPEGImages/val_*.jpg")))
    steps = [{"type": "Resize", "target_size": [size, size], "interp": 2},
             {"type": "NormalizeImage", "mean": [0.485, 0.456, 0.406],
              "std": [0.229, 0.224, 0.225]}, {"type": "Permute"}]
    return [tuple(a[None] for a in preprocess_image(read_image(f), steps))
            for f in files[:n]]


def _time(variants, images, rounds, repeats):
    """({name: mean over images of the per-image minimum ms}, {name: [the same, per round]})
    (per round: ratios between variants of one round saw the same load)."""
    from ppdet.engine.export import Predictor
    best = {name: [float("inf")] * len(images) for name in variants}
    per_round = {name: [] for name in variants}
    for _ in range(rounds):
        for name, (folder, memory_optim) in variants.items():
            predictor = Predictor(folder, memory_optim=memory_optim)
            mins = []
            for i, feeds in enumerate(images):
                ms = []
                for _ in range(repeats):
                    tic = time.perf_counter()
                    predictor.run(*feeds)
                    ms.append((time.perf_counter() - tic) * 1000)
                mins.append(min(ms))
                best[name][i] = min(best[name][i], mins[-1])
            per_round[name].append(sum(mins) / len(mins))
            del predictor            # one predictor alive at a time: they slow each other
            gc.collect()
    return {name: sum(v) / len(v) for name, v in best.items()}, per_round


def _profile_child(folder, memory_optim, size, runs):
    """In a child process (the report is printed by C++ when the predictor goes)."""
    import numpy as np
    from paddle import inference
    config = inference.Config(os.path.join(folder, "model.pdmodel"),
                              os.path.join(folder, "model.pdiparams"))
    config.disable_gpu()
    config.set_cpu_math_library_num_threads(1)
    config.enable_mkldnn()
    if memory_optim:
        config.enable_memory_optim()
    config.enable_profile()
    predictor = inference.create_predictor(config)
    image, im_shape, scale = _images(size, 1)[0]
    feeds = {"image": image, "im_shape": im_shape, "scale_factor": scale}
    for name in predictor.get_input_names():
        predictor.get_input_handle(name).copy_from_cpu(np.ascontiguousarray(feeds[name]))
    for _ in range(runs):
        predictor.run()
    del predictor


def _profile(folder, memory_optim, size, runs):
    """({part: share of the op time}, framework overhead share, ops per run)."""
    r = subprocess.run([sys.executable, __file__, "--_profile", folder, str(int(memory_optim)),
                        str(size), str(runs)], capture_output=True, text=True, timeout=600)
    text = r.stdout + r.stderr
    totals, calls = {}, 0
    for m in re.finditer(r"^thread0::(\w+)\s+(\d+)\s+([\d.]+)", text, re.M):
        if m.group(1) in ("Executor", "load_combine"):
            continue
        totals[m.group(1)] = float(m.group(3))
        calls += int(m.group(2))
    overhead = re.search(r"Framework overhead\s+Total:\s+[\d.]+\s+Ratio:\s+([\d.]+)%", text)
    if not totals or overhead is None:
        raise RuntimeError(f"no profiler report from {folder}:\n{text[-2000:]}")
    all_ms = sum(totals.values())
    shares = {}
    for part, ops in PARTS:
        shares[part] = sum(totals.pop(op, 0.) for op in ops) / all_ms
    shares["other"] = sum(totals.values()) / all_ms
    return shares, float(overhead.group(1)) / 100, calls / runs


def _map(folder, memory_optim, size):
    from ppdet.engine.builder import build_metric_for, build_reader
    from ppdet.engine.evaluate import evaluate
    from ppdet.engine.export import ExportedDetector
    cfg = _cfg(size)
    cfg["EvalReader"]["worker_num"] = 0
    loader = build_reader(cfg, "eval")
    metric = build_metric_for(cfg, loader.dataset)
    return 100 * evaluate(ExportedDetector(folder, memory_optim=memory_optim), loader, metric,
                          progress=False)["mAP"]


NMS_SETTINGS = [  # (name, YOLOBox conf_thresh, MultiClassNMS kwargs)
    ("PaddleDetection defaults", 0.005, dict(score_threshold=0.01, nms_top_k=1000)),
    ("conf_thresh = score_threshold", 0.01, dict(score_threshold=0.01, nms_top_k=1000)),
    ("nms_top_k 100", 0.005, dict(score_threshold=0.01, nms_top_k=100)),
    ("score_threshold 0.05", 0.005, dict(score_threshold=0.05, nms_top_k=1000))]


def _nms_rows(model, size, n_images):
    import numpy as np
    import paddle

    from ppdet.engine.builder import build_metric_for, build_reader
    from ppdet.engine.evaluate import evaluate
    from ppdet.modeling.post_process import BBoxPostProcess, MultiClassNMS, YOLOBox
    cfg = _cfg(size)
    cfg["EvalReader"]["worker_num"] = 0
    loader = build_reader(cfg, "eval")
    metric = build_metric_for(cfg, loader.dataset)
    head, saved = model.yolo_head, model.post_process
    with paddle.no_grad():
        heads = [model.head_outputs(paddle.to_tensor(img)) for img, _, _ in
                 _images(size, n_images)]
    origin = paddle.to_tensor([[size, size]], "int32")

    def best(fn):
        times = []
        for _ in range(20):
            tic = time.perf_counter()
            out = fn()
            times.append((time.perf_counter() - tic) * 1e6)
        return min(times), out

    rows = []
    for name, conf, kw in NMS_SETTINGS:
        decode, nms = YOLOBox(conf_thresh=conf), MultiClassNMS(keep_top_k=100, **kw)
        t_dec, t_nms, kept = [], [], []
        for outs in heads:
            t, (boxes, scores) = best(lambda: decode(outs, origin, head.anchors,
                                                     head.anchor_masks,
                                                     head.downsample_ratios, head.num_classes))
            t_dec.append(t)
            t, (bbox, _) = best(lambda: nms(boxes, scores))
            t_nms.append(t)
            kept.append(int((bbox.numpy()[:, 0] >= 0).sum()))
        model.post_process = BBoxPostProcess(decode=decode, nms=nms)
        m = 100 * evaluate(model, loader, metric, progress=False)["mAP"]
        rows.append((size, name, np.mean(t_dec), np.mean(t_nms), np.mean(kept), m))
    model.post_process = saved
    return rows


def main():
    if sys.argv[1:2] == ["--_profile"]:
        folder, mem, size, runs = sys.argv[2:6]
        return _profile_child(folder, mem == "1", int(size), int(runs))
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", default="output/yolov3_mobilenet_v1_shapes/model_final",
                        help="trained tiny YOLOv3 (no suffix)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[160, 320])
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--profile_runs", type=int, default=200)
    parser.add_argument("--map", action="store_true", help="also mAP of before and after")
    parser.add_argument("--nms", action="store_true",
                        help="also the decode/NMS kernels and mAP per score filter setting")
    args = parser.parse_args()
    if not os.path.isfile(args.weights + ".pdparams"):
        print(f"error: {args.weights}.pdparams not found: train the tiny model "
              f"(tools/train.py -c {CFG}) or pass --weights", file=sys.stderr)
        sys.exit(2)
    import numpy as np

    from ppdet.engine.builder import build_model
    from ppdet.engine.checkpoint import load_weights
    from ppdet.engine.export import export_model
    root = tempfile.mkdtemp(prefix="profile_exported_")
    rows, nms_rows = [], []
    for size in args.sizes:
        cfg = _cfg(size)
        model = build_model(cfg)
        load_weights(model, args.weights)
        folders = {v: os.path.join(root, f"{size}_{v}")
                   for v in ("before", "after", "heads before", "heads after")}
        export_model(model, cfg, folders["before"], ["c"] * 4, simplify=False)
        export_model(model, cfg, folders["after"], ["c"] * 4)
        for v in ("before", "after"):
            _Heads.export(model, size, folders[f"heads {v}"], folders[v], v == "after")
        variants = {v: (folders[v], v.endswith("after")) for v in folders}
        variants["folded"] = (folders["after"], False)      # the fold alone
        ms, per_round = _time(variants, _images(size, args.images), args.rounds, args.repeats)
        ms["paired"] = float(np.median([a / b for a, b in zip(per_round["after"],
                                                              per_round["before"])]))
        prof = {v: _profile(*variants[v], size, args.profile_runs) for v in ("before", "after")}
        maps = {v: _map(*variants[v], size) for v in ("before", "after")} if args.map else {}
        rows.append((size, ms, prof, maps))
        if args.nms:
            nms_rows += _nms_rows(model, size, args.images)
    import shutil
    shutil.rmtree(root, ignore_errors=True)

    print(f"\n{args.weights}, oneDNN, 1 thread, batch 1, {args.images} val images, "
          f"{args.rounds} rounds x {args.repeats} runs, min per image, mean over images\n")
    print("| size | before ms | bias folded ms | after (+ memory optim) ms | after/before "
          "(median of per-round ratios) | "
          "backbone+head alone, before / after ms | decode+NMS before | decode+NMS after |" +
          (" mAP before | mAP after |" if args.map else ""))
    print("|---|---|---|---|---|---|---|---|" + ("---|---|" if args.map else ""))
    for size, ms, _, maps in rows:
        b, a, hb, ha = ms["before"], ms["after"], ms["heads before"], ms["heads after"]
        line = (f"| {size} | {b:.3f} | {ms['folded']:.3f} ({ms['folded'] / b:.3f}) | {a:.3f} | "
                f"{a / b:.3f} ({ms['paired']:.3f}) | {hb:.3f} / {ha:.3f} | "
                f"{b - hb:.3f} ms ({(b - hb) / b:.1%}) | {a - ha:.3f} ms ({(a - ha) / a:.1%}) |")
        if maps:
            line += f" {maps['before']:.2f} | {maps['after']:.2f} |"
        print(line)
    print(f"\nProfiler ({args.profile_runs} runs, one val image): share of the op time")
    head = " | ".join(f"{s} before | {s} after" for s, *_ in rows)
    print(f"| part | {head} |\n|---|" + "---|---|" * len(rows))
    for part in [p for p, _ in PARTS] + ["other"]:
        cells = " | ".join(f"{prof['before'][0][part]:.1%} | {prof['after'][0][part]:.1%}"
                           for _, _, prof, _ in rows)
        print(f"| {part} | {cells} |")
    cells = " | ".join(f"{prof['before'][1]:.1%} | {prof['after'][1]:.1%}"
                       for _, _, prof, _ in rows)
    print(f"| framework overhead (share of the total, on top) | {cells} |")
    cells = " | ".join(f"{prof['before'][2]:.0f} | {prof['after'][2]:.0f}"
                       for _, _, prof, _ in rows)
    print(f"| ops run per image | {cells} |")

    if nms_rows:
        print("\n| size | setting | decode (3 yolo_box, 2 concat, transpose) us | "
              "multiclass_nms3 us | boxes kept per image | mAP (dygraph) |\n"
              "|---|---|---|---|---|---|")
        for size, name, dec, nms, kept, m in nms_rows:
            print(f"| {size} | {name} | {dec:.0f} | {nms:.0f} | {kept:.1f} | {m:.2f} |")


if __name__ == "__main__":
    main()
