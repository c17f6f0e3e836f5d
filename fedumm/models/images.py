"""Image preprocessing of a vision encoder: resize and normalise as its preprocessor config says.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from transformers import (
    AutoConfig,
)
from transformers.utils import cached_file

# OpenAI CLIP normalisation, used when no preprocessor_config.json is available.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


# ----------------------------------------------------------------------------- image preprocessing


@dataclass(frozen=True)
class ImageTransform:
    """CLIP-style preprocessing in PIL/numpy/torch (no torchvision), picklable for data loaders.

    Resize (bicubic) either the shortest edge to `shortest_edge` or exactly to `resize` (h, w), then
    centre-crop to `crop` (h, w) if given, scale to [0, 1] and normalise with `mean` / `std`.
    """

    shortest_edge: int | None
    resize: tuple[int, int] | None
    crop: tuple[int, int] | None
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def __call__(self, image: Image.Image) -> torch.Tensor:
        image = image.convert("RGB")
        if self.shortest_edge is not None:
            width, height = image.size
            scale = self.shortest_edge / min(width, height)
            # Same rounding as transformers' get_resize_output_image_size (int() of the long edge).
            size = (self.shortest_edge, int(height * scale)) if width <= height else (int(width * scale), self.shortest_edge)
            image = image.resize(size, Image.Resampling.BICUBIC)
        else:
            image = image.resize((self.resize[1], self.resize[0]), Image.Resampling.BICUBIC)
        if self.crop is not None:
            width, height = image.size
            top, left = (height - self.crop[0]) // 2, (width - self.crop[1]) // 2
            image = image.crop((left, top, left + self.crop[1], top + self.crop[0]))
        pixels = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1)
        mean = torch.tensor(self.mean).view(3, 1, 1)
        std = torch.tensor(self.std).view(3, 1, 1)
        return (pixels - mean) / std


def _hw(value: int | dict) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else (value["height"], value["width"])


def _vision_image_size(config) -> int:
    return (config.vision_config if hasattr(config, "vision_config") else config).image_size


def transform_from_preprocessor(pre: dict, image_size: int) -> ImageTransform:
    """An `ImageTransform` from a `preprocessor_config.json` mapping (CLIP or SigLIP image processors).

    `size` is read as CLIPImageProcessor does: an int or {"shortest_edge": n} resizes the shortest
    edge, {"height", "width"} resizes exactly (SigLIP). Shortest-edge resizing is followed by a
    centre crop to `crop_size` unless `do_center_crop` is false.
    """
    size = pre.get("size", image_size)
    shortest = size if isinstance(size, int) else size.get("shortest_edge")
    do_crop = pre.get("do_center_crop", shortest is not None)
    return ImageTransform(
        shortest_edge=shortest,
        resize=None if shortest is not None else _hw(size),
        crop=_hw(pre.get("crop_size", image_size)) if do_crop else None,
        mean=tuple(pre.get("image_mean", CLIP_MEAN)),
        std=tuple(pre.get("image_std", CLIP_STD)),
    )


def image_transform(spec_or_dir: dict | str | os.PathLike) -> ImageTransform:
    """Preprocessing for a model spec (or a vision checkpoint id/directory).

    A checkpoint's `preprocessor_config.json` is honoured (`transform_from_preprocessor`); inline
    configs and checkpoints without that file resize the shortest edge to the vision config's
    `image_size`, centre-crop a square, and normalise with CLIP's mean/std.
    """
    source = spec_or_dir["vision"] if isinstance(spec_or_dir, dict) else {"id": str(spec_or_dir)}
    if "config" in source:
        return transform_from_preprocessor({}, AutoConfig.for_model(**source["config"]).image_size)
    image_size = _vision_image_size(AutoConfig.from_pretrained(source["id"]))
    path = cached_file(source["id"], "preprocessor_config.json", _raise_exceptions_for_missing_entries=False)
    pre = json.loads(Path(path).read_text()) if path is not None else {}
    return transform_from_preprocessor(pre, image_size)
