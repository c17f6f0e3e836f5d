"""Tests for fedumm.partition.embeddings: record text, tokenizer, tiny CLIP/SigLIP embedders and the file format."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open

from fedumm.data import shards
from fedumm.data.shapes import generate_shapes
from fedumm.partition import embeddings as E

CPU = torch.device("cpu")
TOWER = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2}
TINY_CLIP = {
    "config": {
        "model_type": "clip",
        "projection_dim": 16,
        "vision_config": {**TOWER, "image_size": 32, "patch_size": 16},
        "text_config": {**TOWER, "vocab_size": 256, "max_position_embeddings": 24},
    },
    "batch_size": 3,
}
TINY_SIGLIP = {
    "config": {
        "model_type": "siglip",
        "vision_config": {**TOWER, "image_size": 32, "patch_size": 16},
        "text_config": {**TOWER, "vocab_size": 256, "max_position_embeddings": 12},
    },
}


@pytest.fixture(scope="module")
def shapes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 7-sample train split in shards of 3 (so batches cross shard boundaries) and an empty val split."""
    out = tmp_path_factory.mktemp("shapes") / "shapes"
    generate_shapes(out, {"train": 7, "val": 0}, seed=0, image_size=32, shard_size=3)
    return out


def _embed(spec: dict, shapes: Path, out: Path, split: str = "train") -> E.Embeddings:
    E.embed_split(spec, shards.split_shards(shapes, split), out, CPU)
    return E.load_embeddings(out)


def test_record_text_sources() -> None:
    record = {"question": "what color is the circle ?", "caption": "a red circle on a plain background"}
    assert E.record_text(record, "question") == "what color is the circle ?"
    assert E.record_text(record, "caption") == "a red circle on a plain background"
    assert E.record_text(record) == "what color is the circle ? a red circle on a plain background"
    # Without a caption every source falls back to the question.
    assert {E.record_text({"question": "q ?"}, s) for s in E.TEXT_SOURCES} == {"q ?"}
    with pytest.raises(ValueError, match="`text`.*'answer'"):
        E.record_text(record, "answer")


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"config": {"model_type": "clip"}, "id": "x"}, "exactly one of `id` or `config`"),
        ({}, "exactly one of `id` or `config`"),
        ({"config": {"model_type": "llama"}}, r"clip_b\.config\.model_type.*'llama'"),
        ({"id": "x", "text": "answer"}, r"clip_b\.text"),
        ({"id": "x", "batch_size": 0}, r"clip_b\.batch_size.*>= 1"),
        ({"id": "x", "seed": -1}, r"clip_b\.seed"),
        ({"id": "x", "dtype": "bf16"}, r"unknown keys \['dtype'\]"),
    ],
)
def test_validate_spec_names_the_key(spec: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        E.validate_spec(spec, "clip_b")


def test_validate_spec_defaults() -> None:
    assert E.validate_spec({"id": "x"}) == {"id": "x", "text": "question_caption", "seed": 0, "batch_size": 64}


def test_hashing_tokenizer() -> None:
    tokenize = E.HashingTokenizer(vocab_size=50, max_length=4, pad_to_max=False)
    out = tokenize(["Red circle", "a b c d e f", "red"])
    ids, mask = out["input_ids"], out["attention_mask"]
    assert ids.shape == (3, 4)
    # Words are case-insensitive; every row ends in eos (= 49, the largest id); long rows are cut to fit it.
    assert ids[0, 0] == ids[2, 0] and ids[0, 2] == 49 and ids[2, 1] == 49 and ids[1, 3] == 49
    assert mask.tolist() == [[1, 1, 1, 0], [1, 1, 1, 1], [1, 1, 0, 0]]
    assert ((ids[mask == 1] >= 1) & (ids[mask == 1] <= 49)).all() and (ids[mask == 0] == 0).all()
    assert torch.equal(tokenize(["Red circle", "a b c d e f", "red"])["input_ids"], ids)
    assert E.HashingTokenizer(50, 6, pad_to_max=True)(["red"])["input_ids"].shape == (1, 6)


def test_tiny_clip_embeddings_shapes_keys_normalised_and_deterministic(shapes: Path, tmp_path: Path) -> None:
    first = _embed(TINY_CLIP, shapes, tmp_path / "a.safetensors")
    records = shards.read_records(shards.split_shards(shapes, "train"))
    assert first.ids == [r["id"] for r in records]
    assert first.image.shape == first.text.shape == (7, 16)
    assert first.image.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(first.image, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(first.text, axis=1), 1.0, atol=1e-5)
    with safe_open(str(tmp_path / "a.safetensors"), framework="pt") as handle:
        assert set(handle.keys()) == {"ids", "image", "text"}
        assert json.loads(handle.metadata()["fedumm"]) == {"spec": E.validate_spec(TINY_CLIP), "normalised": True}

    # Same spec, same bytes; another seed, other weights.
    _embed(TINY_CLIP, shapes, tmp_path / "b.safetensors")
    assert (tmp_path / "a.safetensors").read_bytes() == (tmp_path / "b.safetensors").read_bytes()
    other = _embed({**TINY_CLIP, "seed": 1}, shapes, tmp_path / "c.safetensors")
    assert not np.allclose(other.image, first.image)
    # Distinct images and texts get distinct embeddings.
    assert len({tuple(np.round(row, 5)) for row in first.image}) == 7


def test_batch_size_does_not_change_the_embeddings(shapes: Path, tmp_path: Path) -> None:
    small = _embed(TINY_CLIP, shapes, tmp_path / "small.safetensors")
    whole = _embed({**TINY_CLIP, "batch_size": 64}, shapes, tmp_path / "whole.safetensors")
    np.testing.assert_allclose(small.image, whole.image, atol=1e-5)
    np.testing.assert_allclose(small.text, whole.text, atol=1e-5)


def test_text_source_changes_only_the_text_embeddings(shapes: Path, tmp_path: Path) -> None:
    both = _embed(TINY_CLIP, shapes, tmp_path / "both.safetensors")
    question = _embed({**TINY_CLIP, "text": "question"}, shapes, tmp_path / "question.safetensors")
    np.testing.assert_array_equal(both.image, question.image)
    assert not np.allclose(both.text, question.text)


def test_tiny_siglip_embeddings(shapes: Path, tmp_path: Path) -> None:
    out = _embed(TINY_SIGLIP, shapes, tmp_path / "siglip.safetensors")
    assert out.image.shape == out.text.shape == (7, 32)
    np.testing.assert_allclose(np.linalg.norm(out.text, axis=1), 1.0, atol=1e-5)


def test_empty_split_gives_a_loadable_file(shapes: Path, tmp_path: Path) -> None:
    out = _embed(TINY_CLIP, shapes, tmp_path / "val.safetensors", split="val")
    assert out.ids == [] and out.image.shape[0] == out.text.shape[0] == 0
    image, text = out.rows([])
    assert image.shape[0] == text.shape[0] == 0


def test_rows_by_id(tmp_path: Path) -> None:
    image, text = torch.eye(3), torch.eye(3).flip(0)
    E.write_embeddings(tmp_path / "e.safetensors", ["a", "b", "c"], image, text, {"spec": {"id": "x"}})
    loaded = E.load_embeddings(tmp_path / "e.safetensors")
    rows_image, rows_text = loaded.rows(["c", "a"])
    np.testing.assert_array_equal(rows_image, [[0, 0, 1], [1, 0, 0]])
    np.testing.assert_array_equal(rows_text, [[1, 0, 0], [0, 0, 1]])
    with pytest.raises(KeyError, match="1 sample id.*'z'"):
        loaded.rows(["a", "z"])
    with pytest.raises(ValueError, match="differ in length"):
        E.write_embeddings(tmp_path / "f.safetensors", ["a"], image, text, {})


def test_default_config_embedder_is_valid(default_config: dict) -> None:
    spec = copy.deepcopy(default_config["embedders"]["clip_tiny"])
    assert E.validate_spec(spec, "clip_tiny")["text"] == "question_caption"
    config = E.inline_config(spec["config"])
    assert config.model_type == "clip" and config.text_config.eos_token_id == config.text_config.vocab_size - 1
