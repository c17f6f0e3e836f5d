"""Scoring every task of a split on hand-made predictions (fedumm.evaluation.scores.score_records and the
per-client means); the values are computed by hand, the caption ones by pycocoevalcap itself."""

from __future__ import annotations

import shutil

import pytest
from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.rouge.rouge import Rouge
from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer
from test_captions import PREDICTIONS as CAPTION_PREDICTIONS
from test_captions import REFERENCES as CAPTION_REFERENCES

from fedumm.evaluation import captions
from fedumm.evaluation.scores import (
    majority_baseline_for,
    mean_scores,
    personalized_scores,
    primary_metric,
    score_records,
)

needs_java = pytest.mark.skipif(shutil.which("java") is None, reason="needs Java (make system-deps)")


def vqa(rid: str, answers: list[str], atype: str, qtype: str) -> dict:
    return {
        "id": rid, "task": "vqa", "question": "q", "answer_type": atype, "question_type": qtype,
        "answers": [{"answer": a, "answer_id": i + 1} for i, a in enumerate(answers)],
        "multiple_choice_answer": answers[0],
    }


def single(rid: str, answer: str) -> dict:
    """A GQA-style record: one answer."""
    return {"id": rid, "task": "vqa", "question": "q", "answers": [{"answer": answer}], "multiple_choice_answer": answer}


def classify(rid: str, label: str) -> dict:
    return {"id": rid, "task": "classify", "question": "what shape ?", "label": label, "multiple_choice_answer": label}


def ground(rid: str, box: list[int]) -> dict:
    return {"id": rid, "task": "ground", "question": "where is it ?", "box": box, "multiple_choice_answer": str(box)}


VQA = [
    vqa("v1", ["red"] * 10, "other", "what color"),  # "red": 1
    vqa("v2", ["2"] * 2 + ["3"] * 8, "number", "how many"),  # "2": (2 * 1/3 + 8 * 2/3) / 10 = 0.6
    vqa("v3", ["yes"] * 10, "yes/no", "is there"),  # "no": 0
]
EXACT = [single("e1", "left of the box"), single("e2", "cup")]
CLASSIFY = [classify("c1", "circle"), classify("c2", "square"), classify("c3", "cross")]
GROUND = [
    ground("g1", [10, 10, 20, 20]),
    ground("g2", [0, 0, 10, 10]),
    ground("g3", [0, 0, 10, 10]),
    ground("g4", [0, 0, 32, 32]),
]
SIZES = {r["id"]: (64, 64) for r in GROUND}
PREDICTIONS = {
    "v1": "red", "v2": "2", "v3": "no",
    "e1": "Left of box.", "e2": "mug",  # normalized match; wrong
    "c1": "circle", "c2": "a square", "c3": "diamond",
    "g1": "[10, 10, 20, 20]",  # IoU 1
    "g2": "the box is [5, 0, 15, 10]",  # IoU 50 / 150
    "g3": "it is a circle",  # malformed: IoU 0, counted
    "g4": "[0.0, 0.0, 0.5, 0.5]",  # normalized coordinates: [0, 0, 32, 32], IoU 1
}


def test_every_task_scored_on_hand_made_predictions() -> None:
    scores = score_records(PREDICTIONS, VQA + EXACT + CLASSIFY + GROUND, SIZES)
    assert scores["vqa"] == {
        "accuracy": pytest.approx(1.6 / 3),
        "per_answer_type": {"number": pytest.approx(0.6), "other": 1.0, "yes/no": 0.0},
        "per_question_type": {"how many": pytest.approx(0.6), "is there": 0.0, "what color": 1.0},
        "n": 3,
        "missing": 0,
    }
    assert scores["exact_match"] == {"accuracy": 0.5, "n": 2}
    assert scores["classification_accuracy"] == pytest.approx(2 / 3)
    assert scores["caption"] is None
    assert scores["ground"] == {"mean_iou": pytest.approx(7 / 12), "accuracy@0.5": 0.5, "malformed": 1, "n": 4}
    assert scores["n"] == 12
    assert scores["n_per_task"] == {"classify": 3, "ground": 4, "vqa": 5}
    assert scores["score_metric"] == "vqa.accuracy"
    assert scores["score"] == scores["vqa"]["accuracy"]


@pytest.mark.parametrize(
    ("records", "metric"),
    [
        (VQA + CLASSIFY, "vqa.accuracy"),
        (EXACT + CLASSIFY + GROUND, "exact_match.accuracy"),
        (CLASSIFY + GROUND, "classification_accuracy"),
        (GROUND, "ground.accuracy@0.5"),
        ([{"id": "k", "task": "caption", "caption": "a"}, *GROUND], "caption.CIDEr"),
    ],
)
def test_primary_metric_rule(records: list[dict], metric: str) -> None:
    assert primary_metric(records) == metric


def test_score_follows_the_given_metric() -> None:
    scores = score_records(PREDICTIONS, GROUND, SIZES, metric="ground.mean_iou")
    assert (scores["score"], scores["score_metric"]) == (pytest.approx(7 / 12), "ground.mean_iou")
    # A subset without the metric's task (a client's split) has no score.
    scores = score_records(PREDICTIONS, CLASSIFY, SIZES, metric="vqa.accuracy")
    assert scores["score"] is None and scores["vqa"] is None


def test_bad_input_names_the_culprit() -> None:
    with pytest.raises(ValueError, match=r"no prediction for 1 record\(s\), e.g. 'c9'"):
        score_records(PREDICTIONS, [*CLASSIFY, classify("c9", "cross")], SIZES)
    with pytest.raises(ValueError, match=r"record 'c1' \(task 'classify'\) has no 'label'"):
        score_records(PREDICTIONS, [{k: v for k, v in CLASSIFY[0].items() if k != "label"}], SIZES)
    with pytest.raises(ValueError, match=r"record 'x': task 'detect' is not one of"):
        score_records({"x": ""}, [{"id": "x", "task": "detect"}], SIZES)
    with pytest.raises(ValueError, match="no records to score"):
        primary_metric([])


@needs_java
def test_caption_records_scored_as_by_pycocoevalcap() -> None:
    records = [{"id": i, "task": "caption", "captions": refs} for i, refs in CAPTION_REFERENCES.items()]
    # One record with its single reference in "caption" instead of "captions".
    records[2] = {"id": "img3", "task": "caption", "caption": CAPTION_REFERENCES["img3"][0]}
    references = {**CAPTION_REFERENCES, "img3": CAPTION_REFERENCES["img3"][:1]}
    scores = score_records(CAPTION_PREDICTIONS, records, {})

    tokenizer = PTBTokenizer()
    gts = tokenizer.tokenize({i: [{"caption": c} for c in refs] for i, refs in references.items()})
    res = tokenizer.tokenize({i: [{"caption": CAPTION_PREDICTIONS[i]}] for i in references})
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    expected = {f"BLEU-{n}": b for n, b in enumerate(bleu, start=1)}
    expected["METEOR"], _ = captions._meteor().compute_score(gts, res)
    expected["ROUGE-L"], _ = Rouge().compute_score(gts, res)
    expected["CIDEr"], _ = Cider().compute_score(gts, res)
    assert scores["caption"] == {**{k: pytest.approx(float(v), rel=1e-12) for k, v in expected.items()}, "n": 4}
    assert (scores["score_metric"], scores["score"]) == ("caption.CIDEr", scores["caption"]["CIDEr"])
    assert scores["vqa"] is None and scores["n_per_task"] == {"caption": 4}


def test_mean_over_clients_by_hand() -> None:
    a = {"vqa": {"accuracy": 1.0, "per_answer_type": {"other": 1.0}}, "classification_accuracy": None,
         "n": 2, "score": 1.0, "score_metric": "vqa.accuracy"}
    b = {"vqa": {"accuracy": 0.5, "per_answer_type": {"other": 0.0, "number": 1.0}}, "classification_accuracy": 0.5,
         "n": 4, "score": 0.5, "score_metric": "vqa.accuracy"}
    empty = {"vqa": None, "classification_accuracy": None, "n": 0, "score": None, "score_metric": "vqa.accuracy"}
    assert mean_scores([a, b, empty]) == {
        "vqa": {"accuracy": 0.75, "per_answer_type": {"other": 0.5, "number": 1.0}},
        "classification_accuracy": 0.5,  # only b has classify records
        "n": 2.0,
        "score": 0.75,  # the client without records of the metric's task does not count
        "score_metric": "vqa.accuracy",
    }
    with pytest.raises(ValueError, match="cannot average different names"):
        mean_scores([a, {**b, "score_metric": "caption.CIDEr"}])
    with pytest.raises(ValueError, match="no scores to average"):
        mean_scores([])


def test_personalized_scores_of_the_global_model() -> None:
    records = VQA + CLASSIFY
    clients = {"client_0": ["v1", "c3"], "client_1": ["v2", "v3", "c1", "c2"], "client_2": []}
    result = personalized_scores({"global": PREDICTIONS}, records, clients, {}, False, "vqa.accuracy")
    assert result["model"] == "global"
    per = result["clients"]
    assert (per["client_0"]["score"], per["client_0"]["classification_accuracy"]) == (1.0, 0.0)
    assert per["client_1"]["score"] == pytest.approx(0.3)  # (0.6 + 0) / 2
    assert per["client_1"]["classification_accuracy"] == 1.0
    assert per["client_2"]["n"] == 0 and per["client_2"]["score"] is None
    assert result["mean"]["score"] == pytest.approx(0.65)
    assert result["mean"]["vqa"]["accuracy"] == pytest.approx(0.65)
    assert result["mean"]["classification_accuracy"] == pytest.approx(0.5)
    assert result["mean"]["n"] == 2.0
    assert result["mean"]["score_metric"] == "vqa.accuracy"


def test_personalized_scores_of_local_models() -> None:
    records = VQA
    other = {**PREDICTIONS, "v2": "3"}  # 8 of 10 annotators: 1.0
    clients = {"client_0": ["v1", "v2"], "client_1": ["v2", "v3"]}
    result = personalized_scores(
        {"client_0": PREDICTIONS, "client_1": other}, records, clients, {}, False, "vqa.accuracy"
    )
    assert result["model"] == "local"
    assert result["clients"]["client_0"]["score"] == pytest.approx(0.8)  # (1 + 0.6) / 2
    assert result["clients"]["client_1"]["score"] == pytest.approx(0.5)  # (1 + 0) / 2
    assert result["mean"]["score"] == pytest.approx(0.65)
    with pytest.raises(ValueError, match=r"client_1: 1 sample\(s\) not in the evaluated split, e.g. 'zz'"):
        personalized_scores({"global": PREDICTIONS}, records, {"client_1": ["v1", "zz"]}, {}, False, "vqa.accuracy")
    with pytest.raises(ValueError, match=r"no model for client_7: the models are \['client_0', 'client_1'\]"):
        personalized_scores(
            {"client_0": PREDICTIONS, "client_1": other}, records, {"client_7": ["v1"]}, {}, False, "vqa.accuracy"
        )


def test_majority_baseline_of_the_primary_metric() -> None:
    train = [
        {"id": "t1", "task": "vqa", "multiple_choice_answer": "yes"},
        {"id": "t2", "task": "vqa", "multiple_choice_answer": "yes"},
        {"id": "t3", "task": "classify", "multiple_choice_answer": "cup"},
        # Boxes and captions are no answers: three equal boxes must not become the majority.
        *({"id": f"b{i}", "task": "ground", "multiple_choice_answer": "[0, 0, 1, 1]"} for i in range(3)),
        {"id": "k1", "task": "caption", "caption": "a cup"},
    ]
    assert majority_baseline_for("vqa.accuracy", train, VQA + CLASSIFY) == pytest.approx(1 / 3)  # "yes" on v3
    assert majority_baseline_for("exact_match.accuracy", train, EXACT + GROUND) == 0.0
    cups = [{"id": "t4", "task": "vqa", "multiple_choice_answer": "cup"}] * 2
    assert majority_baseline_for("exact_match.accuracy", train + cups, EXACT) == 0.5  # "cup" on e2
    assert majority_baseline_for("caption.CIDEr", train, []) is None
    assert majority_baseline_for("ground.accuracy@0.5", train, GROUND) is None
