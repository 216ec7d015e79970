"""Latency of an exported model under Paddle Inference (CPU, batch 1)."""
import time

import numpy as np

__all__ = ["measure_latency"]


def measure_latency(model_dir, image_size, use_mkldnn=True, warmup=10, repeats=50, threads=1):
    """Median milliseconds per image over ``repeats`` runs after ``warmup``."""
    from ppdet.engine.export import Predictor
    predictor = Predictor(model_dir, use_mkldnn=use_mkldnn, cpu_threads=threads)
    h, w = image_size
    rng = np.random.RandomState(0)
    image = rng.randn(1, 3, h, w).astype("float32")
    shape = np.array([[h, w]], "float32")
    scale = np.ones((1, 2), "float32")
    for _ in range(warmup):
        predictor.run(image, shape, scale)
    times = []
    for _ in range(repeats):
        tic = time.perf_counter()
        predictor.run(image, shape, scale)
        times.append((time.perf_counter() - tic) * 1000)
    return float(np.median(times))
