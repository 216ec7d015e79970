"""Pictures and tables of sensitivity results."""
import os

__all__ = ["plot_sensitivities", "sensitivity_table"]


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
