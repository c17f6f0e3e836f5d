"""Records -> training examples by task, and image sizes of the visual source (fedumm.models.batches)."""

from __future__ import annotations

import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from fedumm.data import shapes, shards
from fedumm.models.batches import (
    VisualSource,
    build_examples,
    caption_references,
    prompt_question,
    shuffled_batches,
    steps_for,
    targets_of,
)
from fedumm.models.text import IGNORE_INDEX, build_wordlevel_tokenizer


@pytest.fixture(scope="module")
def tokenizer():
    return build_wordlevel_tokenizer(["what shape is it ? where is the red circle", "circle two shapes", "[0, 4, 12, 20]"])


def shapes_records(n: int) -> list[dict]:
    return [shapes.make_sample("test", i, seed=0, classify_fraction=0.5)[0] for i in range(n)]


def target_text(tokenizer, example: dict) -> str:
    """The supervised tokens of an example (eos dropped), decoded."""
    target = [t for t in example["labels"] if t != IGNORE_INDEX][:-1]
    return tokenizer.decode(target)


def prompt_text(tokenizer, example: dict) -> str:
    return tokenizer.decode([t for t, label in zip(example["input_ids"], example["labels"]) if label == IGNORE_INDEX][1:])


CAPTION = {"id": "c", "task": "caption", "captions": ["two shapes", "the circle"]}
GROUND = {"id": "g", "task": "ground", "question": "where is the red circle ?",
          "multiple_choice_answer": "[0, 4, 12, 20]", "box": [0, 4, 12, 20]}


def test_vqa_and_classify_records_train_exactly_as_before(tokenizer) -> None:
    records = shapes_records(12)
    assert {r["task"] for r in records} == {"vqa", "classify"}
    # The shapes demo's clients trained with tasks=["vqa"]; the per-record default is the same.
    assert build_examples(records, tokenizer) == build_examples(records, tokenizer, ["vqa"])
    assert [e["id"] for e in build_examples(records, tokenizer)] == [r["id"] for r in records]


def test_each_record_trains_on_its_own_task(tokenizer) -> None:
    examples = build_examples([CAPTION, GROUND], tokenizer)
    assert [e["id"] for e in examples] == ["c", "c", "g"]  # one example per reference caption
    assert [prompt_text(tokenizer, e) for e in examples] == [
        "caption :", "caption :", "question : where is the red circle ? answer :"
    ]
    assert [target_text(tokenizer, e) for e in examples] == ["two shapes", "the circle", "[ 0 , 4 , 12 , 20 ]"]
    assert all(e["labels"][-1] == tokenizer.eos_token_id for e in examples)


def test_caption_pretraining_uses_every_records_caption(tokenizer) -> None:
    records = shapes_records(3)
    examples = build_examples(records, tokenizer, ["caption"])
    assert [e["id"] for e in examples] == [r["id"] for r in records]
    assert all(prompt_text(tokenizer, e) == "caption :" for e in examples)
    assert targets_of(records[0], "caption") == [(None, records[0]["caption"])]
    both = build_examples(records[:1], tokenizer, ["caption", "vqa"])
    assert len(both) == 2 and prompt_text(tokenizer, both[1]).startswith("question :")


def test_references_and_prompts() -> None:
    assert caption_references(CAPTION) == ["two shapes", "the circle"]
    assert caption_references({"id": "x", "task": "caption", "caption": "one"}) == ["one"]
    assert prompt_question(CAPTION) is None
    assert prompt_question(GROUND) == "where is the red circle ?"


@pytest.mark.parametrize(
    ("record", "tasks", "message"),
    [
        ({"id": "r1", "task": "detect"}, None, r"record 'r1': task 'detect' is not one of"),
        ({"id": "r2"}, None, r"record 'r2': task None"),
        ({"id": "r3", "task": "caption"}, None, r"record 'r3': needs reference captions"),
        ({"id": "r4", "task": "caption", "captions": []}, None, r"record 'r4': needs reference captions"),
        (CAPTION, ["vqa"], r"record 'c' \(task 'caption'\) has no question, multiple_choice_answer to train on task 'vqa'"),
        (GROUND, ["detect"], r"unknown training task 'detect'"),
    ],
)
def test_bad_records_name_the_culprit(tokenizer, record: dict, tasks, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build_examples([record], tokenizer, tasks)


def test_image_sizes_from_images_and_from_cached_features(tmp_path) -> None:
    samples = [
        ({"id": "a"}, Image.new("RGB", (40, 32))),
        ({"id": "b"}, Image.new("RGB", (48, 36))),
    ]
    shard = tmp_path / "test-00000.tar"
    shards.write_shard(shard, samples)
    from_images = VisualSource([shard], {"a", "b"}, transform=lambda image: torch.zeros(3, 2, 2))
    assert from_images.image_sizes({"a", "b"}) == {"a": (40, 32), "b": (48, 36)}
    feature_file = tmp_path / "test.safetensors"
    save_file({"a": torch.zeros(4, 8), "b": torch.ones(4, 8)}, str(feature_file))
    from_features = VisualSource([shard], {"a", "b"}, feature_file=feature_file)
    assert from_features.sizes == {}  # images are read only when sizes are asked for
    assert from_features.image_sizes({"b"}) == {"b": (48, 36)}
    with pytest.raises(KeyError, match="no image for 1 sample"):
        from_features.image_sizes({"zz"})


def test_zero_examples_stop_with_an_error_instead_of_looping() -> None:
    # shuffled_batches(0, ...) used to loop forever: every pass over nothing yielded no batch.
    with pytest.raises(ValueError, match=r"no training examples to draw 1 batches.*partition.min_size >= 1"):
        next(shuffled_batches(0, 16, 1, 0))
    with pytest.raises(ValueError, match="batch_size must be at least 1, got 0"):
        next(shuffled_batches(5, 0, 1, 0))
    with pytest.raises(ValueError, match=r"no training examples: a client without data cannot train"):
        steps_for(0, 16, 2.0, None)
    with pytest.raises(ValueError, match=r"no training examples"):
        steps_for(0, 16, 2.0, 5)
    assert [len(b) for b in shuffled_batches(3, 2, 4, 0)] == [2, 1, 2, 1]
    assert steps_for(33, 16, 1.0, None) == 3 and steps_for(1, 16, 0.1, None) == 1
