"""Box parsing, IoU and grounding scores (fedumm.evaluation.grounding)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fedumm.evaluation.grounding import box_iou, format_box, grounding_scores, parse_box


@pytest.mark.parametrize(
    ("a", "b", "iou"),
    [
        ([0, 0, 10, 10], [0, 0, 10, 10], 1.0),  # identical
        ([0, 0, 10, 10], [20, 20, 30, 30], 0.0),  # disjoint
        ([0, 0, 10, 10], [10, 0, 20, 10], 0.0),  # touching: x1 is exclusive, no shared pixel
        ([0, 0, 10, 10], [5, 0, 15, 10], 50 / 150),  # shifted by half its width
        ([0, 0, 10, 10], [0, 0, 10, 5], 50 / 100),  # contains its top half
        ([0, 0, 4, 4], [2, 2, 6, 6], 4 / 28),  # diagonal corner overlap
        ([3, 3, 3, 9], [3, 3, 3, 9], 0.0),  # both degenerate: empty union
    ],
)
def test_box_iou_hand_computed(a: list[int], b: list[int], iou: float) -> None:
    assert box_iou(a, b) == pytest.approx(iou, abs=1e-15)


@pytest.mark.parametrize("bad", [[10, 0, 0, 10], [0, 10, 10, 0], [0, 0, 10]])
def test_box_iou_rejects_unordered_or_short_boxes(bad: list[int]) -> None:
    with pytest.raises(ValueError, match="x0 <= x1"):
        box_iou(bad, [0, 0, 10, 10])


@pytest.mark.parametrize(
    "text",
    [
        "[12, 20, 30, 41]",
        "[12,20,30,41]",
        "  [ 12 ,20 , 30,41 ] ",
        "(12, 20, 30, 41)",
        "(12,20),(30,41)",
        "12 20 30 41",
        "[12, 20, 30, 41",
        "The red circle is at [12, 20, 30, 41].",
        "object 1 at [12, 20, 30, 41]",
        "box: 12; 20; 30; 41.",
        "[12, 20, 30, 41] or maybe [0, 0, 5, 5]",
        "[12, 20, 30, 41, 50]",
        "[30, 41, 12, 20]",  # corners in the other order are swapped
        "[12, 41, 30, 20]",
    ],
)
def test_parse_box_variants_of_one_box(text: str) -> None:
    assert parse_box(text, 64, 64) == (12.0, 20.0, 30.0, 41.0)


@pytest.mark.parametrize(
    ("text", "width", "height", "box"),
    [
        ("[12.5, 20, 30.25, 41]", 64, 64, (12.5, 20.0, 30.25, 41.0)),  # pixel floats
        ("[0.25, 0.5, 0.75, 1.0]", 64, 32, (16.0, 16.0, 48.0, 32.0)),  # normalized
        ("[0, 0.5, 1, 1]", 64, 32, (0.0, 16.0, 64.0, 32.0)),  # one decimal point suffices
        ("[.25, .5, .75, 1]", 64, 32, (16.0, 16.0, 48.0, 32.0)),
        ("[0, 0, 1, 1]", 64, 32, (0.0, 0.0, 1.0, 1.0)),  # integers stay pixels
        ("[-5, 10, 70, 20]", 64, 64, (0.0, 10.0, 64.0, 20.0)),  # clipped to the image
        ("[10, -3, 20, 99]", 64, 48, (10.0, 0.0, 20.0, 48.0)),
        ("[70, 70, 80, 80]", 64, 64, (64.0, 64.0, 64.0, 64.0)),  # outside: zero area
        ("[0.5, 1.5, 0.7, 0.9]", 64, 64, (0.5, 0.9, 0.7, 1.5)),  # 1.5 > 1: pixels
    ],
)
def test_parse_box_scaling_and_clipping(
    text: str, width: int, height: int, box: tuple[float, float, float, float]
) -> None:
    assert parse_box(text, width, height) == box


@pytest.mark.parametrize(
    "text",
    [
        "",
        "no box here",
        "[12, 20, 30]",
        "x0=12 y0=20 x1=30 y1=41",  # words between the numbers
        "12px 20px 30px 41px",
        "w3 12 20 30",  # the 3 belongs to a word
        "v1.5 [1, 2, 3]",
        "12-20-30-41",
        "[1e2, 20, 30, 41]",  # exponents are not read
    ],
)
def test_parse_box_malformed(text: str) -> None:
    assert parse_box(text, 64, 64) is None


def test_grounding_scores_hand_computed() -> None:
    boxes = {
        "exact": [12, 20, 30, 41],
        "half": [0, 0, 10, 10],
        "top": [0, 0, 10, 10],
        "junk": [5, 5, 9, 9],
        "normalized": [16, 16, 48, 32],
    }
    predictions = {
        "exact": "[12, 20, 30, 41]",
        "half": "the box is (5, 0, 15, 10)",  # IoU 1/3
        "top": "[0, 0, 10, 5]",  # IoU exactly 0.5: counts at threshold 0.5
        "junk": "I cannot see it",
        "normalized": "[0.25, 0.5, 0.75, 1.0]",
    }
    sizes = {"exact": (64, 64), "half": (64, 64), "top": (64, 64), "junk": (64, 64),
             "normalized": (64, 32), "unused": (8, 8)}
    scores = grounding_scores(predictions, boxes, sizes)
    assert scores == {
        "mean_iou": pytest.approx((1 + 1 / 3 + 0.5 + 0 + 1) / 5),
        "accuracy@0.5": pytest.approx(3 / 5),
        "malformed": 1,
        "n": 5,
    }
    loose = grounding_scores(predictions, boxes, sizes, threshold=0.3)
    strict = grounding_scores(predictions, boxes, sizes, threshold=0.75)
    assert loose["accuracy@0.3"] == pytest.approx(4 / 5)
    assert strict["accuracy@0.75"] == pytest.approx(2 / 5)


def test_grounding_scores_rejects_mismatched_ids() -> None:
    boxes = {"a": [0, 0, 4, 4], "b": [1, 1, 3, 3]}
    sizes = {"a": (8, 8), "b": (8, 8)}
    with pytest.raises(ValueError, match=r"no prediction for \['b'\]"):
        grounding_scores({"a": "[0, 0, 4, 4]"}, boxes, sizes)
    with pytest.raises(ValueError, match=r"no box for \['c'\]"):
        grounding_scores({"a": "", "b": "", "c": ""}, boxes, sizes)
    with pytest.raises(ValueError, match=r"no image size for \['b'\]"):
        grounding_scores({"a": "", "b": ""}, boxes, {"a": (8, 8)})
    with pytest.raises(ValueError, match="no ground-truth boxes"):
        grounding_scores({}, {}, {})


_coordinate = st.floats(min_value=-1e4, max_value=1e4, allow_nan=False, allow_infinity=False)


@st.composite
def _boxes(draw: st.DrawFn) -> tuple[float, float, float, float]:
    x0, x1 = sorted((draw(_coordinate), draw(_coordinate)))
    y0, y1 = sorted((draw(_coordinate), draw(_coordinate)))
    return (x0, y0, x1, y1)


@given(_boxes(), _boxes())
def test_box_iou_symmetric_and_bounded(a: tuple[float, ...], b: tuple[float, ...]) -> None:
    iou = box_iou(a, b)
    assert iou == box_iou(b, a)
    assert 0.0 <= iou <= 1.0


@given(st.text(alphabet=st.sampled_from("0123456789.,-+[]() abx\n"), max_size=40),
       st.integers(1, 512), st.integers(1, 512))
def test_parse_box_result_is_an_ordered_box_inside_the_image(
    text: str, width: int, height: int
) -> None:
    box = parse_box(text, width, height)
    if box is not None:
        x0, y0, x1, y1 = box
        assert 0 <= x0 <= x1 <= width
        assert 0 <= y0 <= y1 <= height


def test_format_box_writes_the_answer_format_that_parse_box_reads() -> None:
    assert format_box([12, 20, 30, 41]) == "[12, 20, 30, 41]"
    assert format_box((0.0, 4.0, 8.0, 9.0)) == "[0, 4, 8, 9]"
    assert parse_box(format_box([12, 20, 30, 41]), 64, 64) == (12.0, 20.0, 30.0, 41.0)
    for bad in ([1, 2, 3], [0.5, 0, 4, 4]):
        with pytest.raises(ValueError, match="four integer pixel coordinates"):
            format_box(bad)
