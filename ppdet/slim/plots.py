"""Every plot of the toolkit (PNG, headless matplotlib): sensitivity heatmaps and curves,
BN-scale sparsity over training. A leaf module: numpy and matplotlib only, so any room may
draw with it."""
import os
import re

import numpy as np

__all__ = ["plot_sparsity", "network_order", "plot_sensitivities"]


def _stage_of(name):
    """(sort key, stage label) of a conv, from the static-era parameter names: backbone
    stages conv1..conv6 (MobileNetV1/V2), YOLOv3 head levels (block i + transition i), SSD
    extra layers; other names group by their prefix."""
    m = re.match(r"yolo_(block|transition)\.(\d+)\.", name)
    if m:
        return (1, int(m.group(2)), ""), f"yolo head {m.group(2)}"
    m = re.match(r"conv(\d+)_\d+_extra", name)
    if m:
        return (2, int(m.group(1)), ""), "SSD extra layers"
    m = re.match(r"conv(\d+)(_|$)", name)
    if m:
        return (0, int(m.group(1)), ""), f"backbone conv{m.group(1)}"
    m = re.match(r"(depthwise_)?conv2d_(\d+)\.w_", name)   # fluid-era automatic names
    if m:
        return (0, int(m.group(2)) // 8, ""), f"conv2d_{int(m.group(2)) // 8 * 8}.." \
            f"{int(m.group(2)) // 8 * 8 + 7}"
    return (3, 0, name.split(".")[0].split("_")[0]), name.split(".")[0].split("_")[0]


def _natural(name):
    """Sort key that puts conv2 before conv10 and block parts in definition order."""
    parts = re.split(r"(\d+)", name)
    return [(0, int(p), "") if p.isdigit() else (1, 0, p) for p in parts]


def network_order(names, order=None):
    """``names`` grouped by stage, in network order: ``order`` (a list of every conv in
    definition order, e.g. from ``conv_table``) when given, else from the names.
    Returns ``[(stage label, [names])]``."""
    position = {n: i for i, n in enumerate(order or [])}
    def key(n):
        stage_key, _ = _stage_of(n)
        yolo_transition = n.startswith("yolo_transition")    # after its block's convs
        return (position.get(n, len(position)), stage_key, yolo_transition, _natural(n))
    groups = []
    for n in sorted(names, key=key):
        label = _stage_of(n)[1]
        if groups and groups[-1][0] == label:
            groups[-1][1].append(n)
        else:
            groups.append((label, [n]))
    return groups


def _save(fig, path, **kw):
    """The figure as PNG at ``path``, atomically (a reader never sees half a picture), and
    closed."""
    import io

    import matplotlib.pyplot as plt

    from ppdet.utils.atomic import atomic_write_bytes
    buf = io.BytesIO()
    fig.savefig(buf, format="png", **kw)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


def _ratio_x(ratio, cols):
    """Position of a (possibly interpolated) ratio on the heatmap's column axis."""
    import numpy as np
    return float(np.interp(ratio, cols, np.arange(len(cols))))


def plot_sensitivities(sensitivities, path, title="sensitivity", threshold=None,
                       ratios=None, order=None):
    """A conv x ratio heatmap of the loss (network order, grouped by stage) beside one
    loss-vs-ratio panel per stage, written as PNG. With a loss ``threshold`` the ratio
    chosen for each conv (``ratios``: PaddleSlim's rule for that threshold,
    :func:`ppdet.slim.prune.search.ratios_by_loss`) is marked in both."""
    import matplotlib
    matplotlib.use("Agg")
    sens = {k: v for k, v in sensitivities.items() if v}
    if not sens:
        return None
    ratios = ratios or {}
    groups = network_order(list(sens), order)
    names = [n for _, group in groups for n in group]
    cols, grid = _loss_grid(sens, names)
    fig, outer, pcols, prows = _sensitivity_layout(len(names), len(groups))
    ax = fig.add_subplot(outer[0])
    _heatmap(fig, ax, grid, names, cols, colour_bar_pad=0.12 if ratios else 0.02)
    _stage_bands(fig, ax, groups)
    _chosen_ratio_marks(ax, names, cols, ratios)
    head = f"{title}: loss per conv and ratio"
    if threshold is not None:
        head += f"\n(black tick: ratio chosen for loss <= {threshold:.3f})"
    ax.set_title(head, fontsize=10)
    inner = outer[1].subgridspec(prows, pcols, hspace=0.55, wspace=0.3)
    for k, (label, group) in enumerate(groups):
        pax = fig.add_subplot(inner[k // pcols, k % pcols])
        _stage_curves(pax, label, group, sens, ratios, threshold)
        if k % pcols == 0:
            pax.set_ylabel("loss", fontsize=8)
        if k // pcols == prows - 1 or k + pcols >= len(groups):
            pax.set_xlabel("share of filters pruned", fontsize=8)
        pax.legend(fontsize=5.5, loc="best", framealpha=0.6, ncol=1 + len(group) // 6)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    _save(fig, path)
    return path


def _loss_grid(sens, names):
    """The sorted ratio columns, and the conv x ratio loss array (NaN where unmeasured)."""
    cols = sorted({float(r) for v in sens.values() for r in v})
    grid = np.full((len(names), len(cols)), np.nan)
    for i, n in enumerate(names):
        for r, loss in sens[n].items():
            grid[i, cols.index(float(r))] = loss
    return cols, grid


def _sensitivity_layout(n_names, n_panels):
    """The figure, sized to the convs and stages, and its outer grid: the heatmap on the
    left, the stage panels (``prows`` x ``pcols``) on the right."""
    import matplotlib.pyplot as plt
    pcols = 2 if n_panels > 3 else 1
    prows = -(-n_panels // pcols)
    height = max(4.5, 0.24 * n_names + 2.0, 2.6 * prows)
    fig = plt.figure(figsize=(7.5 + 4.2 * pcols, height), dpi=100)
    outer = fig.add_gridspec(1, 2, width_ratios=[7.5, 4.2 * pcols], wspace=0.35,
                             left=0.23 * 7.5 / (7.5 + 4.2 * pcols), right=0.98,
                             top=1 - 0.9 / height, bottom=0.7 / height)
    return fig, outer, pcols, prows


def _heatmap(fig, ax, grid, names, cols, colour_bar_pad):
    """The loss heatmap with its colour bar (gains pale green, losses red), the values
    written in the cells when they fit, and the axes labelled."""
    from matplotlib.colors import TwoSlopeNorm
    finite = grid[np.isfinite(grid)]
    hi = max(float(finite.max()), 1e-3)
    lo = min(float(finite.min()), -hi / 4)          # small gains stay pale
    image = ax.imshow(np.ma.masked_invalid(grid), aspect="auto", cmap="RdYlGn_r",
                      norm=TwoSlopeNorm(vcenter=0.0, vmin=lo, vmax=hi),
                      interpolation="nearest")
    bar = fig.colorbar(image, ax=ax, fraction=0.05, pad=colour_bar_pad)
    bar.set_label("relative mAP loss (below 0: pruning helped)")
    if len(names) * len(cols) <= 600:
        for i in range(len(names)):
            for j in range(len(cols)):
                if np.isfinite(grid[i, j]):
                    ax.text(j, i - 0.12, f"{grid[i, j]:.2f}", ha="center", va="center",
                            fontsize=6, color="black")
    ax.set_xticks(range(len(cols)), [f"{c:g}" for c in cols])
    ax.set_yticks(range(len(names)), names, fontsize=7)
    ax.set_xlabel("share of filters pruned")


def _stage_bands(fig, ax, groups):
    """Stage separators across the heatmap, and each stage's label in the left margin."""
    import matplotlib.pyplot as plt
    from matplotlib.transforms import blended_transform_factory
    side = blended_transform_factory(fig.transFigure, ax.transData)
    start = 0
    for label, group in groups:
        if start:
            ax.axhline(start - 0.5, color="black", lw=1.2)
        end = start + len(group) - 1
        fig.add_artist(plt.Line2D([0.012, 0.012], [start - 0.4, end + 0.4], color="grey",
                                  lw=1.5, transform=side))
        short = label.replace("backbone ", "").replace("yolo ", "")
        ax.text(0.006, (start + end) / 2, short, transform=side, rotation=90, ha="center",
                va="center", fontsize=7, color="dimgrey")
        start += len(group)


def _chosen_ratio_marks(ax, names, cols, ratios):
    """The chosen ratio of each conv: a black bar in its row, and the value on the right."""
    for i, n in enumerate(names):
        if n in ratios:
            x = _ratio_x(ratios[n], cols)
            ax.plot([x, x], [i + 0.1, i + 0.48], color="black", lw=2.5, solid_capstyle="butt")
    if ratios:
        right = ax.twinx()
        right.set_ylim(ax.get_ylim())
        right.set_yticks(range(len(names)),
                         [f"{ratios[n]:.2f}" if n in ratios else "-" for n in names],
                         fontsize=7)
        right.set_ylabel("chosen ratio", fontsize=8)


def _stage_curves(pax, label, group, sens, ratios, threshold):
    """One stage's panel: loss against ratio per conv, its chosen ratio a diamond."""
    import matplotlib.pyplot as plt
    colours = plt.get_cmap("tab10").colors
    for c, n in enumerate(group):
        pts = sorted((float(r), v) for r, v in sens[n].items())
        colour = colours[c % 10]
        style = "-" if c < 10 else "--"
        pax.plot([r for r, _ in pts], [v for _, v in pts], style, marker="o", ms=2.5,
                 lw=1.2, color=colour, label=_short(n))
        if n in ratios:
            pax.plot(ratios[n], np.interp(ratios[n], *zip(*pts)), marker="D", ms=5,
                     mfc="white", mec=colour, mew=1.5)
    if threshold is not None:
        pax.axhline(threshold, color="black", ls=":", lw=1)
    pax.axhline(0, color="grey", lw=0.6)
    pax.set_title(label, fontsize=9)
    pax.set_xlim(0, 1)
    pax.tick_params(labelsize=7)
    pax.grid(alpha=0.3)


def _short(name):
    """Legend label: the name without its ``weights`` suffix."""
    return re.sub(r"(\.conv\.weights|_weights|\.w_0)$", "", name)


def plot_sparsity(log, path, small=1e-2):
    """Three panels: the |gamma| histogram of every epoch as a heatmap (rows = epochs,
    colour = channels per bin, with a colour bar), the histograms of a few epochs as
    curves, and the share of scales below 1e-2 per epoch."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    epochs = log["epochs"]
    if not epochs:
        return None
    shift = 0 if log.get("epoch_base") == 1 else 1        # old logs counted from 0
    numbers = np.array([e["epoch"] + shift for e in epochs])
    counts = np.array([e["hist"] for e in epochs], dtype=float)
    edges = np.array(log["edges"])
    fig, (ax0, ax1, ax2) = plt.subplots(1, 3, figsize=(15, 4.4),
                                        gridspec_kw={"width_ratios": [1.25, 1, 0.8]})
    _histogram_heatmap(fig, ax0, numbers, counts, edges, small)
    _some_histograms(ax1, numbers, counts, edges, small)
    _sparsity_curve(ax2, log, numbers)
    if len(numbers) <= 12:           # few epochs: exactly one tick each, never fractions
        ax0.set_yticks(numbers)
        ax2.set_xticks(numbers)
    fig.tight_layout()
    _save(fig, path, dpi=90)
    return path


def _histogram_heatmap(fig, ax, numbers, counts, edges, small):
    """Panel 1: every epoch's |gamma| histogram as a row, log colour scale."""
    from matplotlib.colors import LogNorm
    from matplotlib.ticker import MaxNLocator
    rows = np.append(numbers - 0.5, numbers[-1] + 0.5)
    mesh = ax.pcolormesh(edges, rows, np.where(counts > 0, counts, np.nan), cmap="viridis",
                         norm=LogNorm(vmin=1, vmax=max(counts.max(), 2)), shading="flat")
    fig.colorbar(mesh, ax=ax, pad=0.02).set_label("channels in the bin (log scale)")
    ax.axvline(small, color="white", ls="--", lw=1)
    ax.set_xlim(0, edges[-1])
    ax.set_ylim(rows[0], rows[-1])
    ticks = MaxNLocator(integer=True, nbins=12, min_n_ticks=1)
    ax.yaxis.set_major_locator(ticks)
    ax.set_xlabel("|BN scale| (|gamma|)")
    ax.set_ylabel("epoch")
    ax.set_title("|gamma| histogram of every epoch (empty bins white)")


def _some_histograms(ax, numbers, counts, edges, small):
    """Panel 2: the histograms of up to five epochs, evenly spread, as step curves."""
    import matplotlib.pyplot as plt
    picks = sorted(set(np.linspace(0, len(numbers) - 1, min(len(numbers), 5)).round()
                       .astype(int)))
    centres = (edges[:-1] + edges[1:]) / 2
    colours = plt.get_cmap("plasma")(np.linspace(0, 0.85, len(picks)))
    for colour, i in zip(colours, picks):
        ax.step(centres, counts[i], where="mid", color=colour, lw=1.4,
                label=f"epoch {numbers[i]}")
    ax.axvline(small, color="grey", ls="--", lw=1, label="1e-2")
    ax.set_xlim(0, edges[-1])
    ax.set_ylim(bottom=0)
    ax.set_xlabel("|BN scale| (|gamma|)")
    ax.set_ylabel("channels")
    ax.set_title("histograms of some epochs")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)


def _sparsity_curve(ax, log, numbers):
    """Panel 3: the share of scales below 1e-2 per epoch, titled with the penalty."""
    from matplotlib.ticker import MaxNLocator
    share = [100 * e["share_below_1e-2"] for e in log["epochs"]]
    ax.plot(numbers, share, marker="o")
    ax.set_xlabel("epoch")
    ax.set_ylabel("% of scales below 1e-2")
    ax.set_ylim(0, max(5.0, max(share) * 1.15))
    ax.set_xlim(numbers[0] - 0.5, numbers[-1] + 0.5)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, nbins=12, min_n_ticks=1))
    decay = {"none": "constant", "linear": "linear decay to 0",
             "cosine": "cosine decay to 0"}.get(log.get("s_decay"), log.get("s_decay"))
    ax.set_title(f"sparsity (s = {log['s']:g}, {decay})")
    ax.grid(alpha=0.3)
