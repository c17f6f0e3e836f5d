"""Partition figures: the client x label heatmap, the heterogeneity matrix and the embedding projection.
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def _figure(figsize: tuple[float, float]) -> Figure:
    """A bare Figure, which renders with the Agg canvas without touching pyplot's global backend.

    matplotlib is imported here, not with the module: only the partition rule draws.
    """
    from matplotlib.figure import Figure

    return Figure(figsize=figsize)


def _png(fig: Figure) -> bytes:
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()


def heterogeneity_png(matrix: np.ndarray, title: str) -> bytes:
    """PNG bytes of a client × client divergence matrix on a fixed [0, 1] colour scale."""
    k = len(matrix)
    fig = _figure((max(5.0, 0.35 * k + 2.5), max(3.5, 0.35 * k + 2.0)))
    ax = fig.add_subplot()
    image = ax.imshow(np.ma.masked_invalid(matrix), vmin=0.0, vmax=1.0, cmap="magma", interpolation="nearest")
    ticks = [str(c) for c in range(k)]
    ax.set_xticks(range(k), labels=ticks, fontsize=8)
    ax.set_yticks(range(k), labels=ticks, fontsize=8)
    ax.set_xlabel("client")
    ax.set_ylabel("client")
    ax.set_title(title, fontsize=10)
    fig.colorbar(image, ax=ax, label="JS divergence (bits)")
    return _png(fig)


def projection_png(points: np.ndarray, client_of: np.ndarray, title: str) -> bytes:
    """PNG bytes of a 2-D scatter of samples coloured by client; ``client_of`` −1 (pruned) is grey.

    Fed-CMP Fig. 3 shows its clusters with t-SNE; a linear projection (PCA) is used here, which
    needs no extra dependency and is deterministic.
    """
    points, client_of = np.asarray(points), np.asarray(client_of)
    fig = _figure((5.5, 4.5))
    ax = fig.add_subplot()
    unassigned = client_of < 0
    if unassigned.any():
        ax.scatter(*points[unassigned].T, s=4, c="lightgrey", marker="x", label=f"pruned ({int(unassigned.sum())})")
    clients = sorted(set(client_of[~unassigned].tolist()))
    colours = _colours(len(clients))
    for colour, k in zip(colours, clients):
        ax.scatter(*points[client_of == k].T, s=6, color=colour, label=f"client {k}")
    if len(clients) <= 20:
        ax.legend(fontsize=7, markerscale=2, loc="best")
    ax.set_xlabel("PC 1")
    ax.set_ylabel("PC 2")
    ax.set_title(title)
    return _png(fig)


def _colours(n: int) -> list:
    """``n`` distinct colours: tab10 up to 10, tab20 up to 20, then evenly spaced on turbo."""
    from matplotlib import colormaps

    if n <= 10:
        return [colormaps["tab10"](i) for i in range(n)]
    if n <= 20:
        return [colormaps["tab20"](i) for i in range(n)]
    return [colormaps["turbo"](x) for x in np.linspace(0, 1, n)]


# A heatmap shows at most this many labels (the most frequent; the rest summed in one "other" column)
# and names clients only up to MAX_CLIENT_TICKS: VQA v2 has thousands of answers.
MAX_HEATMAP_LABELS = 40
MAX_CLIENT_TICKS = 60


def top_labels(values: list[str], counts: np.ndarray, keep: int = MAX_HEATMAP_LABELS) -> tuple[list[str], np.ndarray]:
    """The ``keep`` most frequent labels (ties by name) in their original order, and one last
    column "other (n labels)" summing the rest when there are more than ``keep``."""
    if len(values) <= keep:
        return values, counts
    order = sorted(range(len(values)), key=lambda j: (-int(counts[:, j].sum()), values[j]))
    kept, rest = sorted(order[: keep - 1]), order[keep - 1 :]
    other = counts[:, rest].sum(axis=1, keepdims=True)
    return [values[j] for j in kept] + [f"other ({len(rest)} labels)"], np.hstack([counts[:, kept], other])


def heatmap_png(values: list[str], counts: np.ndarray, title: str, xlabel: str = "label") -> bytes:
    """PNG bytes of a client × label count heatmap with axis labels and a colour bar; readable at any
    number of labels (`top_labels`) and clients (no client names past MAX_CLIENT_TICKS, bounded height)."""
    summed = len(values) > MAX_HEATMAP_LABELS
    values, counts = top_labels(values, counts)
    n_clients, n_values = counts.shape
    fig = _figure((max(4.0, 0.45 * n_values + 2.5), min(14.0, max(3.0, 0.35 * n_clients + 2.0))))
    ax = fig.add_subplot()
    # The "other" column sums thousands of labels: the colour scale is that of the labels shown.
    vmax = max(int(counts[:, :-1].max()), 1) if summed else None
    image = ax.imshow(counts, aspect="auto", cmap="viridis", interpolation="nearest", vmax=vmax)
    ax.set_xticks(range(n_values), labels=values, rotation=90, fontsize=8)
    if n_clients <= MAX_CLIENT_TICKS:
        ax.set_yticks(range(n_clients), labels=[str(k) for k in range(n_clients)], fontsize=8)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("client")
    ax.set_title(title)
    # Numbers only while the cells are big enough to read them.
    if n_values <= 30 and n_clients <= 30:
        threshold = counts.max() / 2 if counts.size else 0
        for client in range(n_clients):
            for j in range(n_values):
                colour = "black" if counts[client, j] > threshold else "white"
                ax.text(j, client, str(counts[client, j]), ha="center", va="center", fontsize=6, color=colour)
    fig.colorbar(image, ax=ax, label="samples" + (" (other: beyond the scale)" if summed else ""),
                 extend="max" if summed else "neither")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()
