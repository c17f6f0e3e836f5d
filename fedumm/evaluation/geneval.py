"""GenEval's rules (Ghosh et al., 2023; djghosh13/geneval ``evaluation/evaluate_images.py``) over an
analytic detector for the shapes world.

GenEval detects objects with Mask2Former (confidence above 0.3, above 0.9 for counting), classifies
each object's colour with CLIP on its masked crop, and judges relative position by the offset of box
centres shrunk by 0.1·(w_a + w_b) per axis, a relation holding when the normalised component exceeds
0.5. An image is correct when every ``include`` entry finds its count of objects (with its colour and
position where given) and no ``exclude`` entry finds its count; a task's score is the share of
correct images and the overall score the mean of the six task scores.

Shapes are drawn in exact palette colours on dark backgrounds, so the detector here is analytic:
pixels near a palette colour, 4-connected components per colour, and the shape whose template
(drawn in the component's box) overlaps the component best; its IoU with the template is the
detection's confidence and plays the role of Mask2Former's score. The colour of an object is its
palette colour.
"""

from __future__ import annotations

from dataclasses import dataclass
from statistics import fmean

import numpy as np
from PIL import Image, ImageDraw

from fedumm.data.geneval import SKILLS
from fedumm.data.shapes_world import COLORS, SHAPES, draw_shape

DETECTION_THRESHOLD = 0.3
COUNTING_THRESHOLD = 0.9
POSITION_THRESHOLD = 0.1
COLOR_DISTANCE = 60.0
"""A pixel belongs to a palette colour within this Euclidean RGB distance (backgrounds stay below
~115 per channel, far from every palette colour)."""
MIN_AREA = 12
"""Components of fewer pixels are noise, not objects."""


@dataclass(frozen=True)
class Detection:
    shape: str
    color: str
    box: tuple[int, int, int, int]
    """[x0, y0, x1, y1), exclusive right and bottom edges."""
    score: float


def _components(mask: np.ndarray) -> list[np.ndarray]:
    """4-connected components of a boolean mask, each as an array of (row, column) pixels."""
    seen = np.zeros_like(mask, dtype=bool)
    components = []
    for start in zip(*np.nonzero(mask)):
        if seen[start]:
            continue
        seen[start] = True
        stack, pixels = [start], []
        while stack:
            r, c = stack.pop()
            pixels.append((r, c))
            for nr, nc in ((r - 1, c), (r + 1, c), (r, c - 1), (r, c + 1)):
                if 0 <= nr < mask.shape[0] and 0 <= nc < mask.shape[1] and mask[nr, nc] and not seen[nr, nc]:
                    seen[nr, nc] = True
                    stack.append((nr, nc))
        components.append(np.array(pixels))
    return components


def _template(shape: str, box: tuple[int, int, int, int], size: tuple[int, int]) -> np.ndarray:
    canvas = Image.new("L", size, 0)
    draw_shape(ImageDraw.Draw(canvas), shape, list(box), 255)
    return np.asarray(canvas) > 0


def detect(image: Image.Image) -> list[Detection]:
    """Every shape of ``image``, best confidence first."""
    pixels = np.asarray(image.convert("RGB"), dtype=np.float64)
    palette = np.array(list(COLORS.values()), dtype=np.float64)
    distance = np.linalg.norm(pixels[:, :, None, :] - palette[None, None], axis=-1)
    nearest = distance.argmin(axis=-1)
    colored = distance.min(axis=-1) <= COLOR_DISTANCE
    detections = []
    for index, color in enumerate(COLORS):
        for component in _components(colored & (nearest == index)):
            if len(component) < MIN_AREA:
                continue
            (y0, x0), (y1, x1) = component.min(axis=0), component.max(axis=0) + 1
            box = (int(x0), int(y0), int(x1), int(y1))
            mask = np.zeros(pixels.shape[:2], dtype=bool)
            mask[component[:, 0], component[:, 1]] = True
            ious = {}
            for shape in SHAPES:
                template = _template(shape, box, image.size)
                ious[shape] = (mask & template).sum() / (mask | template).sum()
            shape = max(SHAPES, key=lambda s: (ious[s], -SHAPES.index(s)))
            detections.append(Detection(shape, color, box, float(ious[shape])))
    return sorted(detections, key=lambda d: -d.score)


def relative_position(a: Detection, b: Detection) -> set[str]:
    """GenEval's relations of ``a`` to ``b``: the centre offset shrunk by 0.1·(w_a + w_b) (and heights)
    per axis, normalised by the unshrunk offset's length; a component beyond ±0.5 is a relation."""
    boxes = np.array([a.box, b.box], dtype=np.float64).reshape(2, 2, 2)
    center_a, center_b = boxes.mean(axis=-2)
    dim_a, dim_b = np.abs(np.diff(boxes, axis=-2))[..., 0, :]
    offset = center_a - center_b
    revised = np.maximum(np.abs(offset) - POSITION_THRESHOLD * (dim_a + dim_b), 0) * np.sign(offset)
    if np.all(np.abs(revised) < 1e-3):
        return set()
    dx, dy = revised / np.linalg.norm(offset)
    relations = set()
    if dx < -0.5:
        relations.add("left of")
    if dx > 0.5:
        relations.add("right of")
    if dy < -0.5:
        relations.add("above")
    if dy > 0.5:
        relations.add("below")
    return relations


def evaluate_image(detections: list[Detection], metadata: dict) -> tuple[bool, str]:
    """GenEval's verdict on one image (``evaluate`` of its evaluate_images.py) and the reason of a failure."""
    threshold = COUNTING_THRESHOLD if metadata["tag"] == "counting" else DETECTION_THRESHOLD
    found: dict[str, list[Detection]] = {}
    for detection in detections:
        if detection.score > threshold:
            found.setdefault(detection.shape, []).append(detection)
    correct, reasons, matched_groups = True, [], []
    for requirement in metadata.get("include", []):
        shape, count = requirement["class"], requirement["count"]
        objects = found.get(shape, [])[:count]
        matched = True
        if len(objects) < count:
            correct = matched = False
            reasons.append(f"expected {shape}>={count}, found {len(objects)}")
        else:
            if "color" in requirement:
                colors = [obj.color for obj in objects]
                if colors.count(requirement["color"]) < count:
                    correct = matched = False
                    reasons.append(f"expected {requirement['color']} {shape}>={count}, found {colors}")
            if "position" in requirement and matched:
                relation, target = requirement["position"]
                if matched_groups[target] is None:
                    correct = matched = False
                    reasons.append(f"no target for {shape} to be {relation}")
                elif not all(relation in relative_position(obj, other) for obj in objects for other in matched_groups[target]):
                    correct = matched = False
                    reasons.append(f"expected {shape} {relation} target")
        matched_groups.append(objects if matched else None)
    for requirement in metadata.get("exclude", []):
        if len(found.get(requirement["class"], [])) >= requirement["count"]:
            correct = False
            reasons.append(f"expected {requirement['class']}<{requirement['count']}")
    return correct, "; ".join(reasons)


def score_images(results: list[tuple[dict, bool]]) -> dict:
    """The ``geneval`` block of eval.json from (metadata, correct) per image: each task's accuracy,
    ``overall`` (the mean over the tasks present, GenEval's summary) and counts."""
    by_task: dict[str, list[bool]] = {}
    for metadata, correct in results:
        by_task.setdefault(metadata["tag"], []).append(correct)
    tasks = {task: fmean(by_task[task]) for task in SKILLS if task in by_task}
    return {
        "tasks": tasks,
        "overall": fmean(tasks.values()) if tasks else None,
        "n": sum(len(v) for v in by_task.values()),
        "n_per_task": {task: len(by_task[task]) for task in tasks},
    }
