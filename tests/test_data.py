"""Tests for fedumm.data: the synthetic shapes dataset and its webdataset shards."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import webdataset as wds

from fedumm.data import shapes, shapes_world, shards

SPLITS = {"train": 60, "val": 10, "test": 20}
SHARD_SIZE = 25
SEED = 3


def _paths(out_dir: Path, split: str, n: int) -> list[Path]:
    return shards.shard_paths(out_dir, split, n, SHARD_SIZE)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out_dir = tmp_path_factory.mktemp("shapes")
    card = shapes.generate_shapes(out_dir, SPLITS, seed=SEED, shard_size=SHARD_SIZE)
    return out_dir, card


@pytest.fixture(scope="module")
def records(dataset: tuple[Path, dict]) -> dict[str, list[dict]]:
    out_dir, _ = dataset
    return {split: shards.read_records(_paths(out_dir, split, n)) for split, n in SPLITS.items()}


def test_shard_paths_names_and_count() -> None:
    names = [p.name for p in shards.shard_paths(Path("d"), "train", 2001, 1000)]
    assert names == ["train-00000.tar", "train-00001.tar", "train-00002.tar"]
    assert shards.shard_paths(Path("d"), "val", 1000, 1000) == [Path("d/val-00000.tar")]
    # An empty split still has one (empty) shard to declare as an output.
    assert shards.shard_paths(Path("d"), "val", 0, 1000) == [Path("d/val-00000.tar")]


def test_generate_writes_exactly_the_declared_files(dataset: tuple[Path, dict]) -> None:
    out_dir, card = dataset
    expected = {"card.json"} | {p.name for s, n in SPLITS.items() for p in _paths(out_dir, s, n)}
    # No leftover temporary files from the atomic writes.
    assert {p.name for p in out_dir.iterdir()} == expected
    assert card["shards"]["train"] == ["train-00000.tar", "train-00001.tar", "train-00002.tar"]


def test_counts_per_split(dataset: tuple[Path, dict], records: dict[str, list[dict]]) -> None:
    _, card = dataset
    assert card["num_samples"] == SPLITS
    for split, n in SPLITS.items():
        assert len(records[split]) == n
        assert [r["id"] for r in records[split]] == [f"shapes-{split}-{i:06d}" for i in range(n)]
        for field in shards.CARD_FIELDS:
            assert sum(card["value_counts"][split][field].values()) == n
        assert card["value_counts"][split]["label"] == dict(sorted(Counter(r["label"] for r in records[split]).items()))


def test_card_json_matches_returned_card(dataset: tuple[Path, dict]) -> None:
    out_dir, card = dataset
    assert json.loads((out_dir / "card.json").read_text()) == card


def test_same_seed_gives_identical_bytes(tmp_path: Path, dataset: tuple[Path, dict]) -> None:
    out_dir, _ = dataset
    shapes.generate_shapes(tmp_path, SPLITS, seed=SEED, shard_size=SHARD_SIZE)
    for path in sorted(out_dir.iterdir()):
        assert (tmp_path / path.name).read_bytes() == path.read_bytes(), path.name


def test_different_seed_gives_different_shards(tmp_path: Path, dataset: tuple[Path, dict]) -> None:
    out_dir, _ = dataset
    shapes.generate_shapes(tmp_path, {"train": 25}, seed=SEED + 1, shard_size=SHARD_SIZE)
    assert (tmp_path / "train-00000.tar").read_bytes() != (out_dir / "train-00000.tar").read_bytes()


def test_resizing_test_split_leaves_train_unchanged(
    tmp_path: Path, dataset: tuple[Path, dict], records: dict[str, list[dict]]
) -> None:
    out_dir, _ = dataset
    shapes.generate_shapes(tmp_path, {**SPLITS, "test": 35}, seed=SEED, shard_size=SHARD_SIZE)
    for path in _paths(out_dir, "train", SPLITS["train"]) + _paths(out_dir, "val", SPLITS["val"]):
        assert (tmp_path / path.name).read_bytes() == path.read_bytes(), path.name
    # Samples are a function of (seed, split, index): the smaller split is a prefix.
    bigger = shards.read_records(_paths(tmp_path, "test", 35))
    assert bigger[: SPLITS["test"]] == records["test"]


def test_record_schema(records: dict[str, list[dict]]) -> None:
    all_records = [r for rs in records.values() for r in rs]
    question_ids = [r["question_id"] for r in all_records]
    assert len(set(question_ids)) == len(question_ids)
    for split, rs in records.items():
        for r in rs:
            assert set(r) == shards.RECORD_KEYS
            assert r["split"] == split
            assert r["task"] in ("vqa", "classify")
            assert r["answer_type"] in ("yes/no", "number", "other")
            assert r["question"].endswith(" ?") and r["question"] == r["question"].lower()
            assert r["question"].startswith(r["question_type"] + " ")
            assert [a["answer_id"] for a in r["answers"]] == list(range(1, 11))
            assert r["label"] == r["objects"][0]["shape"]
            assert r["box"] == r["objects"][0]["box"]
            assert r["box_shape"] == f"{r['objects'][0]['color']} {r['objects'][0]['shape']}"
            assert r["domain"] in shapes_world.DOMAINS
            assert 1 <= len(r["objects"]) <= 3
            assert len({o["position"] for o in r["objects"]}) == len(r["objects"])


def test_answers_are_noisy_but_majority_is_true(records: dict[str, list[dict]]) -> None:
    n_wrong = []
    for r in records["train"]:
        correct = [a for a in r["answers"] if a["answer"] == r["multiple_choice_answer"]]
        wrong = [a for a in r["answers"] if a["answer"] != r["multiple_choice_answer"]]
        assert all(a["answer_confidence"] == "yes" for a in correct)
        assert all(a["answer_confidence"] == "maybe" for a in wrong)
        n_wrong.append(len(wrong))
    assert set(n_wrong) == {0, 1, 2, 3}


def test_answers_are_true_for_the_question(records: dict[str, list[dict]]) -> None:
    kinds = set()
    for r in records["train"] + records["test"]:
        main, answer = r["objects"][0], r["multiple_choice_answer"]
        if r["task"] == "classify":
            assert (r["question"], answer) == ("what is the main shape ?", r["label"])
        elif r["question_type"] == "what color is the":
            assert r["question"] == f"what color is the {main['shape']} ?" and answer == main["color"]
        elif r["question_type"] == "what shape is":
            assert r["question"] == f"what shape is the {main['color']} object ?" and answer == main["shape"]
        elif r["question_type"] == "where is the":
            assert r["question"] == f"where is the {main['shape']} ?" and answer == main["position"]
        elif r["question_type"] == "how many":
            assert r["question"] == "how many shapes are there ?" and answer == str(len(r["objects"]))
        elif r["answer_type"] == "yes/no":
            words = r["question"].split()
            present = any(o["color"] == words[3] and o["shape"] == words[4] for o in r["objects"])
            assert answer == ("yes" if present else "no")
        else:
            pytest.fail(f"unexpected question type {r['question_type']!r}")
        kinds.add(r["question_type"])
    assert kinds >= {"what is the main", "what color is the", "what shape is", "where is the", "how many", "is there a"}


def test_main_object_is_unique_and_largest(records: dict[str, list[dict]]) -> None:
    for r in records["train"]:
        main, others = r["objects"][0], r["objects"][1:]
        assert all(o["shape"] != main["shape"] and o["color"] != main["color"] for o in others)
        size = main["box"][2] - main["box"][0]
        assert all(o["box"][2] - o["box"][0] <= size for o in others)
        assert 14 <= size <= 18


def test_image_shows_the_described_colours(dataset: tuple[Path, dict]) -> None:
    out_dir, _ = dataset
    palette = np.array(list(shapes_world.COLORS.values()), dtype=float)
    for sample in shards.read_samples(_paths(out_dir, "train", SPLITS["train"])):
        pixels = np.asarray(sample["image"], dtype=float)
        assert pixels.shape == (64, 64, 3)
        background = np.ones(pixels.shape[:2], dtype=bool)
        for obj in sample["objects"]:
            x0, y0, x1, y1 = obj["box"]
            assert 0 <= x0 < x1 <= 64 and 0 <= y0 < y1 <= 64
            cx, cy = (x0 + x1) // 2, (y0 + y1) // 2
            centre = pixels[cy - 1 : cy + 2, cx - 1 : cx + 2].reshape(-1, 3)
            assert np.all(centre == shapes_world.COLORS[obj["color"]]), (sample["id"], obj)
            background[y0:y1, x0:x1] = False
        # Every background pixel is far from every shape colour.
        distances = np.linalg.norm(pixels[background][:, None, :] - palette[None], axis=2)
        assert distances.min() > 80, sample["id"]


def test_read_samples_filters_by_id(dataset: tuple[Path, dict], records: dict[str, list[dict]]) -> None:
    out_dir, _ = dataset
    wanted = {"shapes-test-000003", "shapes-test-000017"}
    samples = shards.read_samples(_paths(out_dir, "test", SPLITS["test"]), ids=wanted)
    assert [s["id"] for s in samples] == ["shapes-test-000003", "shapes-test-000017"]
    assert samples[0]["image"].mode == "RGB"
    assert {k: v for k, v in samples[1].items() if k != "image"} == records["test"][17]


def test_webdataset_reads_the_shards(dataset: tuple[Path, dict], records: dict[str, list[dict]]) -> None:
    out_dir, _ = dataset
    urls = [str(p) for p in _paths(out_dir, "train", SPLITS["train"])]
    samples = list(wds.WebDataset(urls, shardshuffle=False).decode("pil"))
    assert [s["__key__"] for s in samples] == [r["id"] for r in records["train"]]
    assert samples[5]["json"] == records["train"][5]
    assert samples[5]["png"].size == (64, 64)


def test_make_sample_is_deterministic_and_balanced() -> None:
    first, image = shapes.make_sample("train", 7, seed=11)
    again, image_again = shapes.make_sample("train", 7, seed=11)
    assert first == again and image.tobytes() == image_again.tobytes()
    assert shapes.make_sample("val", 7, seed=11)[0]["objects"] != first["objects"]
    records = [shapes.make_sample("bal", i, seed=0)[0] for i in range(600)]
    yes_no = [r["multiple_choice_answer"] for r in records if r["answer_type"] == "yes/no"]
    assert 0.35 < yes_no.count("yes") / len(yes_no) < 0.65
    assert 0.10 < sum(r["task"] == "classify" for r in records) / len(records) < 0.20
    assert set(r["domain"] for r in records) == set(shapes_world.DOMAINS)
    assert set(r["label"] for r in records) == set(shapes_world.SHAPES)
    never = [shapes.make_sample("x", i, 0, classify_fraction=0.0)[0]["task"] for i in range(50)]
    assert set(never) == {"vqa"}


def test_caption_groups_repeated_objects() -> None:
    objects = [
        {"shape": "circle", "color": "red", "position": "top left", "box": [0, 0, 1, 1]},
        {"shape": "square", "color": "blue", "position": "center", "box": [0, 0, 1, 1]},
        {"shape": "square", "color": "blue", "position": "bottom right", "box": [0, 0, 1, 1]},
    ]
    assert shapes.caption_for(objects, "stripes") == (
        "a red circle at the top left and two blue squares on a striped background"
    )
    assert shapes.caption_for(objects[:1], "noise") == "a red circle at the top left on a noisy background"


def test_most_frequent_answer_breaks_ties_towards_truth() -> None:
    answers = [{"answer": a} for a in ["red"] * 5 + ["blue"] * 5]
    assert shapes.most_frequent_answer(answers, "blue") == "blue"
    assert shapes.most_frequent_answer(answers, "green") == "blue"
    assert shapes.most_frequent_answer([{"answer": "no"}] * 7 + [{"answer": "yes"}] * 3, "yes") == "no"


def test_vocabulary_is_small_and_covers_records(records: dict[str, list[dict]]) -> None:
    vocab = shards.vocabulary(records["train"])
    assert vocab == sorted(set(vocab))
    assert len(vocab) < 150
    assert {"?", "what", "color", "circle", "top", "left", "background"} <= set(vocab)
    record = {
        "question": "is there a red circle ?",
        "caption": "a red circle",
        "label": "circle",
        "answers": [{"answer": "top left"}],
    }
    assert shards.vocabulary([record]) == ["?", "a", "circle", "is", "left", "red", "there", "top"]


def test_majority_answer() -> None:
    records = [{"multiple_choice_answer": a} for a in ["yes", "no", "yes", "2", "no"]]
    assert shards.majority_answer(records) == "no"  # tie between "no" and "yes": alphabetical
    assert shards.majority_answer(records + [{"multiple_choice_answer": "yes"}]) == "yes"
    with pytest.raises(ValueError, match="records"):
        shards.majority_answer([])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"splits": {"test": -1}}, r"splits\['test'\]"),
        ({"splits": {}}, "splits"),
        ({"splits": {"tr-ain": 5}}, "split name"),
        ({"image_size": 16}, "image_size"),
        ({"shard_size": 0}, "shard_size"),
        ({"seed": -1}, "seed"),
        ({"classify_fraction": 1.5}, "classify_fraction"),
    ],
)
def test_generate_rejects_bad_arguments(tmp_path: Path, kwargs: dict, message: str) -> None:
    arguments = {"out_dir": tmp_path, "splits": {"train": 2}, "seed": 0, **kwargs}
    with pytest.raises(ValueError, match=message):
        shapes.generate_shapes(**arguments)
    assert list(tmp_path.iterdir()) == []


def test_generate_records_cover_every_geneval_skill_and_their_images_satisfy_the_prompt() -> None:
    from fedumm.data.geneval import SKILLS
    from fedumm.evaluation.geneval import detect, evaluate_image

    samples = [shapes.make_sample("train", i, seed=3, generate_fraction=0.5) for i in range(200)]
    generated = [(record, image) for record, image in samples if record["task"] == "generate"]
    assert 70 < len(generated) < 130
    assert {record["geneval"]["tag"] for record, _ in generated} == set(SKILLS)
    for record, image in generated:
        assert set(record) == {"id", "split", "task", "prompt", "geneval", "label", "domain", "objects"}
        assert record["prompt"] == record["geneval"]["prompt"]
        assert evaluate_image(detect(image), record["geneval"]) == (True, ""), record["prompt"]
    counts = [record["geneval"]["include"][0]["count"] for record, _ in generated if record["geneval"]["tag"] == "counting"]
    assert set(counts) == {2, 3, 4}
    # Without generation records no draw is spent on them: the data is that of a dataset without the key.
    assert shapes.make_sample("train", 5, seed=3, generate_fraction=0.0)[0] == shapes.make_sample("train", 5, seed=3)[0]
    with pytest.raises(ValueError, match="generate_fraction must be in"):
        shapes.generate_shapes(Path("unused"), {"train": 1}, seed=0, generate_fraction=1.0)
