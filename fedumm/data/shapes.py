"""The built-in synthetic "shapes" image–question dataset.

Every sample is one RGB image with 1–3 coloured shapes on a 3×3 grid over a
background from one of several visual domains (the domain is the natural
feature-skew axis for federated experiments), plus ONE question about it. A
record follows the normalized VQA v2 annotation format (Goyal et al. 2017):
10 annotator answers with ``answer_confidence``/``answer_id``, the
``multiple_choice_answer``, ``answer_type`` and a ``question_type`` prefix, so
the VQA soft accuracy ``min(#matching annotators / 3, 1)`` is meaningful: a
seeded 0–3 of the 10 annotators give a plausible wrong answer.

The first object of a sample is the *main* object: it is the largest one and
the only object with its shape and with its colour, so questions that name it
("what color is the circle ?") are unambiguous, and it defines ``label``,
``box`` and ``box_shape``. ``box`` is ``[x0, y0, x1, y1]`` in pixels with
exclusive ``x1``/``y1`` (PIL's crop convention: ``image.crop(box)`` is the shape).

Generation is a pure function of ``(seed, split, index)``: each sample has its
own RNG, so a split's samples do not depend on the other splits or on the
split's own size (a smaller split is a prefix of a larger one). It is written in the
shard format of :mod:`fedumm.data.shards` (PNG images).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image

from fedumm.data.shards import (
    GENERATE_TASK,
    check_count,
    check_positive,
    shard_paths,
    split_code,
    value_counts,
    write_shard,
)
from fedumm.data.geneval import SKILLS, sample_scene
from fedumm.data.shapes_world import (
    COLORS,
    DOMAINS,
    PLURALS,
    SHAPES,
    position_name,
    render_image,
)
from fedumm.io import atomic_write_json

DOMAIN_WORDS: dict[str, str] = {
    "plain": "plain",
    "noise": "noisy",
    "stripes": "striped",
    "checker": "checkered",
}
NUMBER_WORDS: dict[int, str] = {2: "two", 3: "three"}
COUNT_ANSWERS: tuple[str, ...] = ("1", "2", "3")
QUESTION_KINDS: tuple[str, ...] = ("color", "shape", "count", "position", "yesno")
NUM_ANNOTATORS = 10
MAX_WRONG_ANSWERS = 3
MIN_IMAGE_SIZE = 32
# Sample ids carry 6 digits and question ids reserve 10**6 slots per split.
MAX_SPLIT_SIZE = 1_000_000
# The split name ends up in sample keys: no "-" (the id separator) and no "."
# (webdataset takes everything before the first dot of a member name as key).
_SPLIT_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


def sample_id(split: str, index: int) -> str:
    """Sample key, e.g. ``shapes-train-000123``."""
    return f"shapes-{split}-{index:06d}"


def _sample_rng(seed: int, split: str, index: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, split_code(split), index]))


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _cell_offset(cell: int, image_size: int, size: int, rng: np.random.Generator) -> int:
    """Top-left coordinate of a ``size`` px shape jittered inside grid cell ``cell``."""
    lo = math.ceil(cell * image_size / 3) + 1
    hi = math.floor((cell + 1) * image_size / 3) - size - 1
    if hi < lo:  # no room for jitter plus a 1 px gap to the neighbouring cell
        return round((cell + 0.5) * image_size / 3 - size / 2)
    return int(rng.integers(lo, hi + 1))


def sample_objects(rng: np.random.Generator, image_size: int) -> list[dict]:
    """Draw 1–3 objects in distinct grid cells; the first is the unique main object."""
    n = int(rng.integers(1, 4))
    cells = rng.choice(9, size=n, replace=False)
    # Shape side ~14–18 px at 64×64 (10–14 at the default 48), scaled with the image.
    lo, hi = round(image_size * 14 / 64), round(image_size * 18 / 64)
    sizes = sorted((int(s) for s in rng.integers(lo, hi + 1, size=n)), reverse=True)
    main_shape = str(rng.choice(SHAPES))
    main_color = str(rng.choice(list(COLORS)))
    other_shapes = [s for s in SHAPES if s != main_shape]
    other_colors = [c for c in COLORS if c != main_color]
    objects = []
    for k, (cell, size) in enumerate(zip(cells, sizes)):
        shape = main_shape if k == 0 else str(rng.choice(other_shapes))
        color = main_color if k == 0 else str(rng.choice(other_colors))
        row, column = divmod(int(cell), 3)
        x0 = _cell_offset(column, image_size, size, rng)
        y0 = _cell_offset(row, image_size, size, rng)
        objects.append(
            {
                "shape": shape,
                "color": color,
                "position": position_name(row, column),
                "box": [x0, y0, x0 + size, y0 + size],
            }
        )
    return objects


def caption_for(objects: list[dict], domain: str) -> str:
    """Caption such as "a red circle at the top left and two blue squares on a striped background"."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for obj in objects:
        groups.setdefault((obj["color"], obj["shape"]), []).append(obj)
    phrases = []
    for (color, shape), members in groups.items():
        if len(members) == 1:
            phrases.append(f"{_article(color)} {color} {shape} at the {members[0]['position']}")
        else:
            phrases.append(f"{NUMBER_WORDS[len(members)]} {color} {PLURALS[shape]}")
    return f"{' and '.join(phrases)} on {_article(DOMAIN_WORDS[domain])} {DOMAIN_WORDS[domain]} background"


def _neighbour_positions(position: str) -> list[str]:
    cells = {position_name(r, c): (r, c) for r in range(3) for c in range(3)}
    row, column = cells[position]
    return [
        position_name(r, c)
        for r in range(max(0, row - 1), min(3, row + 2))
        for c in range(max(0, column - 1), min(3, column + 2))
        if (r, c) != (row, column)
    ]


def make_question(objects: list[dict], task: str, rng: np.random.Generator) -> dict:
    """One question about ``objects``: text, true answer, types and plausible wrong answers.

    ``task == "classify"`` asks for the main shape; otherwise the kind is drawn
    uniformly from :data:`QUESTION_KINDS`.
    """
    main = objects[0]
    if task == "classify":
        return {
            "question": "what is the main shape ?",
            "answer": main["shape"],
            "answer_type": "other",
            "question_type": "what is the main",
            "wrong": [s for s in SHAPES if s != main["shape"]],
        }
    kind = QUESTION_KINDS[int(rng.integers(0, len(QUESTION_KINDS)))]
    if kind == "color":
        return {
            "question": f"what color is the {main['shape']} ?",
            "answer": main["color"],
            "answer_type": "other",
            "question_type": "what color is the",
            "wrong": [c for c in COLORS if c != main["color"]],
        }
    if kind == "shape":
        return {
            "question": f"what shape is the {main['color']} object ?",
            "answer": main["shape"],
            "answer_type": "other",
            "question_type": "what shape is",
            "wrong": [s for s in SHAPES if s != main["shape"]],
        }
    if kind == "count":
        # Only the total: the main object is unique in its shape, so per-shape counts are
        # almost always 1 and a model that always answers "1" would look like it counts.
        count = len(objects)
        return {
            "question": "how many shapes are there ?",
            "answer": str(count),
            "answer_type": "number",
            "question_type": "how many",
            "wrong": [a for a in COUNT_ANSWERS if a != str(count)],
        }
    if kind == "position":
        return {
            "question": f"where is the {main['shape']} ?",
            "answer": main["position"],
            "answer_type": "other",
            "question_type": "where is the",
            "wrong": _neighbour_positions(main["position"]),
        }
    # yes/no, balanced: ask about a present object or about an absent colour–shape pair.
    present_pairs = {(o["color"], o["shape"]) for o in objects}
    if rng.random() < 0.5:
        obj = objects[int(rng.integers(0, len(objects)))]
        color, shape, answer = obj["color"], obj["shape"], "yes"
    else:
        absent = [(c, s) for c in COLORS for s in SHAPES if (c, s) not in present_pairs]
        color, shape = absent[int(rng.integers(0, len(absent)))]
        answer = "no"
    article = _article(color)
    return {
        "question": f"is there {article} {color} {shape} ?",
        "answer": answer,
        "answer_type": "yes/no",
        "question_type": f"is there {article}",
        "wrong": ["no" if answer == "yes" else "yes"],
    }


def annotator_answers(answer: str, wrong: list[str], rng: np.random.Generator) -> list[dict]:
    """10 VQA v2 annotator answers: the true one, except 0–3 seeded plausible wrong ones."""
    n_wrong = int(rng.integers(0, MAX_WRONG_ANSWERS + 1))
    noisy = set(int(i) for i in rng.choice(NUM_ANNOTATORS, size=n_wrong, replace=False))
    answers = []
    for i in range(NUM_ANNOTATORS):
        if i in noisy:
            text, confidence = wrong[int(rng.integers(0, len(wrong)))], "maybe"
        else:
            text, confidence = answer, "yes"
        answers.append({"answer": text, "answer_confidence": confidence, "answer_id": i + 1})
    return answers


def most_frequent_answer(answers: list[dict], true_answer: str) -> str:
    """Most frequent annotator answer; ties go to ``true_answer``, then alphabetical order."""
    counts = Counter(a["answer"] for a in answers)
    top = max(counts.values())
    tied = [a for a, c in counts.items() if c == top]
    return true_answer if true_answer in tied else min(tied)


def make_generation_sample(split: str, index: int, rng: np.random.Generator, image_size: int) -> tuple[dict, Image.Image]:
    """A ``generate`` record (prompt -> image): a GenEval-style prompt of a uniformly drawn skill
    (``fedumm.data.geneval``), its metadata under ``geneval`` and the image of a scene that satisfies it."""
    skill = SKILLS[int(rng.integers(0, len(SKILLS)))]
    scene = sample_scene(skill, rng, image_size)
    image = render_image(scene["objects"], scene["domain"], image_size, rng)
    record = {
        "id": sample_id(split, index),
        "split": split,
        "task": GENERATE_TASK,
        "prompt": scene["prompt"],
        "geneval": scene["metadata"],
        "label": scene["metadata"]["include"][0]["class"],
        "domain": scene["domain"],
        "objects": scene["objects"],
    }
    return record, image


def make_sample(
    split: str, index: int, seed: int, image_size: int = 64, classify_fraction: float = 0.15,
    generate_fraction: float = 0.0,
) -> tuple[dict, Image.Image]:
    """The record and image of sample ``index`` of ``split``; a pure function of its arguments.

    With ``generate_fraction`` > 0 that share of samples are ``generate`` records
    (:func:`make_generation_sample`); at 0 no draw is spent on it, so the data is unchanged.
    """
    rng = _sample_rng(seed, split, index)
    if generate_fraction > 0 and rng.random() < generate_fraction:
        return make_generation_sample(split, index, rng, image_size)
    task = "classify" if rng.random() < classify_fraction else "vqa"
    domain = DOMAINS[int(rng.integers(0, len(DOMAINS)))]
    objects = sample_objects(rng, image_size)
    image = render_image(objects, domain, image_size, rng)
    q = make_question(objects, task, rng)
    answers = annotator_answers(q["answer"], q["wrong"], rng)
    main = objects[0]
    record = {
        "id": sample_id(split, index),
        "split": split,
        "task": task,
        "question_id": split_code(split) * MAX_SPLIT_SIZE + index,
        "question": q["question"],
        "answers": answers,
        "multiple_choice_answer": most_frequent_answer(answers, q["answer"]),
        "answer_type": q["answer_type"],
        "question_type": q["question_type"],
        "caption": caption_for(objects, domain),
        "label": main["shape"],
        "box": list(main["box"]),
        "box_shape": f"{main['color']} {main['shape']}",
        "domain": domain,
        "objects": objects,
    }
    return record, image


def _check_generate_args(
    splits: dict[str, int], seed: int, image_size: int, shard_size: int, classify_fraction: float,
    generate_fraction: float,
) -> None:
    if not splits:
        raise ValueError("splits must name at least one split, got {}")
    for split, n in splits.items():
        if not isinstance(split, str) or not _SPLIT_NAME.match(split):
            raise ValueError(f"splits: split name must match {_SPLIT_NAME.pattern}, got {split!r}")
        check_count(f"splits[{split!r}]", n)
        if n > MAX_SPLIT_SIZE:
            raise ValueError(f"splits[{split!r}] must be at most {MAX_SPLIT_SIZE}, got {n}")
    codes = Counter(split_code(s) for s in splits)
    if max(codes.values()) > 1:
        raise ValueError(f"splits: split names {sorted(splits)} collide in their CRC-32 code; rename one")
    check_count("seed", seed)
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < MIN_IMAGE_SIZE:
        raise ValueError(f"image_size must be an int >= {MIN_IMAGE_SIZE}, got {image_size!r}")
    check_positive("shard_size", shard_size)
    if not 0.0 <= classify_fraction <= 1.0:
        raise ValueError(f"classify_fraction must be in [0, 1], got {classify_fraction!r}")
    if not 0.0 <= generate_fraction < 1.0:
        raise ValueError(f"generate_fraction must be in [0, 1), got {generate_fraction!r}")


def generate_shapes(
    out_dir: Path,
    splits: dict[str, int],
    seed: int,
    image_size: int = 64,
    shard_size: int = 1000,
    classify_fraction: float = 0.15,
    generate_fraction: float = 0.0,
) -> dict:
    """Write the shapes dataset as webdataset shards plus ``card.json``; return the card.

    Each split's shards are exactly :func:`shard_paths` of its size. The card
    holds the generation arguments, sample counts, shard names and, per split,
    :func:`value_counts` over :data:`CARD_FIELDS`.
    """
    _check_generate_args(splits, seed, image_size, shard_size, classify_fraction, generate_fraction)
    out_dir = Path(out_dir)
    card: dict = {
        "name": "shapes",
        "seed": seed,
        "image_size": image_size,
        "shard_size": shard_size,
        "classify_fraction": classify_fraction,
        "generate_fraction": generate_fraction,
        "num_samples": dict(splits),
        "shards": {},
        "value_counts": {},
    }
    for split, n in splits.items():
        paths = shard_paths(out_dir, split, n, shard_size)
        records: list[dict] = []
        for k, path in enumerate(paths):
            samples = [
                make_sample(split, i, seed, image_size, classify_fraction, generate_fraction)
                for i in range(k * shard_size, min(n, (k + 1) * shard_size))
            ]
            write_shard(path, samples)
            records.extend(record for record, _ in samples)
        card["shards"][split] = [p.name for p in paths]
        card["value_counts"][split] = value_counts(records)
    atomic_write_json(out_dir / "card.json", card)
    return card
