"""Latency of an exported model under Paddle Inference (CPU, batch 1)."""
import time

import numpy as np

__all__ = ["measure_latency", "summarise"]


def summarise(times, stat="median"):
    """``median``, or ``pNN`` (that percentile: ``p10`` is robust on a shared machine,
    where other processes only ever add time)."""
    if stat == "median":
        return float(np.median(times))
    if isinstance(stat, str) and stat.startswith("p") and stat[1:].isdigit():
        return float(np.percentile(times, int(stat[1:])))
    raise ValueError(f"unknown statistic {stat!r}: median or pNN")


def measure_latency(model_dir, image_size, use_mkldnn=True, warmup=10, repeats=50, threads=1,
                    stat="median"):
    """Milliseconds per image over ``repeats`` runs after ``warmup`` (median, or the
    percentile ``stat`` names)."""
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
    return summarise(times, stat)
