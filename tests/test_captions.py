"""COCO caption metrics (fedumm.evaluation.captions) against pycocoevalcap called directly.

METEOR's JVM takes 20-30 s to load its paraphrase tables, so the tests start one and share it:
the direct computation calls it, and it is installed as ``caption_scores``' reused scorer.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.meteor.meteor import Meteor
from pycocoevalcap.rouge.rouge import Rouge
from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

from fedumm.evaluation import captions
from fedumm.evaluation.captions import (
    caption_scores,
    java_major_version,
    spice_problems,
)

needs_java = pytest.mark.skipif(
    shutil.which("java") is None, reason="needs Java (make system-deps)"
)

REFERENCES = {
    "img1": [
        "A red circle on a gray background.",
        "a red circle",
        "There is a red circle in the middle of the image.",
    ],
    "img2": [
        "A blue square next to a green triangle.",
        "blue square and green triangle",
        "a small blue square",
        "Two shapes: a square and a triangle.",
    ],
    "img3": ["Two yellow stars on a striped background.", "yellow stars on stripes"],
    "img4": [
        "a purple cross",
        "A purple plus sign on a noisy background.",
        "the purple cross is in the top left corner",
        "a cross",
        "purple cross, noisy background",
    ],
}
PREDICTIONS = {
    "img1": "A red circle on a gray background.",  # exact match of one reference
    "img2": "a blue square and a red circle",  # partial match
    "img3": "a yellow star",
    "img4": "",  # nothing generated
}
METRICS = ["BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr"]


@pytest.fixture(scope="module")
def meteor() -> Iterator[Meteor]:
    """One pycocoevalcap METEOR scorer, also used by ``caption_scores`` within this module."""
    scorer = Meteor()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(captions, "_meteor_scorer", scorer)
        yield scorer


@pytest.fixture(scope="module")
def scores_and_expected(meteor: Meteor) -> tuple[dict[str, float], dict[str, float]]:
    """``caption_scores`` on the hand-made set, and the COCO evaluation run directly."""
    scores = caption_scores(PREDICTIONS, REFERENCES)
    tokenizer = PTBTokenizer()
    gts = tokenizer.tokenize({i: [{"caption": c} for c in refs] for i, refs in REFERENCES.items()})
    res = tokenizer.tokenize({i: [{"caption": PREDICTIONS[i]}] for i in REFERENCES})
    bleu, _ = Bleu(4).compute_score(gts, res)
    expected = dict(zip(METRICS[:4], bleu))
    for name, scorer in [("METEOR", meteor), ("ROUGE-L", Rouge()), ("CIDEr", Cider())]:
        expected[name], _ = scorer.compute_score(gts, res)
    return scores, expected


@needs_java
def test_caption_scores_equal_direct_pycocoevalcap(
    scores_and_expected: tuple[dict[str, float], dict[str, float]],
) -> None:
    scores, expected = scores_and_expected
    assert list(scores) == METRICS
    assert all(type(value) is float for value in scores.values())
    for name in METRICS:
        assert scores[name] == pytest.approx(float(expected[name]), rel=1e-12, abs=1e-15), name
    # A partial set: every metric strictly between nothing and perfect.
    assert all(0.0 < scores[name] < 1.0 for name in METRICS if name != "CIDEr")
    assert 0.0 < scores["CIDEr"] < 10.0


@needs_java
def test_caption_scores_of_perfect_predictions(meteor: Meteor) -> None:
    # Single references identical (after tokenization) to the predictions, with no n-gram
    # shared between images, so that CIDEr's IDF weights are non-zero: CIDEr is 10 x cosine 1.
    references = {
        "a": ["A purple hexagon sits on a striped background."],
        "b": ["two small green triangles near the bottom edge"],
    }
    # Line breaks that the Java tokenizer would take as caption ends (which would misalign
    # every later caption) must be read as spaces.
    predictions = {
        "a": "a purple\rhexagon sits on a striped background",
        "b": "Two small green\u2028triangles near\x0bthe bottom edge.",
    }
    scores = caption_scores(predictions, references)
    assert scores == {
        "BLEU-1": pytest.approx(1.0, abs=1e-6),  # 1 up to BLEU's 1e-9 smoothing terms
        "BLEU-2": pytest.approx(1.0, abs=1e-6),
        "BLEU-3": pytest.approx(1.0, abs=1e-6),
        "BLEU-4": pytest.approx(1.0, abs=1e-6),
        "METEOR": pytest.approx(1.0),
        "ROUGE-L": pytest.approx(1.0),
        "CIDEr": pytest.approx(10.0),
    }


def test_caption_scores_rejects_mismatched_ids() -> None:
    with pytest.raises(ValueError, match=r"no predicted caption for image ids \['img2'\]"):
        caption_scores({"img1": "a red circle"}, {"img1": ["a red circle"], "img2": ["a cross"]})
    with pytest.raises(ValueError, match=r"no reference captions for predicted .* \['img9'\]"):
        caption_scores({"img1": "a", "img9": "b"}, {"img1": ["a red circle"]})
    with pytest.raises(ValueError, match=r"empty reference list for image ids \['img1'\]"):
        caption_scores({"img1": "a"}, {"img1": []})
    with pytest.raises(ValueError, match="no reference captions to score against"):
        caption_scores({}, {})


def test_caption_scores_without_java(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda name, *args, **kwargs: None)
    with pytest.raises(RuntimeError, match="need Java") as error:
        caption_scores({"img1": "a red circle"}, {"img1": ["a red circle"]})
    assert "make system-deps" in str(error.value)
    assert "apt-get install default-jre-headless" in str(error.value)


def test_spice_requirements_unmet(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(shutil, "which", lambda name, *args, **kwargs: "/usr/bin/java")
    java_17 = 'openjdk version "17.0.15" 2025-04-15'
    monkeypatch.setattr(captions, "_java_version_output", lambda: java_17)
    monkeypatch.setattr(captions, "spice_lib_dir", lambda: tmp_path)
    with pytest.raises(RuntimeError, match="SPICE cannot run") as error:
        caption_scores({"img1": "a red circle"}, {"img1": ["a red circle"]}, spice=True)
    message = str(error.value)
    assert "needs Java 8-11" in message and "reports Java 17" in message
    assert "stanford-corenlp-3.6.0-models.jar" in message and "internet access" in message


def test_spice_problems(tmp_path: Path) -> None:
    java_11 = 'openjdk version "11.0.22" 2024-01-16'
    assert len(spice_problems(java_11, tmp_path)) == 1  # the jars only
    (tmp_path / "stanford-corenlp-3.6.0.jar").touch()
    (tmp_path / "stanford-corenlp-3.6.0-models.jar").touch()
    assert spice_problems(java_11, tmp_path) == []
    assert spice_problems('java version "1.8.0_392"', tmp_path) == []
    [problem] = spice_problems('openjdk version "21.0.2" 2024-01-16', tmp_path)
    assert "reports Java 21" in problem
    [problem] = spice_problems("bash: java: command not found", tmp_path)
    assert "no recognizable Java version" in problem


@pytest.mark.parametrize(
    ("output", "major"),
    [
        ('java version "1.8.0_392"\nJava(TM) SE Runtime Environment', 8),
        ('openjdk version "11" 2018-09-25', 11),
        ('Picked up JAVA_TOOL_OPTIONS: -Xss4m\nopenjdk version "17.0.15" 2025-04-15', 17),
        ('openjdk version "21-ea" 2023-09-19', 21),
        ("no java here", None),
    ],
)
def test_java_major_version(output: str, major: int | None) -> None:
    assert java_major_version(output) == major
