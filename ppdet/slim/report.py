"""Tables of results: sensitivities, and one row per model (mAP, params, FLOPs, size,
measured and predicted latency, and the teacher of a distilled checkpoint) for the pruning
and slimming reports."""
import os

__all__ = ["sensitivity_table", "model_row", "report_table", "stage_table", "teacher_of"]


def sensitivity_table(sensitivities, ratios=None):
    """Markdown table: one row per conv, one column per ratio."""
    cols = sorted({r for v in sensitivities.values() for r in v})
    lines = ["| param | " + " | ".join(f"{c:g}" for c in cols) + " | chosen ratio |",
             "|---" * (len(cols) + 2) + "|"]
    for name in sensitivities:
        cells = [f"{sensitivities[name][c]:.4f}" if c in sensitivities[name] else ""
                 for c in cols]
        chosen = f"{ratios[name]:.3f}" if ratios and name in ratios else "-"
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {chosen} |")
    return "\n".join(lines)


def model_row(cfg, weights, workdir, latency_threads=1):
    """mAP, params, FLOPs, exported size and Paddle Inference latency of one checkpoint."""
    from ppdet.engine.builder import (
        build_metric_for,
        build_model,
        build_reader,
        class_names_for,
        image_size_for,
    )
    from ppdet.engine.checkpoint import load_weights
    from ppdet.engine.evaluate import evaluate
    from ppdet.engine.export import export_model
    from ppdet.engine.latency import measure_latency
    from ppdet.slim.prune.costs import count_flops, count_params
    model = build_model(cfg)
    meta = load_weights(model, weights)
    loader = build_reader(cfg, "eval")
    metric = build_metric_for(cfg, loader.dataset)
    result = evaluate(model, loader, metric, progress=False)
    size = image_size_for(cfg, "test")
    out = export_model(model, cfg, workdir, class_names_for(cfg))
    mb = os.path.getsize(os.path.join(out, "model.pdiparams")) / 2 ** 20
    from ppdet.slim.latency.error_bars import predicted_latency
    predicted, _ = predicted_latency(cfg, model, latency_threads)
    return {"mAP": result["mAP"] * 100, "metric": metric.headline,
            "params": count_params(model) / 1e6,
            "flops": count_flops(model, size) / 1e6, "size": mb,
            "latency": measure_latency(out, size, use_mkldnn=True, threads=latency_threads),
            "predicted": None if predicted is None else predicted.ms,
            "predicted_err": None if predicted is None else predicted.err,
            "teacher": teacher_of(meta)}


def teacher_of(meta):
    """Who taught a distilled checkpoint (``self (W)`` or ``CONFIG (W)``), else None."""
    spec = (meta or {}).get("distill")
    if not spec:
        return None
    from ppdet.engine.distill import TeacherSpec
    return TeacherSpec.from_meta(spec).describe()


def _predicted(r):
    if r.get("predicted") is None:
        return "-"
    err = r.get("predicted_err")
    return f"{r['predicted']:.2f}" + ("" if err is None else f" ± {err:.2f}")


def _metric_label(row):
    """The column's name: the metric's headline (VOC mAP or COCO AP 0.50:0.95), x100."""
    return f"{row.get('metric', 'mAP(0.50, 11point)')}, x100"


def report_table(rows):
    """Markdown: one row per (label, model_row)."""
    base = rows[0][1]
    pred = any(r.get("predicted") is not None for _, r in rows)
    taught = any(r.get("teacher") for _, r in rows)     # a column only for distilled rows
    lines = [f"| model | {_metric_label(base)} | params (M) | FLOPs (M) | size (MB) | "
             f"latency (ms) " + ("| predicted (ms) " if pred else "") + "| speed-up |"
             + (" teacher |" if taught else ""),
             "|---" * (7 + pred + taught) + "|"]
    for label, r in rows:
        lines.append(f"| {label} | {r['mAP']:.2f} | {r['params']:.3f} | {r['flops']:.1f} "
                     f"({r['flops'] / base['flops'] - 1:+.0%}) | {r['size']:.2f} | "
                     f"{r['latency']:.2f} | " + (f"{_predicted(r)} | " if pred else "")
                     + f"{base['latency'] / r['latency']:.2f}x |"
                     + (f" {r.get('teacher') or '-'} |" if taught else ""))
    return "\n".join(lines)


def stage_table(rows):
    """Markdown, one column per stage (the network-slimming write-up's layout): mAP, params,
    FLOPs and latency for Before / After prune channels / ... ."""
    base = rows[0][1]
    lines = ["| metric | " + " | ".join(label for label, _ in rows) + " |",
             "|---" * (len(rows) + 1) + "|"]
    cells = {
        _metric_label(base): lambda r: f"{r['mAP']:.2f}",
        "parameters": lambda r: f"{int(round(r['params'] * 1e6)):,}",
        "FLOPs (M)": lambda r: f"{r['flops']:.1f} ({r['flops'] / base['flops'] - 1:+.0%})",
        "latency (ms)": lambda r: f"{r['latency']:.2f}",
        **({"predicted latency (ms)": _predicted}
           if any(r.get("predicted") is not None for _, r in rows) else {}),
        "speed-up": lambda r: f"{base['latency'] / r['latency']:.2f}x",
        **({"teacher": lambda r: r.get("teacher") or "-"}
           if any(r.get("teacher") for _, r in rows) else {}),
    }
    for metric, fmt in cells.items():
        lines.append(f"| {metric} | " + " | ".join(fmt(r) for _, r in rows) + " |")
    return "\n".join(lines)


def stage_rows(cfg, stages):
    """``[(label, weights)]`` -> ``[(label, row)]``: mAP, params, FLOPs, size and latency
    of each checkpoint (``ppdet.slim.report.model_row``), each exported to a temporary
    folder."""
    import tempfile

    from ppdet.slim.report import model_row
    rows = []
    for label, weights in stages:
        with tempfile.TemporaryDirectory(prefix="slim_report_") as tmp:
            rows.append((label, model_row(cfg, weights, tmp)))
    return rows
