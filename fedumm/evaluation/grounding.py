"""Grounding answers: boxes that the model writes as text, parsed and scored by IoU.

Answer format
-------------
The model is trained to answer a grounding question with the main object's box written as
``[x0, y0, x1, y1]``: integer pixel coordinates of the image, ``(x0, y0)`` the top-left corner and
``x1``/``y1`` exclusive, the same convention as the dataset's ``box`` field (PIL's crop
convention, see ``fedumm.data``). Example: ``"[12, 20, 30, 41]"`` is 18 px wide and 21 px high.
``format_box`` writes it; a grounding record's ``multiple_choice_answer`` is that text.

Parsing rules (``parse_box``), chosen so that near-misses of the format still count while text
that does not name four coordinates does not:

* The box is the first *run* of four numbers in the text: numbers separated only by whitespace,
  commas, semicolons, brackets or parentheses. Brackets are optional and words around the run
  are ignored, so ``"[12, 20, 30, 41]"``, ``"12 20 30 41"``, ``"(12,20),(30,41)"`` and
  ``"the circle is at [12, 20, 30, 41]."`` all read as the same box, while in
  ``"object 1 at [12, 20, 30, 41]"`` the ``1`` is not a coordinate (a word separates it from the
  run). A longer run contributes its first four numbers.
* A number is an optionally signed decimal (``12``, ``-3``, ``0.25``, ``.5``) that is not glued
  to a letter or digit (``w3`` or ``12px`` are not numbers); exponents are not read.
* Normalized coordinates (Shikra style, Chen et al. 2023: floats in [0, 1], e.g.
  ``"[0.188, 0.312, 0.469, 0.641]"``) are recognised when all four values lie in [0, 1] *and* at
  least one is written with a decimal point; they are scaled by the image width (x) and height
  (y). Requiring the decimal point keeps ``"[0, 0, 1, 1]"`` a 1-pixel box rather than the
  whole image. Qwen-VL's convention (integers normalized to [0, 1000)) is not recognised: such
  answers are read as pixel coordinates.
* Corners given in the other order (``x1 < x0`` or ``y1 < y0``) are swapped: two corners span
  the same rectangle whichever is written first.
* Coordinates are clipped to the image, ``[0, width] x [0, height]``: the ground-truth box lies
  inside the image, and the part of a prediction outside it holds no content, so it should not
  inflate the union. A box that clips to zero area is still a box (it scores IoU 0).
* Text without such a run (no numbers, fewer than four, numbers separated by words) is
  *malformed*: ``parse_box`` returns ``None`` and the answer scores IoU 0.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from statistics import fmean

Box = tuple[float, float, float, float]

# A number not glued to a word character or another number on either side; a trailing point
# ("41." ending a sentence) is punctuation, not a decimal point.
_NUMBER = r"(?<![\w.])[-+]?(?:\d+(?:\.\d+)?|\.\d+)(?!\w)"
_SEPARATOR = r"[\s,;()\[\]]+"
_RUN_OF_FOUR = re.compile(
    rf"({_NUMBER}){_SEPARATOR}({_NUMBER}){_SEPARATOR}({_NUMBER}){_SEPARATOR}({_NUMBER})"
)


def format_box(box: Sequence[int]) -> str:
    """The answer text of a grounding target: ``[x0, y0, x1, y1]`` with integer pixel coordinates.

    Example: ``format_box([12, 20, 30, 41]) == "[12, 20, 30, 41]"``; ``parse_box`` reads it back.
    """
    if len(box) != 4 or any(int(v) != v for v in box):
        raise ValueError(f"a box is four integer pixel coordinates [x0, y0, x1, y1], got {box!r}")
    return "[" + ", ".join(str(int(v)) for v in box) + "]"


def parse_box(text: str, width: int, height: int) -> Box | None:
    """The box ``(x0, y0, x1, y1)`` in pixels written in ``text``, or ``None`` if malformed.

    ``width`` and ``height`` are the image's size in pixels; they scale normalized coordinates
    and bound the clipping. The rules (first run of four numbers, normalized floats, corner
    swap, clipping) are in the module docstring.
    """
    match = _RUN_OF_FOUR.search(text)
    if match is None:
        return None
    written = match.groups()
    x0, y0, x1, y1 = (float(value) for value in written)
    if all(0.0 <= v <= 1.0 for v in (x0, y0, x1, y1)) and any("." in value for value in written):
        x0, x1 = x0 * width, x1 * width
        y0, y1 = y0 * height, y1 * height
    x0, x1 = sorted((_clip(x0, width), _clip(x1, width)))
    y0, y1 = sorted((_clip(y0, height), _clip(y1, height)))
    return (x0, y0, x1, y1)


def _clip(value: float, size: int) -> float:
    """``value`` limited to ``[0, size]``."""
    return min(max(value, 0.0), float(size))


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two ``[x0, y0, x1, y1]`` boxes with exclusive ``x1``/``y1``.

    The area of a box is ``(x1 - x0) * (y1 - y0)``. Two boxes whose union has zero area (both
    degenerate) have IoU 0. Raises ValueError for a box with ``x1 < x0`` or ``y1 < y0``.
    """
    for box in (a, b):
        if len(box) != 4 or box[2] < box[0] or box[3] < box[1]:
            raise ValueError(f"not an [x0, y0, x1, y1] box with x0 <= x1 and y0 <= y1: {box!r}")
    inter_w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    inter_h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    intersection = inter_w * inter_h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - intersection
    return intersection / union if union > 0 else 0.0


def grounding_scores(
    predictions: Mapping[str, str],
    boxes: Mapping[str, Sequence[float]],
    sizes: Mapping[str, tuple[int, int]],
    threshold: float = 0.5,
) -> dict[str, float | int]:
    """Mean IoU and accuracy at ``threshold`` of the predicted boxes against ``boxes``.

    ``predictions`` maps a sample id to the model's answer text, ``boxes`` the same ids to the
    ground-truth ``[x0, y0, x1, y1]`` pixel box, and ``sizes`` each id to the image's
    ``(width, height)`` (PIL's ``Image.size`` order; extra ids in ``sizes`` are ignored).
    Returns ``{"mean_iou", f"accuracy@{threshold:g}", "malformed", "n"}``: the mean IoU over
    the ``n`` samples, the share of samples with IoU >= ``threshold`` (the usual REC accuracy
    at 0.5), and the number of answers ``parse_box`` could not read, each of which scores IoU 0.

    Raises ValueError when there is nothing to score, when the ids of ``predictions`` and
    ``boxes`` differ (every ground-truth box needs exactly one answer), or when a size is
    missing.
    """
    if not boxes:
        raise ValueError("no ground-truth boxes to score")
    missing = sorted(set(boxes) - set(predictions))
    extra = sorted(set(predictions) - set(boxes))
    if missing or extra:
        raise ValueError(
            f"predictions and boxes differ: no prediction for {missing}, no box for {extra}"
        )
    unsized = sorted(set(boxes) - set(sizes))
    if unsized:
        raise ValueError(f"no image size for {unsized}")
    ious = []
    malformed = 0
    for sample_id, truth in boxes.items():
        width, height = sizes[sample_id]
        predicted = parse_box(predictions[sample_id], width, height)
        if predicted is None:
            malformed += 1
            ious.append(0.0)
        else:
            ious.append(box_iou(predicted, truth))
    return {
        "mean_iou": fmean(ious),
        f"accuracy@{threshold:g}": fmean(iou >= threshold for iou in ious),
        "malformed": malformed,
        "n": len(ious),
    }
