"""GenEval's rules on the shapes world: the scene sampler, the analytic detector and the verdicts."""

from __future__ import annotations

from statistics import fmean

import numpy as np
import pytest

from fedumm.data.geneval import SKILLS, benchmark_prompts, sample_scene
from fedumm.data.shapes_world import DOMAINS, render_image
from fedumm.evaluation.geneval import (
    Detection,
    detect,
    evaluate_image,
    relative_position,
    score_images,
)


@pytest.fixture(scope="module")
def scenes() -> list[tuple[dict, object]]:
    """300 benchmark scenes (50 per skill) and their rendered images."""
    rng = np.random.default_rng(7)
    return [(scene, render_image(scene["objects"], scene["domain"], 64, rng)) for scene in benchmark_prompts(50, seed=11)]


def test_the_sampler_covers_every_skill_background_and_count(scenes) -> None:
    assert [scene["metadata"]["tag"] for scene, _ in scenes] == [skill for skill in SKILLS for _ in range(50)]
    assert {scene["domain"] for scene, _ in scenes} == set(DOMAINS)
    counts = {scene["metadata"]["include"][0]["count"] for scene, _ in scenes if scene["metadata"]["tag"] == "counting"}
    assert counts == {2, 3, 4}
    rng = np.random.default_rng(0)
    assert sample_scene("counting", np.random.default_rng(5)) == sample_scene("counting", np.random.default_rng(5))
    with pytest.raises(ValueError, match="skill must be one of"):
        sample_scene("texture", rng)


def test_the_detector_finds_every_shape_and_nothing_else(scenes) -> None:
    true_positives = false_positives = false_negatives = 0
    for scene, image in scenes:
        truth = {(obj["shape"], obj["color"], tuple(obj["box"])) for obj in scene["objects"]}
        found = {(d.shape, d.color, d.box) for d in detect(image)}
        true_positives += len(truth & found)
        false_positives += len(found - truth)
        false_negatives += len(truth - found)
    assert true_positives == sum(len(scene["objects"]) for scene, _ in scenes)
    precision = true_positives / (true_positives + false_positives)
    recall = true_positives / (true_positives + false_negatives)
    assert (precision, recall) == (1.0, 1.0)


def test_rules_accept_true_images_and_reject_another_scene_s(scenes) -> None:
    true = score_images([(scene["metadata"], evaluate_image(detect(image), scene["metadata"])[0]) for scene, image in scenes])
    assert true["overall"] == 1.0 and true["n"] == 300 and set(true["tasks"]) == set(SKILLS)
    # Each prompt judged on the image of the next scene of the same skill.
    shifted = []
    for i, (scene, _) in enumerate(scenes):
        _, other = scenes[i + 1 if i % 50 < 49 else i - 49]
        shifted.append((scene["metadata"], evaluate_image(detect(other), scene["metadata"])[0]))
    mismatched = score_images(shifted)
    assert mismatched["overall"] < 0.35, mismatched


def _at(shape: str, color: str, x: int, y: int, score: float = 1.0, size: int = 10) -> Detection:
    return Detection(shape, color, (x, y, x + size, y + size), score)


def test_counting_needs_exactly_n_at_high_confidence() -> None:
    metadata = {"tag": "counting", "include": [{"class": "circle", "count": 2}], "exclude": [{"class": "circle", "count": 3}]}
    two = [_at("circle", "red", 0, 0), _at("circle", "blue", 30, 0)]
    assert evaluate_image(two, metadata)[0]
    assert not evaluate_image([*two, _at("circle", "red", 0, 30)], metadata)[0]  # N + 1 fails
    assert not evaluate_image([two[0], _at("circle", "blue", 30, 0, score=0.8)], metadata)[0]  # below 0.9
    # A two-object prompt keeps detections down to 0.3.
    pair = {"tag": "two_object", "include": [{"class": "circle", "count": 1}, {"class": "square", "count": 1}], "exclude": []}
    assert evaluate_image([_at("circle", "red", 0, 0, 0.8), _at("square", "red", 30, 0, 0.31)], pair)[0]
    assert not evaluate_image([_at("circle", "red", 0, 0, 0.8), _at("square", "red", 30, 0, 0.3)], pair)[0]


def test_colour_is_checked_per_required_object() -> None:
    metadata = {"tag": "color_attr", "include": [{"class": "circle", "count": 1, "color": "red"},
                                                 {"class": "square", "count": 1, "color": "blue"}], "exclude": []}
    assert evaluate_image([_at("circle", "red", 0, 0), _at("square", "blue", 30, 0)], metadata)[0]
    verdict = evaluate_image([_at("circle", "blue", 0, 0), _at("square", "red", 30, 0)], metadata)
    assert not verdict[0] and "expected red circle" in verdict[1]


def test_relative_position_shrinks_the_offset_by_the_sizes() -> None:
    left, right = _at("circle", "red", 0, 0), _at("square", "red", 30, 0)
    assert relative_position(left, right) == {"left of"} and relative_position(right, left) == {"right of"}
    # Centres 6 px apart with 10 px boxes: 6 − 0.1·(10 + 10) = 4 px remain, 4 / 6 = 0.67 > 0.5.
    assert relative_position(_at("circle", "red", 6, 0), _at("square", "red", 0, 0)) == {"right of"}
    # 4 px apart: 2 px remain, 2 / 4 = 0.5 is not beyond 0.5; 3 px apart: 1 / 3.
    assert relative_position(_at("circle", "red", 4, 0), _at("square", "red", 0, 0)) == set()
    assert relative_position(_at("circle", "red", 3, 0), _at("square", "red", 0, 0)) == set()
    # 1 px apart: shrunk to nothing.
    assert relative_position(_at("circle", "red", 1, 0), _at("square", "red", 0, 0)) == set()
    # A diagonal offset of (30, 30): normalised components 0.71 - both relations.
    assert relative_position(_at("circle", "red", 30, 30), _at("square", "red", 0, 0)) == {"right of", "below"}
    metadata = {"tag": "position", "include": [{"class": "square", "count": 1},
                                               {"class": "circle", "count": 1, "position": ["left of", 0]}], "exclude": []}
    assert evaluate_image([left, right], metadata)[0]
    assert not evaluate_image([_at("circle", "red", 30, 0), _at("square", "red", 0, 0)], metadata)[0]


def test_overall_is_the_mean_of_the_task_accuracies() -> None:
    results = [({"tag": "counting"}, True), ({"tag": "counting"}, False), ({"tag": "colors"}, True)]
    scores = score_images(results)
    assert scores["tasks"] == {"counting": 0.5, "colors": 1.0}
    assert scores["overall"] == fmean([0.5, 1.0]) and scores["n_per_task"] == {"counting": 2, "colors": 1}
