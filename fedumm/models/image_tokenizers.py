"""Image tokenizers of a unified model's generation path: ``encode(image) -> codes``, ``decode(codes) -> image``.

A unified model such as Janus-Pro generates an image as a sequence of discrete codes that an image
tokenizer decodes. ``native`` is the checkpoint's own VQ model (what a Janus-Pro-1B/7B user gets
by hub id). ``grid`` is a tokenizer for the shapes world that a tiny model learns in CPU-minutes,
where a VQ-VAE trained from scratch does not (16.8 dB PSNR after 50 steps at 5 s each): one code
per cell of the 3×3 grid, 0 for an empty cell and 1 + 7·shape + colour for a shape, drawn centred
in its cell. Its codes are exact for the scenes of ``fedumm.data.geneval``.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
from PIL import Image

from fedumm.data.geneval import _place
from fedumm.data.shapes_world import COLORS, SHAPES, render_image
from fedumm.evaluation.geneval import detect


class ImageTokenizer(Protocol):
    num_codes: int
    tokens_per_image: int

    def encode(self, image: Image.Image) -> list[int]: ...

    def decode(self, codes: list[int]) -> Image.Image: ...


class GridTokenizer:
    """The 3×3 grid of the shapes world: 9 codes per image, 36 code values."""

    tokens_per_image = 9
    num_codes = 1 + len(SHAPES) * len(COLORS)

    def __init__(self, image_size: int = 64) -> None:
        self.image_size = image_size

    @staticmethod
    def code(shape: str, color: str) -> int:
        return 1 + SHAPES.index(shape) * len(COLORS) + list(COLORS).index(color)

    def encode(self, image: Image.Image) -> list[int]:
        """Each detected shape's code at the cell of its centre (the most confident one per cell)."""
        codes = [0] * 9
        for detection in reversed(detect(image)):  # most confident last, so it wins its cell
            x0, y0, x1, y1 = detection.box
            column = min(2, int((x0 + x1) / 2 * 3 // self.image_size))
            row = min(2, int((y0 + y1) / 2 * 3 // self.image_size))
            codes[row * 3 + column] = self.code(detection.shape, detection.color)
        return codes

    def decode(self, codes: list[int]) -> Image.Image:
        """The shapes of ``codes`` centred in their cells over a plain dark background."""
        if len(codes) != self.tokens_per_image or not all(0 <= code < self.num_codes for code in codes):
            raise ValueError(f"grid codes must be {self.tokens_per_image} values in [0, {self.num_codes}), got {codes}")
        cells = [cell for cell, code in enumerate(codes) if code]
        shapes = [SHAPES[(codes[cell] - 1) // len(COLORS)] for cell in cells]
        colors = [list(COLORS)[(codes[cell] - 1) % len(COLORS)] for cell in cells]
        objects = _place(cells, shapes, colors, self.image_size)
        return render_image(objects, "plain", self.image_size, np.random.default_rng(0))


IMAGE_TOKENIZERS: tuple[str, ...] = ("grid", "native")


def build_image_tokenizer(name: str, model, image_processor) -> ImageTokenizer:
    """The tokenizer of a model entry's ``generation.image_tokenizer``: ``grid`` at the size of the
    model's images, or ``native``, the checkpoint's own VQ model."""
    if name == "grid":
        return GridTokenizer(image_size=model.config.vision_config.image_size)
    if name == "native":
        return NativeTokenizer(model, image_processor)
    raise ValueError(f"generation.image_tokenizer must be one of {IMAGE_TOKENIZERS}, got {name!r}")


class NativeTokenizer:
    """A checkpoint's own VQ model (Janus: ``model.model.vqmodel``), on the model's device."""

    def __init__(self, model, image_processor) -> None:
        self.model = model
        self.image_processor = image_processor
        self.num_codes = model.config.vq_config.num_embeddings
        self.tokens_per_image = model.config.vision_config.num_image_tokens

    def encode(self, image: Image.Image) -> list[int]:
        import torch

        pixels = self.image_processor(images=[image], return_tensors="pt")["pixel_values"]
        with torch.no_grad():
            codes = self.model.model.vqmodel.encode(pixels.to(self.model.device, self.model.dtype)).image_tokens
        return codes.reshape(1, -1)[0].tolist()

    def decode(self, codes: list[int]) -> Image.Image:
        import torch

        with torch.no_grad():
            pixels = self.model.decode_image_tokens(torch.tensor([codes], device=self.model.device))[0]
        # (H, W, 3) in the processor's [-1, 1] range (mean 0.5, std 0.5)
        array = ((pixels.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu().numpy()
        return Image.fromarray(array)
