"""Building a config's latency table as one call (``slim/prune/latency_table.py``)."""
from ppdet.slim.latency.build import build_table
from ppdet.slim.latency.table import table_path
from ppdet.slim.prune.graph import PruneGraph

__all__ = ["build_latency_table"]


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
    from ppdet.slim.latency.error_bars import predict_with_error
    log(f"{path}: {sum(len(e) for e in table.entries.values())} entries over "
        f"{len(table.entries)} groups; whole model {req.precision.upper()} "
        f"{table.full_ms:.2f} ms at {size[0]}x{size[1]}, {req.threads} thread(s); "
        f"predictions carry {predict_with_error(table, {}).detail()} unpruned")
    return table
