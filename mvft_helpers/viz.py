"""Plots the notebooks share: image grids for triplets and retrieval results."""
from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Sequence

import matplotlib.pyplot as plt
from PIL import Image


def _show(ax, image, title: str = "", outline: str | None = None, wrap: int = 22):
    img = Image.open(image) if isinstance(image, (str, Path)) else image
    ax.imshow(img)
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(outline is not None)
        if outline:
            spine.set_color(outline)
            spine.set_linewidth(4)
    if title:
        ax.set_title("\n".join(textwrap.wrap(title, wrap)), fontsize=8)


def triplet_grid(triplets: Sequence[tuple], title: str | None = None):
    """One row per (reference image, modification text, target image)."""
    n = len(triplets)
    fig, axes = plt.subplots(n, 3, figsize=(6.6, 2.2 * n), squeeze=False,
                             gridspec_kw={"width_ratios": [1, 1.3, 1]})
    for row, (ref, text, tgt) in zip(axes, triplets):
        _show(row[0], ref, "reference")
        row[1].axis("off")
        row[1].text(0.5, 0.5, "\n".join(textwrap.wrap(f"“{text}”", 26)), ha="center",
                    va="center", fontsize=10)
        row[1].annotate("", xy=(1.0, 0.15), xytext=(0.0, 0.15), xycoords="axes fraction",
                        arrowprops={"arrowstyle": "->", "color": "gray"})
        _show(row[2], tgt, "target")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def image_rows(rows: Sequence[Sequence[tuple]], row_labels: Sequence[str] | None = None,
               title: str | None = None, cell: float = 1.5):
    """A grid of images; each cell is (image, caption, outline colour or None)."""
    ncols = max(len(r) for r in rows)
    fig, axes = plt.subplots(len(rows), ncols, figsize=(cell * ncols, (cell + 0.5) * len(rows)),
                             squeeze=False)
    for i, row in enumerate(rows):
        for j in range(ncols):
            ax = axes[i][j]
            if j >= len(row):
                ax.axis("off")
                continue
            image, caption, outline = (tuple(row[j]) + (None, None))[:3]
            _show(ax, image, caption or "", outline, wrap=18)
        if row_labels:
            axes[i][0].set_ylabel("\n".join(textwrap.wrap(row_labels[i], 20)), fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig
