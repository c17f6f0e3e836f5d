"""GenEval's six compositional skills on the shapes world: a seeded scene sampler and its prompts.

GenEval (Ghosh et al., 2023; djghosh13/geneval) scores text-to-image models on single objects, two
objects, counting, colours, relative position and colour attribution, from prompts such as "a photo
of two benches" with metadata that says what a correct image holds. Here the objects are the shapes
of ``fedumm.data.shapes`` (five shapes, seven colours) on its 3×3 grid over its four backgrounds, so
that an analytic detector (``fedumm.evaluation.geneval``) can apply GenEval's rules exactly. A scene
is a list of objects with one grid cell each; its image is drawn by ``fedumm.data.shapes_world.render_image``.

The metadata follows GenEval's ``evaluation_metadata.jsonl``: ``tag`` (the skill), ``include`` (a
list of ``{"class", "count"}`` with optional ``"color"`` and ``"position": [relation, index]``, the
relation of these objects to the objects of an earlier entry) and ``exclude`` (a class must occur
fewer than ``count`` times: counting's N + 1).
"""

from __future__ import annotations

import numpy as np

from fedumm.data.shapes_world import COLORS, DOMAINS, PLURALS, SHAPES, position_name

SKILLS: tuple[str, ...] = ("single_object", "two_object", "counting", "colors", "position", "color_attr")
"""GenEval's tasks, by its tag names."""
RELATIONS: tuple[str, ...] = ("left of", "right of", "above", "below")
NUMBER_WORDS: dict[int, str] = {2: "two", 3: "three", 4: "four"}
COUNTS: tuple[int, ...] = (2, 3, 4)


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _place(cells: list[int], shapes: list[str], colors: list[str], image_size: int) -> list[dict]:
    """Objects of one size centred in their grid cells (``cell`` = row * 3 + column)."""
    size = round(image_size * 16 / 64)
    objects = []
    for cell, shape, color in zip(cells, shapes, colors):
        row, column = divmod(cell, 3)
        x0 = round((column + 0.5) * image_size / 3 - size / 2)
        y0 = round((row + 0.5) * image_size / 3 - size / 2)
        objects.append({"shape": shape, "color": color, "cell": cell, "position": position_name(row, column),
                        "box": [x0, y0, x0 + size, y0 + size]})
    return objects


def _related_cells(relation: str, rng: np.random.Generator) -> tuple[int, int]:
    """Cells (a, b) such that a is ``relation`` b in GenEval's sense: same row for left/right, same
    column for above/below, so the offset is purely along the relation's axis."""
    line = int(rng.integers(0, 3))
    first, second = sorted(int(i) for i in rng.choice(3, size=2, replace=False))
    if relation in ("left of", "right of"):
        a, b = line * 3 + first, line * 3 + second  # a is left of b
    else:
        a, b = first * 3 + line, second * 3 + line  # a is above b
    return (a, b) if relation in ("left of", "above") else (b, a)


def sample_scene(skill: str, rng: np.random.Generator, image_size: int = 64) -> dict:
    """One prompt of ``skill`` with its GenEval metadata and a scene that satisfies it.

    Returns ``{"prompt", "metadata", "objects", "domain"}``. Colours are free (random) where the
    skill does not name them; every object has its own cell.
    """
    domain = str(rng.choice(DOMAINS))
    shape_a, shape_b = (str(s) for s in rng.choice(SHAPES, size=2, replace=False))
    color_a, color_b = (str(c) for c in rng.choice(list(COLORS), size=2, replace=False))
    if skill == "single_object":
        prompt = f"a photo of {_article(shape_a)} {shape_a}"
        include, exclude = [{"class": shape_a, "count": 1}], []
        cells, shapes, colors = [int(rng.integers(0, 9))], [shape_a], [color_a]
    elif skill == "two_object":
        prompt = f"a photo of {_article(shape_a)} {shape_a} and {_article(shape_b)} {shape_b}"
        include, exclude = [{"class": shape_a, "count": 1}, {"class": shape_b, "count": 1}], []
        cells, shapes, colors = [int(c) for c in rng.choice(9, size=2, replace=False)], [shape_a, shape_b], [color_a, color_b]
    elif skill == "counting":
        count = int(rng.choice(COUNTS))
        prompt = f"a photo of {NUMBER_WORDS[count]} {PLURALS[shape_a]}"
        include, exclude = [{"class": shape_a, "count": count}], [{"class": shape_a, "count": count + 1}]
        cells = [int(c) for c in rng.choice(9, size=count, replace=False)]
        shapes, colors = [shape_a] * count, [str(c) for c in rng.choice(list(COLORS), size=count)]
    elif skill == "colors":
        prompt = f"a photo of {_article(color_a)} {color_a} {shape_a}"
        include, exclude = [{"class": shape_a, "count": 1, "color": color_a}], []
        cells, shapes, colors = [int(rng.integers(0, 9))], [shape_a], [color_a]
    elif skill == "position":
        relation = str(rng.choice(RELATIONS))
        prompt = f"a photo of {_article(shape_a)} {shape_a} {relation} {_article(shape_b)} {shape_b}"
        include = [{"class": shape_b, "count": 1}, {"class": shape_a, "count": 1, "position": [relation, 0]}]
        exclude = []
        cell_a, cell_b = _related_cells(relation, rng)
        cells, shapes, colors = [cell_b, cell_a], [shape_b, shape_a], [color_b, color_a]
    elif skill == "color_attr":
        prompt = (f"a photo of {_article(color_a)} {color_a} {shape_a} and "
                  f"{_article(color_b)} {color_b} {shape_b}")
        include = [{"class": shape_a, "count": 1, "color": color_a}, {"class": shape_b, "count": 1, "color": color_b}]
        exclude = []
        cells, shapes, colors = [int(c) for c in rng.choice(9, size=2, replace=False)], [shape_a, shape_b], [color_a, color_b]
    else:
        raise ValueError(f"skill must be one of {SKILLS}, got {skill!r}")
    metadata = {"tag": skill, "include": include, "exclude": exclude, "prompt": prompt}
    return {"prompt": prompt, "metadata": metadata, "objects": _place(cells, shapes, colors, image_size), "domain": domain}


def benchmark_prompts(per_skill: int, seed: int, image_size: int = 64) -> list[dict]:
    """``per_skill`` seeded scenes of every skill, skill by skill: the evaluation prompts."""
    scenes = []
    for skill in SKILLS:
        rng = np.random.default_rng(np.random.SeedSequence([seed, SKILLS.index(skill)]))
        scenes.extend(sample_scene(skill, rng, image_size) for _ in range(per_skill))
    return scenes

