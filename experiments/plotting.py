"""PNG plots of results (matplotlib, headless)."""
from __future__ import annotations

import math

from . import results


def _save(fig, path):
    """Saves the figure atomically and closes it."""
    import matplotlib.pyplot as plt

    try:
        return results.atomic_write(path, fig.savefig, ".png")
    finally:
        plt.close(fig)


def line_plot(path, series: dict, xlabel: str, ylabel: str, title: str = "",
              invert_x: bool = False) -> str:
    """Writes a PNG with one line per entry of `series` {label: (xs, ys)}; returns path.

    Written to a temporary file and renamed, so a crash leaves no partial PNG.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    for label, (xs, ys) in series.items():
        ax.plot(xs, ys, marker="o", markersize=3, label=label)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    if invert_x:
        ax.invert_xaxis()
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return _save(fig, path)


def matrix_plot(path, matrices: dict, xlabel: str, ylabel: str, title: str = "",
                vmin: float = 0.0, vmax: float = 1.0) -> str:
    """Writes a PNG of heatmaps side by side, one per entry of `matrices`
    {label: 2-d array}, each cell annotated with its value; returns path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    n = len(matrices)
    # A near-square grid: a row of eight maps is too wide to read at 100 %.
    cols = int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3.4 * cols + 0.8, 3.4 * rows + 0.4), dpi=120,
                             squeeze=False)
    for ax in axes.flat[n:]:
        ax.axis("off")
    image = None
    for ax, (label, m) in zip(axes.flat, matrices.items()):
        m = np.asarray(m, dtype=float)
        image = ax.imshow(m, vmin=vmin, vmax=vmax, cmap="viridis")
        for (i, j), v in np.ndenumerate(m):
            ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=7,
                    color="white" if v < (vmin + vmax) / 2 else "black")
        ax.set_title(label)
        ax.set_xlabel(xlabel)
        ax.set_xticks(range(m.shape[1]))
        ax.set_yticks(range(m.shape[0]))
    for row in axes:
        row[0].set_ylabel(ylabel)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.colorbar(image, ax=axes.ravel().tolist(), shrink=0.8)
    return _save(fig, path)


def _plain_log_ticks(ax, xs) -> None:
    """Labels a log x axis with plain numbers (1,000, 2,000, 5,000) and no
    minor labels: matplotlib's default labels every minor tick when the data
    span less than a decade, and 3x10^3 and 4x10^3 overlap."""
    from matplotlib import ticker

    xs = [x for x in xs if x > 0]
    decades = math.log10(max(xs) / min(xs)) if xs else 0.0
    subs = (tuple(range(1, 10)) if decades < 0.5 else (1.0, 2.0, 3.0, 5.0) if decades < 1.0
            else (1.0, 2.0, 5.0) if decades < 2.5 else (1.0,))
    ax.xaxis.set_major_locator(ticker.LogLocator(base=10.0, subs=subs))
    ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:,.0f}" if v >= 1 else f"{v:g}"))
    ax.xaxis.set_minor_formatter(ticker.NullFormatter())


def panel_plot(path, panels: list, xlabel: str, title: str = "", xlog: bool = False,
               ylow: float | None = None) -> str:
    """Writes a PNG with one panel per (ylabel, {label: (xs, ys)}) in `panels`,
    side by side with a shared x label (log scale with `xlog`; y axis from
    `ylow` if given, points below it clipped out of view); returns path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(5.0 * len(panels), 4.0), dpi=120,
                             squeeze=False)
    for ax, (ylabel, series) in zip(axes[0], panels):
        for label, (xs, ys) in series.items():
            ax.plot(xs, ys, marker="o", markersize=2 if not xlog else 4, label=label)
        if xlog:
            ax.set_xscale("log")
            _plain_log_ticks(ax, [x for xs, _ in series.values() for x in xs])
        if ylow is not None:
            ax.set_ylim(bottom=ylow)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, path)
