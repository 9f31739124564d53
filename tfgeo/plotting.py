"""PNG plots of results (matplotlib, headless)."""
from __future__ import annotations

import os


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
    tmp = f"{path}.tmp.png"
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, path)
    return path
