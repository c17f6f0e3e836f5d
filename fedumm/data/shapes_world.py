"""The shapes world: five shapes in seven colours on a 3×3 grid over four dark visual domains, and
how a scene of them is drawn. Shared by the VQA samples of ``fedumm.data.shapes``, the GenEval
scenes of ``fedumm.data.geneval``, its analytic detector and the grid image tokenizer."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "diamond", "cross")
PLURALS: dict[str, str] = {
    "circle": "circles",
    "square": "squares",
    "triangle": "triangles",
    "diamond": "diamonds",
    "cross": "crosses",
}
# Saturated or bright colours; every background below stays darker than ~105
# per channel, so each colour contrasts with every domain.
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 190, 60),
    "blue": (50, 100, 240),
    "yellow": (235, 220, 50),
    "purple": (160, 70, 210),
    "orange": (245, 140, 30),
    "white": (240, 240, 240),
}
ROWS: tuple[str, ...] = ("top", "middle", "bottom")
COLUMNS: tuple[str, ...] = ("left", "center", "right")
DOMAINS: tuple[str, ...] = ("plain", "noise", "stripes", "checker")
def position_name(row: int, column: int) -> str:
    """Words for a 3×3 grid cell, e.g. (0, 0) -> "top left", (1, 1) -> "center"."""
    if (row, column) == (1, 1):
        return "center"
    return f"{ROWS[row]} {COLUMNS[column]}"


def render_background(domain: str, image_size: int, rng: np.random.Generator) -> np.ndarray:
    """Dark background of a visual domain with a random tint, as uint8 (H, W, 3)."""
    tint = rng.integers(-12, 13, size=3)
    y, x = np.mgrid[0:image_size, 0:image_size]
    if domain == "plain":
        gray = np.full((image_size, image_size), float(rng.integers(30, 71)))
    elif domain == "noise":
        gray = rng.integers(35, 61) + rng.normal(0.0, 14.0, size=(image_size, image_size))
    elif domain in ("stripes", "checker"):
        dark = int(rng.integers(25, 50))
        light = dark + int(rng.integers(20, 41))
        if domain == "stripes":
            width = int(rng.integers(3, 7))
            coordinate = (y, x, x + y)[int(rng.integers(0, 3))]
            band = (coordinate // width) % 2
        else:
            cell = int(rng.integers(4, 9))
            band = (x // cell + y // cell) % 2
        gray = np.where(band == 1, light, dark).astype(float)
    else:
        raise ValueError(f"domain must be one of {DOMAINS}, got {domain!r}")
    return np.clip(gray[..., None] + tint, 0, 255).astype(np.uint8)


def draw_shape(draw: ImageDraw.ImageDraw, shape: str, box: list[int], color: tuple[int, int, int]) -> None:
    """Draw a filled shape that spans ``box`` (exclusive right/bottom edge)."""
    x0, y0, x1, y1 = box
    right, bottom = x1 - 1, y1 - 1  # PIL's drawing coordinates are inclusive
    cx, cy = (x0 + right) / 2, (y0 + bottom) / 2
    if shape == "circle":
        draw.ellipse([x0, y0, right, bottom], fill=color)
    elif shape == "square":
        draw.rectangle([x0, y0, right, bottom], fill=color)
    elif shape == "triangle":
        draw.polygon([(cx, y0), (right, bottom), (x0, bottom)], fill=color)
    elif shape == "diamond":
        draw.polygon([(cx, y0), (right, cy), (cx, bottom), (x0, cy)], fill=color)
    elif shape == "cross":
        size = x1 - x0
        arm = max(3, round(size / 3))
        a = x0 + (size - arm) // 2
        b = y0 + (size - arm) // 2
        draw.rectangle([a, y0, a + arm - 1, bottom], fill=color)
        draw.rectangle([x0, b, right, b + arm - 1], fill=color)
    else:
        raise ValueError(f"shape must be one of {SHAPES}, got {shape!r}")


def render_image(objects: list[dict], domain: str, image_size: int, rng: np.random.Generator) -> Image.Image:
    """RGB image of ``objects`` over a ``domain`` background."""
    image = Image.fromarray(render_background(domain, image_size, rng))
    draw = ImageDraw.Draw(image)
    for obj in objects:
        draw_shape(draw, obj["shape"], obj["box"], COLORS[obj["color"]])
    return image
