"""Tests for fedumm.partition (and the atomic writers of fedumm.io it relies on)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedumm import io as fio
from fedumm.partition import heterogeneity, schemes
from fedumm.partition.files import write_partition


def _balanced_labels(n_per_label: int, values: str = "abcde") -> list[str]:
    return [v for _ in range(n_per_label) for v in values]


def _assert_exact_cover(parts: list[list[int]], n: int) -> None:
    assert all(part == sorted(part) for part in parts)
    assert sorted(i for part in parts for i in part) == list(range(n))


@settings(max_examples=40, deadline=None)
@given(
    n_train=st.integers(10, 150),
    n_test=st.integers(0, 60),
    num_clients=st.integers(1, 8),
    scheme=st.sampled_from(schemes.LABEL_SCHEMES),
    alpha=st.floats(0.05, 100.0),
    seed=st.integers(0, 2**32 - 1),
    n_values=st.integers(1, 6),
)
def test_every_sample_is_assigned_exactly_once(n_train, n_test, num_clients, scheme, alpha, seed, n_values) -> None:
    rng = np.random.default_rng(seed)
    split_labels = {
        "train": [str(v) for v in rng.integers(0, n_values, size=n_train)],
        "test": [str(v) for v in rng.integers(0, n_values, size=n_test)],
    }
    parts = schemes.partition_splits(split_labels, scheme, num_clients, seed, alpha, min_size=0)
    assert set(parts) == {"train", "test"}
    for split, labels in split_labels.items():
        assert len(parts[split]) == num_clients
        _assert_exact_cover(parts[split], len(labels))
    assert parts == schemes.partition_splits(split_labels, scheme, num_clients, seed, alpha, min_size=0)


@settings(max_examples=30, deadline=None)
@given(n=st.integers(0, 200), num_clients=st.integers(1, 12), seed=st.integers(0, 1000))
def test_iid_partition_is_near_equal(n, num_clients, seed) -> None:
    parts = schemes.iid_partition(n, num_clients, seed)
    _assert_exact_cover(parts, n)
    sizes = [len(p) for p in parts]
    assert max(sizes) - min(sizes) <= 1


def test_iid_partition_concrete() -> None:
    parts = schemes.iid_partition(10, 3, seed=0)
    assert [len(p) for p in parts] == [4, 3, 3]
    assert parts == schemes.iid_partition(10, 3, seed=0)
    assert parts != schemes.iid_partition(10, 3, seed=1)


def test_same_seed_same_dirichlet_partition_and_different_seed_differs() -> None:
    labels = {"train": _balanced_labels(40), "val": _balanced_labels(8)}
    first = schemes.partition_splits(labels, "dirichlet", 4, seed=5, alpha=0.5, min_size=5)
    assert first == schemes.partition_splits(labels, "dirichlet", 4, seed=5, alpha=0.5, min_size=5)
    assert first != schemes.partition_splits(labels, "dirichlet", 4, seed=6, alpha=0.5, min_size=5)
    # The result does not depend on the order of the splits in the dict.
    assert first == schemes.partition_splits({"val": labels["val"], "train": labels["train"]}, "dirichlet", 4, 5, 0.5, 5)


def test_large_alpha_approaches_global_distribution_small_alpha_is_skewed() -> None:
    labels = _balanced_labels(400)
    near_iid = schemes.dirichlet_partition({"train": labels}, 5, alpha=1e5, min_size=1, seed=0)["train"]
    skewed = schemes.dirichlet_partition({"train": labels}, 5, alpha=0.05, min_size=1, seed=0)["train"]
    _, near_counts = heterogeneity.label_counts(labels, near_iid)
    _, skewed_counts = heterogeneity.label_counts(labels, skewed)
    assert heterogeneity.js_divergence_heterogeneity(near_counts) < 0.01
    assert heterogeneity.js_divergence_heterogeneity(skewed_counts) > 0.5
    # With alpha -> infinity each client gets ~1/5 of every label (400 / 5 = 80).
    assert np.abs(near_counts - 80).max() <= 3


def test_splits_share_the_client_label_distribution() -> None:
    split_labels = {"train": _balanced_labels(200), "test": _balanced_labels(100)}
    parts = schemes.dirichlet_partition(split_labels, 5, alpha=0.1, min_size=10, seed=1)
    values, train_counts = heterogeneity.label_counts(split_labels["train"], parts["train"])
    _, test_counts = heterogeneity.label_counts(split_labels["test"], parts["test"])
    train_share = train_counts / train_counts.sum(axis=0)
    test_share = test_counts / test_counts.sum(axis=0)
    # Both splits are cut by the same proportion matrix.
    assert np.abs(train_share - test_share).max() < 0.02


def test_assign_by_proportions_follows_the_matrix() -> None:
    labels = ["a", "b", "a", "b", "a", "c"]
    proportions = np.array([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]])
    parts = schemes.assign_by_proportions(labels, ["a", "b", "c"], proportions, np.random.default_rng(0))
    # Label "c" has one sample: its boundary 0.5 rounds (half to even) to 0, so client 1 takes it.
    assert parts == [[0, 2, 4], [1, 3, 5]]
    with pytest.raises(ValueError, match="'z'"):
        schemes.assign_by_proportions(["z"], ["a"], np.ones((1, 1)), np.random.default_rng(0))


def test_dirichlet_proportions_shape_and_rows_sum_to_one() -> None:
    proportions = schemes.dirichlet_proportions(["a", "b", "c"], 4, 0.5, np.random.default_rng(0))
    assert proportions.shape == (3, 4)
    np.testing.assert_allclose(proportions.sum(axis=1), 1.0)


def test_min_size_is_respected() -> None:
    labels = _balanced_labels(200)
    parts = schemes.partition_splits({"train": labels}, "dirichlet", 10, seed=0, alpha=0.3, min_size=20)
    assert min(len(p) for p in parts["train"]) >= 20


def test_unreachable_min_size_raises_clear_error() -> None:
    labels = _balanced_labels(50, values="ab")
    with pytest.raises(ValueError, match=r"100 attempts.*num_clients=8.*min_size=10.*alpha=0.01"):
        schemes.partition_splits({"train": labels}, "dirichlet", 8, seed=0, alpha=0.01, min_size=10)
    with pytest.raises(ValueError, match=r"min_size=30.*num_clients=4.*120.*only 100"):
        schemes.partition_splits({"train": labels}, "iid", 4, seed=0, alpha=None, min_size=30)


@pytest.mark.parametrize("scheme", schemes.SCHEMES)
def test_more_clients_than_samples_raises(scheme: str) -> None:
    with pytest.raises(ValueError, match=r"num_clients=50 exceeds .* \(20\)"):
        schemes.partition_splits({"train": ["a"] * 20}, scheme, 50, seed=0, alpha=1.0, min_size=0)


@pytest.mark.parametrize(
    ("scheme", "alpha", "message"),
    [
        ("dirichlet", 0.0, "alpha"),
        ("dirichlet", -1.0, "alpha"),
        ("dirichlet", None, "alpha"),
        ("pathological", 1.0, "scheme"),
    ],
)
def test_bad_scheme_or_alpha_raises(scheme: str, alpha: float | None, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        schemes.partition_splits({"train": ["a"] * 20}, scheme, 2, seed=0, alpha=alpha, min_size=0)


def test_label_of_fields() -> None:
    record = {
        "multiple_choice_answer": "red",
        "question_type": "what color is the",
        "answer_type": "other",
        "label": "circle",
        "domain": "noise",
        "task": "vqa",
    }
    assert [schemes.label_of(record, f) for f in ("answer", "question_type", "answer_type", "label", "domain", "task")] == [
        "red", "what color is the", "other", "circle", "noise", "vqa",
    ]
    with pytest.raises(ValueError, match=r"'answer'.*'domain'.*got 'colour'"):
        schemes.label_of(record, "colour")


def test_label_counts() -> None:
    values, counts = heterogeneity.label_counts(["b", "a", "b", "c"], [[0, 1], [2, 3], []])
    assert values == ["a", "b", "c"]
    assert counts.tolist() == [[1, 1, 0], [0, 1, 1], [0, 0, 0]]


def test_js_divergence_heterogeneity_values() -> None:
    assert heterogeneity.js_divergence_heterogeneity(np.array([[2, 2], [5, 5]])) == pytest.approx(0.0)
    assert heterogeneity.js_divergence_heterogeneity(np.array([[3, 0], [0, 7]])) == pytest.approx(1.0)
    # JS((1,0), (.5,.5)) = H(.75,.25) - (0 + 1)/2 bits; the empty client is ignored.
    assert heterogeneity.js_divergence_heterogeneity(np.array([[1, 0], [1, 1], [0, 0]])) == pytest.approx(0.311278, abs=1e-6)
    assert heterogeneity.js_divergence_heterogeneity(np.array([[4, 1]])) == 0.0


def _records(split: str, labels: list[str]) -> list[dict]:
    return [{"id": f"{split}-{i}", "domain": value} for i, value in enumerate(labels)]


def test_write_partition_files(tmp_path: Path) -> None:
    split_labels = {split: _balanced_labels(n, "pqr") for split, n in [("train", 12), ("val", 2), ("test", 3)]}
    split_records = {split: _records(split, labels) for split, labels in split_labels.items()}
    parts = schemes.partition_splits(split_labels, "dirichlet", 3, seed=0, alpha=1.0, min_size=2)
    write_partition(tmp_path / "clients", tmp_path / "counts.csv", tmp_path / "heatmap.png", split_records, parts, "domain")

    assert sorted(p.name for p in tmp_path.iterdir()) == ["clients", "counts.csv", "heatmap.png"]
    files = sorted(p.name for p in (tmp_path / "clients").iterdir())
    assert files == ["client_000.json", "client_001.json", "client_002.json"]
    client = json.loads((tmp_path / "clients" / "client_001.json").read_text())
    assert set(client) == {"client", "train", "val", "test"} and client["client"] == 1
    assert client["train"] == [f"train-{i}" for i in parts["train"][1]]
    assert client["test"] == [f"test-{i}" for i in parts["test"][1]]

    rows = list(csv.reader((tmp_path / "counts.csv").read_text().splitlines()))
    assert rows[0] == ["client", "p", "q", "r", "total"]
    assert [int(row[-1]) for row in rows[1:]] == [len(p) for p in parts["train"]]
    assert sum(int(row[1]) for row in rows[1:]) == 12  # all "p" training samples
    assert (tmp_path / "heatmap.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_write_partition_rejects_mismatched_splits(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="differ"):
        write_partition(
            tmp_path, tmp_path / "c.csv", tmp_path / "h.png", {"train": _records("train", ["a"])}, {"train": [[0]], "val": [[]]}, "domain"
        )


def test_atomic_path_replaces_on_success_and_cleans_up_on_error(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "out.json"
    fio.atomic_write_json(target, {"b": 1, "a": [1]})
    assert target.read_text() == '{\n  "a": [\n    1\n  ],\n  "b": 1\n}\n'
    with pytest.raises(RuntimeError), fio.atomic_path(target) as tmp:
        tmp.write_text("partial")
        raise RuntimeError("boom")
    assert target.read_text().startswith('{\n  "a"')
    assert [p.name for p in target.parent.iterdir()] == ["out.json"]


def test_a_heatmap_of_thousands_of_labels_keeps_the_most_frequent_and_sums_the_rest(tmp_path):
    from PIL import Image

    from fedumm.partition.figures import MAX_HEATMAP_LABELS, heatmap_png, top_labels

    rng = np.random.default_rng(0)
    values = [f"answer{j:04d}" for j in range(3000)]
    counts = rng.integers(0, 3, size=(200, 3000))
    counts[:, 7] += 50  # the most frequent label
    kept, kept_counts = top_labels(values, counts)
    assert len(kept) == MAX_HEATMAP_LABELS and kept[-1] == f"other ({3000 - MAX_HEATMAP_LABELS + 1} labels)"
    assert "answer0007" in kept and kept_counts.sum() == counts.sum()
    assert (kept_counts.sum(axis=1) == counts.sum(axis=1)).all()  # every client's samples are still there
    (tmp_path / "h.png").write_bytes(heatmap_png(values, counts, "many answers"))
    with Image.open(tmp_path / "h.png") as image:
        assert image.width <= 100 * (0.45 * MAX_HEATMAP_LABELS + 2.5) + 1 and image.height <= 1400
    small = counts[:, :5]
    assert top_labels(values[:5], small) == (values[:5], small)
