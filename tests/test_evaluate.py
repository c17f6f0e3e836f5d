"""Hand-computed cases for fedumm.evaluation.scores (official VQA v2 accuracy and baselines)."""

from __future__ import annotations

import pytest

from fedumm.evaluation.scores import (
    classification_accuracy,
    exact_match_accuracy,
    majority_answer,
    majority_baseline,
    normalize_answer,
    per_question_type_majority_baseline,
    score_vqa,
    vqa_question_accuracy,
)


def record(rid: str, answers: list[str], answer_type: str, qtype: str, mc: str = "") -> dict:
    return {
        "id": rid,
        "answers": [{"answer": a, "answer_id": i + 1} for i, a in enumerate(answers)],
        "answer_type": answer_type,
        "question_type": qtype,
        "multiple_choice_answer": mc,
    }


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Two", "2"),
        ("ten", "10"),
        ("none", "0"),
        ("a red car.", "red car"),
        ("The Dog", "dog"),
        ("isnt", "isn't"),
        ("dont know", "don't know"),
        ("x,y", "x y"),  # no space next to the comma: it becomes a space
        ("x, y", "x y"),  # touching a space: deleted
        ("1,000", "1000"),  # digit-comma-digit: every mark deleted
        ("1,000 t-shirts", "1000 tshirts"),
        ("t-shirt", "t shirt"),
        ("3.5", "3.5"),  # a period before a digit stays
        ("yes.", "yes"),
        ("e.g", "eg"),
        ("12:30", "12:30"),  # the colon is not in the list
        ("don't", "don't"),  # nor the apostrophe
        ("  left\tside\n", "left side"),
        ("yes!", "yes"),
        ("(a) b", "b"),
        ("." * 40, "." * 8),  # upstream strips at most 32 periods
    ],
)
def test_normalize_answer(raw: str, expected: str) -> None:
    assert normalize_answer(raw) == expected


def test_question_accuracy_leave_one_out() -> None:
    three = ["yes"] * 3 + ["no"] * 7
    # 7 subsets hold all 3 "yes" (1.0), 3 subsets hold 2 (2/3).
    assert vqa_question_accuracy("yes", three) == pytest.approx(0.9)
    two = ["yes"] * 2 + ["no"] * 8
    # 8 subsets hold 2 (2/3), 2 subsets hold 1 (1/3).
    assert vqa_question_accuracy("yes", two) == pytest.approx(0.6)
    one = ["yes"] + ["no"] * 9
    assert vqa_question_accuracy("yes", one) == pytest.approx(0.3)
    assert vqa_question_accuracy("no", three) == 1.0
    assert vqa_question_accuracy("maybe", three) == 0.0


def test_question_accuracy_normalizes_when_annotators_disagree() -> None:
    gts = ["Two", "2", "two.", "three", "3", "3", "3", "3", "3", "3"]
    assert vqa_question_accuracy("TWO!", gts) == pytest.approx(0.9)
    assert vqa_question_accuracy("the 3", gts) == 1.0


def test_question_accuracy_verbatim_when_annotators_agree() -> None:
    # Upstream skips normalization when all ten answers are identical (only whitespace is cleaned).
    assert vqa_question_accuracy("yes", ["yes"] * 10) == 1.0
    assert vqa_question_accuracy(" yes\n", ["yes"] * 10) == 1.0
    assert vqa_question_accuracy("Yes", ["yes"] * 10) == 0.0
    assert vqa_question_accuracy("yes.", ["yes"] * 10) == 0.0
    assert vqa_question_accuracy("STOP", ["STOP"] * 10) == 1.0
    # One differently cased answer makes the set size 2, so both sides are normalized.
    assert vqa_question_accuracy("Yes", ["yes"] * 9 + ["Yes"]) == 1.0


def test_question_accuracy_needs_answers() -> None:
    with pytest.raises(ValueError):
        vqa_question_accuracy("yes", [])


def test_score_vqa_per_type_and_missing() -> None:
    records = [
        record("q1", ["yes"] * 3 + ["no"] * 7, "yes/no", "is the"),
        record("q2", ["yes"] * 10, "yes/no", "is the"),
        record("q3", ["2"] * 2 + ["3"] * 8, "number", "how many"),
        record("q4", ["red"] * 4 + ["blue"] * 6, "other", "what color"),
    ]
    predictions = {"q1": "yes", "q2": "yes", "q3": "two", "extra": "ignored"}
    result = score_vqa(predictions, records)
    assert result["n"] == 4
    assert result["missing"] == 1
    assert result["accuracy"] == pytest.approx((0.9 + 1.0 + 0.6 + 0.0) / 4)
    assert result["per_answer_type"] == pytest.approx({"number": 0.6, "other": 0.0, "yes/no": 0.95})
    assert list(result["per_answer_type"]) == ["number", "other", "yes/no"]
    assert result["per_question_type"] == pytest.approx(
        {"how many": 0.6, "is the": 0.95, "what color": 0.0}
    )


def test_score_vqa_needs_records() -> None:
    with pytest.raises(ValueError):
        score_vqa({}, [])


def test_exact_and_classification_accuracy() -> None:
    references = {"a": "circle", "b": "two", "c": "red square", "d": "blue"}
    predictions = {"a": "Circle.", "b": "2", "c": "a square", "x": "blue"}
    # a and b match after normalization, c is wrong, d is missing.
    assert exact_match_accuracy(predictions, references) == 0.5
    assert classification_accuracy(predictions, references) == 0.5
    with pytest.raises(ValueError):
        exact_match_accuracy(predictions, {})


def test_majority_baselines() -> None:
    train = [
        record("t1", ["yes"] * 10, "yes/no", "is the", mc="yes"),
        record("t2", ["yes"] * 10, "yes/no", "is the", mc="yes"),
        record("t3", ["yes"] * 10, "yes/no", "is the", mc="yes"),
        record("t4", ["2"] * 10, "number", "how many", mc="2"),
        record("t5", ["2"] * 10, "number", "how many", mc="2"),
        record("t6", ["red"] * 10, "other", "what color", mc="red"),
    ]
    test = [
        record("s1", ["yes"] * 3 + ["no"] * 7, "yes/no", "is the"),
        record("s2", ["2"] * 2 + ["3"] * 8, "number", "how many"),
        record("s3", ["red"] * 10, "other", "what color"),
        record("s4", ["yes"] * 10, "other", "why"),  # type unseen in training: global answer
    ]
    assert majority_answer(train) == "yes"
    assert majority_baseline(train, test) == pytest.approx((0.9 + 0 + 0 + 1.0) / 4)
    assert per_question_type_majority_baseline(train, test) == pytest.approx(
        (0.9 + 0.6 + 1.0 + 1.0) / 4
    )


def test_chance_by_question_type_is_the_per_type_prior() -> None:
    from fedumm.evaluation.scores import chance_by_question_type

    def vqa(*args, **kwargs) -> dict:
        return record(*args, **kwargs) | {"task": "vqa"}

    train = [
        vqa("t1", ["yes"] * 10, "yes/no", "is the", mc="yes"),
        vqa("t4", ["2"] * 10, "number", "how many", mc="2"),
        vqa("t5", ["2"] * 10, "number", "how many", mc="2"),
        vqa("t6", ["3"] * 10, "number", "how many", mc="3"),
        *({"id": f"c{i}", "task": "classify", "label": label} for i, label in enumerate(["square", "circle", "circle"])),
    ]
    test = [
        vqa("s1", ["yes"] * 3 + ["no"] * 7, "yes/no", "is the"),
        vqa("s2", ["2"] * 2 + ["3"] * 8, "number", "how many"),
        vqa("s3", ["3"] * 10, "number", "how many"),
        *({"id": f"d{i}", "task": "classify", "label": label} for i, label in enumerate(["circle", "square", "cross", "circle"])),
    ]
    # "is the": always "yes" (0.9); "how many": always "2" (0.6 and 0); classify: always "circle" (2 of 4)
    assert chance_by_question_type(train, test) == {
        "per_question_type": {"is the": pytest.approx(0.9), "how many": pytest.approx(0.3)},
        "classification_accuracy": 0.5,
    }
    assert chance_by_question_type(train[:1], test[:1])["classification_accuracy"] is None


def test_majority_answer_ties_break_alphabetically() -> None:
    train = [record(str(i), ["x"], "other", "what", mc=mc) for i, mc in enumerate("bab a".split())]
    assert majority_answer(train) == "a"
    with pytest.raises(ValueError):
        majority_answer([])
