"""mAP of an exported model through the predictor (FP32 or INT8, as its ``infer_cfg.yml``
says), on the config's eval set, with the one evaluation loop (``ppdet.engine.evaluate``)."""

__all__ = ["exported_map"]


def exported_map(cfg, model_dir, threads=1):
    """``(mAP x100, metric headline)`` of the exported ``model_dir`` on the EvalDataset."""
    from ppdet.engine.builder import build_metric_for, build_reader
    from ppdet.engine.evaluate import evaluate
    from ppdet.engine.export import ExportedDetector
    loader = build_reader(cfg, "eval")
    metric = build_metric_for(cfg, loader.dataset)
    detector = ExportedDetector(model_dir, cpu_threads=threads)
    result = evaluate(detector, loader, metric, progress=False)
    return result["mAP"] * 100, metric.headline
