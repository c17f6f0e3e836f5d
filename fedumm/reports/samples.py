"""The sample grid of a text-to-image evaluation: generated images with their prompt under each."""

from __future__ import annotations

import io
import textwrap

from PIL import Image

GRID_COLUMNS = 4
GRID_PROMPTS = 16
"""Prompts shown per grid: the first of the split, so every round shows the same ones."""


def samples_grid_png(prompts: list[str], images: list[Image.Image], title: str, verdicts: list[bool]) -> bytes:
    """PNG bytes of the first ``GRID_PROMPTS`` images, four per row, each titled by its prompt and
    GenEval's verdict (✓ correct, ✗ not), pixels drawn unsmoothed."""
    from matplotlib.figure import Figure

    count = min(GRID_PROMPTS, len(images))
    rows = max(1, -(-count // GRID_COLUMNS))
    fig = Figure(figsize=(2.4 * GRID_COLUMNS, 2.7 * rows + 0.6))
    for index in range(count):
        ax = fig.add_subplot(rows, GRID_COLUMNS, index + 1)
        ax.imshow(images[index], interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        mark = "✓" if verdicts[index] else "✗"
        ax.set_xlabel(f"{mark} " + "\n".join(textwrap.wrap(prompts[index].removeprefix("a photo of "), 26)),
                      fontsize=8, color="darkgreen" if verdicts[index] else "darkred")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()
