"""Where the time goes in the exported tiny model: Paddle Inference's profiler, oneDNN, one
thread, 200 runs (random weights, prediction convs biased to background as in
bench_latency.py). The per-op summary is printed when the predictor is released.

    python bench/profile_exported.py 160     # or 320
"""
import os
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "bench"))


def main():
    import numpy as np
    from bench_latency import _background, _cfg
    from paddle import inference

    from ppdet.engine.builder import build_model
    from ppdet.engine.export import export_model
    from ppdet.slim.graph import PruneGraph
    size = int(sys.argv[1]) if len(sys.argv) > 1 else 160
    cfg = _cfg("configs/shapes/yolov3_mobilenet_v1_shapes.yml", size)
    model = build_model(cfg)
    _background(PruneGraph.of(model))
    folder = tempfile.mkdtemp(prefix="profile_")
    export_model(model, cfg, folder, ["c"] * 4)
    config = inference.Config(os.path.join(folder, "model.pdmodel"),
                              os.path.join(folder, "model.pdiparams"))
    config.disable_gpu()
    config.set_cpu_math_library_num_threads(1)
    config.enable_mkldnn()
    config.enable_profile()
    predictor = inference.create_predictor(config)
    feeds = {"image": np.random.RandomState(0).randn(1, 3, size, size).astype("float32"),
             "im_shape": np.array([[size, size]], "float32"),
             "scale_factor": np.ones((1, 2), "float32")}
    for name in predictor.get_input_names():
        predictor.get_input_handle(name).copy_from_cpu(feeds[name])
    for _ in range(200):
        predictor.run()
    del predictor                       # prints the report


if __name__ == "__main__":
    main()
