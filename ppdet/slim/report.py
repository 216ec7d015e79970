"""Pictures and tables of sensitivity results."""
import os

__all__ = ["plot_sensitivities", "sensitivity_table", "model_row", "report_table",
           "stage_table"]


def plot_sensitivities(sensitivities, path, title="sensitivity", threshold=None):
    """Loss vs pruned ratio, one line per conv, written as PNG."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(9, 5.5), dpi=110)
    for name in sorted(sensitivities):
        points = sorted(sensitivities[name].items())
        if points:
            ax.plot([r for r, _ in points], [v for _, v in points], marker="o", ms=3,
                    label=name)
    if threshold is not None:
        ax.axhline(threshold, color="k", ls="--", lw=1, label=f"loss {threshold:.3f}")
    ax.set_xlabel("ratio of filters pruned")
    ax.set_ylabel("relative mAP loss")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6, ncol=2 if len(sensitivities) > 12 else 1, loc="upper left")
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


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
    from ppdet.slim.prune_plan import count_params
    from ppdet.slim.pruner import model_flops
    model = build_model(cfg)
    load_weights(model, weights)
    loader = build_reader(cfg, "eval")
    result = evaluate(model, loader, build_metric_for(cfg, loader.dataset), progress=False)
    size = image_size_for(cfg, "test")
    out = export_model(model, cfg, workdir, class_names_for(cfg))
    mb = os.path.getsize(os.path.join(out, "model.pdiparams")) / 2 ** 20
    return {"mAP": result["mAP"] * 100, "params": count_params(model) / 1e6,
            "flops": model_flops(model, size) / 1e6, "size": mb,
            "latency": measure_latency(out, size, use_mkldnn=True, threads=latency_threads)}


def report_table(rows):
    """Markdown: one row per (label, model_row)."""
    base = rows[0][1]
    lines = ["| model | mAP (VOC, x100) | params (M) | FLOPs (M) | size (MB) | latency (ms) "
             "| speed-up |", "|---|---|---|---|---|---|---|"]
    for label, r in rows:
        lines.append(f"| {label} | {r['mAP']:.2f} | {r['params']:.3f} | {r['flops']:.1f} "
                     f"({r['flops'] / base['flops'] - 1:+.0%}) | {r['size']:.2f} | "
                     f"{r['latency']:.2f} | {base['latency'] / r['latency']:.2f}x |")
    return "\n".join(lines)


def stage_table(rows):
    """Markdown, one column per stage (the network-slimming write-up's layout): mAP, params,
    FLOPs and latency for Before / After prune channels / ... ."""
    base = rows[0][1]
    lines = ["| metric | " + " | ".join(label for label, _ in rows) + " |",
             "|---" * (len(rows) + 1) + "|"]
    cells = {
        "mAP (VOC, x100)": lambda r: f"{r['mAP']:.2f}",
        "parameters": lambda r: f"{int(round(r['params'] * 1e6)):,}",
        "FLOPs (M)": lambda r: f"{r['flops']:.1f} ({r['flops'] / base['flops'] - 1:+.0%})",
        "latency (ms)": lambda r: f"{r['latency']:.2f}",
        "speed-up": lambda r: f"{base['latency'] / r['latency']:.2f}x",
    }
    for metric, fmt in cells.items():
        lines.append(f"| {metric} | " + " | ".join(fmt(r) for _, r in rows) + " |")
    return "\n".join(lines)
