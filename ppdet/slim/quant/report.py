"""INT8 rows for the compression report (``slim/prune/report.py --int8``).

Each checkpoint's FP32 row is followed by ``<label> INT8``: the same checkpoint quantized
(``pipeline.post_quant``), its mAP through the predictor, its exported size and latency
(Paddle Inference, oneDNN INT8, batch 1). Params and FLOPs are the FP32 row's (quantization
keeps every shape); the speed-up column reads against the first row, as for FP32 rows.
"""
import os
import tempfile

__all__ = ["check_int8_rows", "with_int8_rows"]


def _request(cfg, weights, folder, algo, calib_samples, calib_batch_size, threads):
    from ppdet.slim.quant.pipeline import QuantRequest
    return QuantRequest(cfg, weights, output_dir=os.path.dirname(folder), folder=folder,
                        algo=algo, calib_samples=calib_samples,
                        calib_batch_size=calib_batch_size, evaluate=False, threads=threads,
                        log=lambda *a: None)


def check_int8_rows(cfg, pairs, algo="hist", calib_samples=32, calib_batch_size=8):
    """The INT8 options for every ``(label, weights)``, before the first evaluation."""
    from ppdet.slim.quant.pipeline import check_request
    for _, weights in pairs:
        check_request(_request(cfg, weights, os.path.join(tempfile.gettempdir(), "x"), algo,
                               calib_samples, calib_batch_size, 1))


def with_int8_rows(cfg, rows, pairs, algo="hist", calib_samples=32, calib_batch_size=8,
                   threads=1):
    """``rows`` (``[(label, model_row)]`` of ``pairs``) with an INT8 row after each."""
    from ppdet.engine.builder import image_size_for
    from ppdet.engine.latency import measure_latency
    from ppdet.slim.quant.evaluation import exported_map
    from ppdet.slim.quant.pipeline import post_quant
    out = []
    for (label, row), (_, weights) in zip(rows, pairs):
        with tempfile.TemporaryDirectory(prefix="int8_report_") as tmp:
            folder = os.path.join(tmp, "int8")
            post_quant(_request(cfg, weights, folder, algo, calib_samples, calib_batch_size,
                                threads))
            mean_ap, _ = exported_map(cfg, folder, threads)
            out.append((label, row))
            out.append((f"{label} INT8", {
                **row, "mAP": mean_ap, "predicted": None,
                "size": os.path.getsize(os.path.join(folder, "model.pdiparams")) / 2 ** 20,
                "latency": measure_latency(folder, image_size_for(cfg, "test"),
                                           threads=threads)}))
    return out
