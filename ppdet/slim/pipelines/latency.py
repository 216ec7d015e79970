"""Building a config's latency table as one call (``slim/prune/latency_table.py``)."""
import os

from ppdet.slim.latency.build import build_table
from ppdet.slim.latency.table import table_path
from ppdet.slim.prune.graph import PruneGraph

__all__ = ["build_latency_table", "check_exported_latency"]


def build_latency_table(cfg, req, log=print):
    """Build (or finish) the latency table the
    :class:`~ppdet.slim.pipelines.requests.LatencyTableRequest` describes, beside the
    config's weights unless ``req.output`` names the file; returns the table."""
    req = req.check()
    from ppdet.engine.builder import build_model, image_size_for
    from ppdet.engine.checkpoint import load_weights
    size = image_size_for(cfg, "test")
    path = req.output or table_path(cfg.get("weights"), size, req.threads,
                                    precision=req.precision)
    model = build_model(cfg)
    if cfg.get("weights"):
        load_weights(model, cfg.get("weights"))
    table = build_table(PruneGraph.of(model), cfg, path, size, threads=req.threads,
                        step=req.step, max_counts=req.max_counts, repeats=req.repeats,
                        passes=req.passes, log=log, precision=req.precision)
    from ppdet.slim.latency.error_bars import predict_plan
    log(f"{path}: {sum(len(e) for e in table.entries.values())} entries over "
        f"{len(table.entries)} groups; whole model {req.precision.upper()} "
        f"{table.full_ms:.2f} ms at {size[0]}x{size[1]}, {req.threads} thread(s); "
        f"predictions carry {predict_plan(table, {}).detail()} unpruned")
    return table


def check_exported_latency(cfg, model, model_dir, threads=1, precision="fp32", log=print):
    """With a latency table of ``precision`` for this config: measure the exported model in
    ``model_dir`` and print it beside the table's prediction for ``model`` (the check that
    the table still tells the truth). ``model`` None: the config's weights, built here.
    Returns the measured ms, or None without a table."""
    from ppdet.engine.builder import image_size_for
    from ppdet.slim.latency.error_bars import predicted_latency
    if not os.path.isfile(table_path(cfg.get("weights"), image_size_for(cfg, "test"), threads,
                                     precision=precision)):
        return None                         # the common case: no table, nothing to load
    if model is None:
        from ppdet.engine.builder import build_model
        from ppdet.engine.checkpoint import load_weights
        model = build_model(cfg)
        load_weights(model, cfg.get("weights"))
    predicted, table = predicted_latency(cfg, model, threads, precision)
    if table is None:
        return None
    from ppdet.engine.latency import measure_latency
    from ppdet.slim.latency.error_bars import measured_line
    from ppdet.slim.latency.timing import STAT
    ms = measure_latency(model_dir, table.key["input_size"], threads=table.key["threads"],
                         stat=STAT)
    if predicted is None:
        log(f"{table.precision.upper()} latency: measured {ms:.2f} ms; {table.path} cannot "
            f"predict it: {len(model.removed_layers)} residual block(s) of this model are "
            f"removed (e.g. {model.removed_layers[0]}), and the table times the full-depth "
            f"model")
        return ms
    log(measured_line(predicted, ms, table))
    fp32 = _fp32_convs(model_dir)
    if table.precision == "int8" and fp32:
        log(f"note: {len(fp32)} conv(s) of this model stay in FP32 (--skip / --max_loss, e.g. "
            f"{fp32[0]}); the INT8 table timed every conv in INT8, so its prediction is the "
            f"all-INT8 model's")
    return ms


def _fp32_convs(model_dir):
    import yaml
    path = os.path.join(model_dir, "infer_cfg.yml")
    if not os.path.isfile(path):
        return []
    with open(path) as f:
        info = yaml.safe_load(f) or {}
    return list((info.get("quantization") or {}).get("fp32_convs") or [])
