"""Tests for the partition schemes beyond iid/dirichlet: quantity skew, by attribute, multitask,
semantic clusters (fedumm.partition.clustering), one-pass rounds, pooling, heterogeneity and projection
outputs, the config keys, and (slow) the embeddings + partition rules in the real workflow."""

from __future__ import annotations

import copy
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from workflow_util import REPO, tiny_config, write_config

from fedumm import config as fedumm_config
from fedumm.partition import clustering as C
from fedumm.partition import files, heterogeneity, schemes
from fedumm.partition.rounds import one_pass_rounds, pool, pool_rounds, round_train_ids

PNG = b"\x89PNG\r\n\x1a\n"


def _labels(n: int, values: str, seed: int) -> list[str]:
    return [values[i] for i in np.random.default_rng(seed).integers(0, len(values), size=n)]


def _assert_exact_cover(parts: list[list[int]], n: int) -> None:
    assert all(part == sorted(part) for part in parts)
    assert sorted(i for part in parts for i in part) == list(range(n))


def _assert_disjoint(parts: list[list[int]], n: int) -> None:
    flat = [i for part in parts for i in part]
    assert len(flat) == len(set(flat)) and all(0 <= i < n for i in flat)
    assert all(part == sorted(part) for part in parts)


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _agreement(assignment: np.ndarray, groups: np.ndarray) -> float:
    """Fraction of samples whose cluster is the majority cluster of their group (1.0: recovered)."""
    hits = sum(np.bincount(assignment[groups == g]).max() for g in np.unique(groups))
    clusters_used = {int(np.bincount(assignment[groups == g]).argmax()) for g in np.unique(groups)}
    # Two groups in one cluster is no separation, however pure each group is.
    return hits / len(groups) if len(clusters_used) == len(np.unique(groups)) else 0.0


def _embeddings(n_per_group: int, groups: int, differ: str, seed: int, dim: int = 16, noise: float = 0.15):
    """Synthetic (image, text, group) data whose groups differ only in ``differ``.

    ``image``/``text``: the groups have distinct directions in that modality and share one
    direction in the other. ``aligned``: the groups differ in both, with each sample's image and
    text near the same group direction (image–text alignment that is group-specific).
    """
    rng = np.random.default_rng(seed)
    group = np.repeat(np.arange(groups), n_per_group)
    directions = _unit(rng.normal(size=(groups, dim)))
    shared = _unit(rng.normal(size=(1, dim)))
    n = len(group)

    def modality(structured: bool) -> np.ndarray:
        centre = directions[group] if structured else np.repeat(shared, n, axis=0)
        return _unit(centre + noise * rng.normal(size=(n, dim)))

    if differ == "aligned":
        return modality(True), modality(True), group
    return modality(differ == "image"), modality(differ == "text"), group


# ----------------------------------------------------------------------------- every scheme


SCHEME_ARGS = {
    "quantity_dirichlet": ("quantity", {"sizes": "dirichlet"}),
    "quantity_power_law": ("quantity", {"sizes": "power_law", "exponent": 1.5}),
    "attribute": ("attribute", {}),
    "multitask": ("multitask", {}),
}


@settings(max_examples=25, deadline=None)
@given(
    n_train=st.integers(12, 150),
    n_val=st.integers(0, 40),
    num_clients=st.integers(3, 6),
    name=st.sampled_from(sorted(SCHEME_ARGS)),
    alpha=st.floats(0.05, 100.0),
    seed=st.integers(0, 2**32 - 1),
)
def test_label_schemes_assign_every_sample_once_and_are_seeded(n_train, n_val, num_clients, name, alpha, seed) -> None:
    scheme, kwargs = SCHEME_ARGS[name]
    values = "abc" if scheme == "multitask" else "abcdefgh"
    split_labels = {"train": _labels(n_train, values, seed), "val": _labels(n_val, values, seed + 1)}
    parts = schemes.partition_splits(split_labels, scheme, num_clients, seed, alpha, min_size=0, **kwargs)
    for split, labels in split_labels.items():
        assert len(parts[split]) == num_clients
        _assert_exact_cover(parts[split], len(labels))
    assert parts == schemes.partition_splits(split_labels, scheme, num_clients, seed, alpha, min_size=0, **kwargs)


@settings(max_examples=12, deadline=None)
@given(
    n_per_group=st.integers(6, 30),
    num_clients=st.integers(2, 4),
    mode=st.sampled_from(C.MODES),
    cap=st.one_of(st.none(), st.integers(3, 40), st.floats(0.1, 1.0)),
    center=st.booleans(),
    seed=st.integers(0, 2**32 - 1),
)
def test_cluster_scheme_assigns_at_most_once_prunes_only_train_and_is_seeded(
    n_per_group, num_clients, mode, cap, center, seed
) -> None:
    image, text, _ = _embeddings(n_per_group, 3, "aligned", seed)
    val_image, val_text, _ = _embeddings(5, 3, "aligned", seed + 1)
    n = len(image)
    split_labels = {"train": ["x"] * n, "val": ["x"] * len(val_image)}
    embeddings = {"train": (image, text), "val": (val_image, val_text)}
    kwargs = dict(embeddings=embeddings, mode=mode, max_cluster_size=cap, center=center)
    parts = schemes.partition_splits(split_labels, "cluster", num_clients, seed, None, 0, **kwargs)
    _assert_disjoint(parts["train"], n)
    limit = schemes.cluster_size_cap(cap, n)
    assert all(len(part) <= (limit or n) for part in parts["train"])
    if cap is None:
        _assert_exact_cover(parts["train"], n)
    _assert_exact_cover(parts["val"], len(val_image))  # held-out splits are never pruned
    assert parts == schemes.partition_splits(split_labels, "cluster", num_clients, seed, None, 0, **kwargs)


@pytest.mark.parametrize("name", sorted(SCHEME_ARGS))
def test_other_seed_other_partition(name: str) -> None:
    scheme, kwargs = SCHEME_ARGS[name]
    labels = {"train": _labels(300, "abc" if scheme == "multitask" else "abcdefgh", 0)}
    runs = [schemes.partition_splits(labels, scheme, 6, seed, 0.5, 0, **kwargs) for seed in range(4)]
    assert len({json.dumps(run) for run in runs}) > 1


def test_cluster_other_seed_other_partition() -> None:
    image, text, _ = _embeddings(40, 2, "aligned", 0, noise=2.0)  # no clear structure: seeds matter
    embeddings = {"train": (image, text)}
    runs = [schemes.partition_splits({"train": ["x"] * 80}, "cluster", 4, seed, None, 0, embeddings=embeddings) for seed in range(4)]
    assert len({json.dumps(run) for run in runs}) > 1


# ----------------------------------------------------------------------------- quantity skew


def test_apportion_largest_remainder() -> None:
    assert schemes.apportion(10, np.array([0.5, 0.3, 0.2])).tolist() == [5, 3, 2]
    # Quotas 3.33 each: the one leftover sample goes to the lowest client index.
    assert schemes.apportion(10, np.full(3, 1 / 3)).tolist() == [4, 3, 3]
    assert schemes.apportion(10, np.array([1.0, 0.0, 0.0]), min_size=2).tolist() == [6, 2, 2]
    with pytest.raises(ValueError, match="min_size=4 for 3 clients needs 12"):
        schemes.apportion(10, np.full(3, 1 / 3), min_size=4)


@settings(max_examples=40, deadline=None)
@given(n=st.integers(0, 500), k=st.integers(1, 9), m=st.integers(0, 5), seed=st.integers(0, 1000))
def test_apportion_sums_to_n_and_respects_min_size(n, k, m, seed) -> None:
    if k * m > n:
        return
    sizes = schemes.apportion(n, np.random.default_rng(seed).dirichlet(np.ones(k)), m)
    assert sizes.sum() == n and sizes.min() >= m


def test_quantity_dirichlet_large_alpha_is_iid_small_alpha_is_skewed() -> None:
    labels = _labels(2000, "abcde", 0)
    near_iid = schemes.partition_splits({"train": labels}, "quantity", 5, 0, 1e6, 0, sizes="dirichlet")["train"]
    skewed = schemes.partition_splits({"train": labels}, "quantity", 5, 0, 0.1, 0, sizes="dirichlet")["train"]
    assert max(len(p) for p in near_iid) - min(len(p) for p in near_iid) <= 2
    assert max(len(p) for p in skewed) > 3 * min(len(p) for p in skewed) + 1
    # Sizes differ but every client's label distribution stays that of the whole split.
    _, counts = heterogeneity.label_counts(labels, near_iid)
    assert heterogeneity.js_divergence_heterogeneity(counts) < 0.01


def test_quantity_power_law_sizes_follow_zipf() -> None:
    n, k = 1500, 5
    parts = schemes.partition_splits({"train": ["a"] * n}, "quantity", k, 3, None, 0, sizes="power_law", exponent=1.0)
    sizes = sorted((len(p) for p in parts["train"]), reverse=True)
    harmonic = sum(1 / r for r in range(1, k + 1))
    np.testing.assert_allclose(sizes, [n / (r * harmonic) for r in range(1, k + 1)], atol=1)
    flat = schemes.partition_splits({"train": ["a"] * n}, "quantity", k, 3, None, 0, sizes="power_law", exponent=0.0)
    assert [len(p) for p in flat["train"]] == [300] * 5


def test_quantity_shares_apply_to_every_split_and_min_size_is_reserved() -> None:
    split_labels = {"train": ["a"] * 1000, "test": ["a"] * 500}
    parts = schemes.partition_splits(split_labels, "quantity", 4, 1, 0.3, 30, sizes="dirichlet")
    train = np.array([len(p) for p in parts["train"]])
    test = np.array([len(p) for p in parts["test"]])
    assert train.min() >= 30
    # Shares of the 1000 - 4·30 free training samples and of the test split are the same draw.
    np.testing.assert_allclose((train - 30) / 880, test / 500, atol=0.005)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"sizes": "dirichlet"}, "alpha must be > 0 for quantity skew"),
        ({"sizes": "power_law"}, "exponent must be >= 0"),
        ({"sizes": "power_law", "exponent": -1.0}, "exponent must be >= 0"),
        ({"sizes": "zipf"}, r"sizes must be one of \('dirichlet', 'power_law'\)"),
    ],
)
def test_quantity_bad_arguments(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        schemes.partition_splits({"train": ["a"] * 20}, "quantity", 2, 0, None, 0, **kwargs)


# ----------------------------------------------------------------------------- attribute, multitask


def test_attribute_puts_each_value_at_one_client_in_every_split() -> None:
    split_labels = {"train": _labels(400, "abcdefghij", 0), "test": _labels(100, "abcdefghij", 1)}
    parts = schemes.partition_splits(split_labels, "attribute", 4, 7, None, 1)
    owners = {}
    for split, labels in split_labels.items():
        for k, part in enumerate(parts[split]):
            for i in part:
                assert owners.setdefault(labels[i], k) == k  # one client per value, in every split
    held = np.bincount(list(owners.values()), minlength=4)
    assert sorted(held.tolist()) == [2, 2, 3, 3]  # 10 values dealt round-robin to 4 clients
    values, counts = heterogeneity.label_counts(split_labels["train"], parts["train"])
    assert heterogeneity.js_divergence_heterogeneity(counts) == pytest.approx(1.0)  # no two clients share a value


def test_attribute_needs_enough_values_for_min_size() -> None:
    with pytest.raises(ValueError, match=r"attribute partition: client 3 would hold no 'train' samples: the label "
                       r"has 3 values in the 'train' split but num_clients=4.*use at most 3 clients"):
        schemes.partition_splits({"train": _labels(50, "abc", 0)}, "attribute", 4, 0, None, 1)
    # A value seen only in val gives no client training data: still 3 usable values for 4 clients.
    with pytest.raises(ValueError, match=r"client \d would hold no 'train' samples: the label has 3 values"):
        schemes.partition_splits({"train": _labels(50, "abc", 0), "val": ["d"]}, "attribute", 4, 0, None, 1)
    with pytest.raises(ValueError, match=r"no deal in 100 attempts.*min_size=40 'train' samples \(in the last deal "
                       r"client \d held \d+\); lower min_size"):
        schemes.partition_splits({"train": ["a"] * 90 + ["b"] * 5 + ["c"] * 5}, "attribute", 2, 0, None, 40)


def test_multitask_one_task_per_client() -> None:
    split_labels = {"train": _labels(300, "xyz", 0), "val": _labels(60, "xyz", 1)}
    parts = schemes.partition_splits(split_labels, "multitask", 3, 5, None, 1)
    for split, labels in split_labels.items():
        tasks = [{labels[i] for i in part} for part in parts[split]]
        assert all(len(t) == 1 for t in tasks)
        assert set.union(*tasks) == {"x", "y", "z"}
    # Five clients for three tasks: two tasks are shared by two clients each, split near-equally.
    parts = schemes.partition_splits(split_labels, "multitask", 5, 5, None, 1)
    held = schemes.task_of_clients(["x", "y", "z"], 5, 5)
    assert sorted(held.count(t) for t in "xyz") == [1, 2, 2]
    for task in "xyz":
        sizes = [len(parts["train"][k]) for k in range(5) if held[k] == task]
        assert max(sizes) - min(sizes) <= 1
        assert all(split_labels["train"][i] == task for k in range(5) if held[k] == task for i in parts["train"][k])


def test_multitask_needs_a_client_per_task() -> None:
    with pytest.raises(ValueError, match=r"3 tasks \['x', 'y', 'z'\] need at least as many clients, got num_clients=2"):
        schemes.partition_splits({"train": _labels(30, "xyz", 0)}, "multitask", 2, 0, None, 0)


# ----------------------------------------------------------------------------- no empty client


def _timed(call):
    started = time.perf_counter()
    try:
        return call(), time.perf_counter() - started
    except ValueError as error:
        return error, time.perf_counter() - started


def test_hopeless_partitions_stop_fast_naming_a_client_the_scheme_and_the_remedy() -> None:
    labels = {"train": _labels(2000, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMN", 0), "val": _labels(200, "abc", 1)}
    # Dirichlet with alpha 0.01 puts each of the 40 labels at ~one client: 60 clients never all get data.
    error, seconds = _timed(lambda: schemes.partition_splits(labels, "dirichlet", 60, 0, 0.01, 1))
    assert isinstance(error, ValueError) and seconds < 1.0
    assert re.fullmatch(
        r"dirichlet partition: no draw in 100 attempts gave every one of num_clients=60 clients at least "
        r"min_size=1 'train' samples with alpha=0.01 \(in the last draw client \d+ held 0\); "
        r"increase alpha, lower min_size or use fewer clients", str(error))
    error, seconds = _timed(lambda: schemes.partition_splits(labels, "attribute", 60, 0, None, 1))
    assert isinstance(error, ValueError) and seconds < 1.0
    assert str(error) == (
        "attribute partition: client 40 would hold no 'train' samples: the label has 40 values in the 'train' "
        "split but num_clients=60, and each value goes to one client; use at most 40 clients, or a label with "
        "more values")
    # Multitask: task 'x' has 2 training samples for the 3 clients that share it.
    tasks = {"train": ["x"] * 2 + ["y"] * 30}
    error, seconds = _timed(lambda: schemes.partition_splits(tasks, "multitask", 6, 0, None, 1))
    assert isinstance(error, ValueError) and seconds < 1.0
    assert re.fullmatch(r"multitask partition: client \d holds only 0 'train' samples, fewer than min_size=1; "
                        r"a task has too few samples for the clients sharing it; lower min_size or use fewer clients",
                        str(error))


@pytest.mark.parametrize("exponent", [3.0, 8.0])
def test_power_law_quantity_skew_gives_every_client_data(exponent: float) -> None:
    labels = {"train": ["a"] * 2000, "val": ["a"] * 200}
    # Without a reserved sample the power law's tail rounds to nothing ...
    unreserved = schemes.partition_splits(labels, "quantity", 60, 0, None, 0, sizes="power_law", exponent=exponent)
    assert min(len(part) for part in unreserved["train"]) == 0
    # ... with min_size=1 (the schema's least) each tail client holds exactly its reserved sample.
    parts, seconds = _timed(lambda: schemes.partition_splits(
        labels, "quantity", 60, 0, None, 1, sizes="power_law", exponent=exponent))
    assert seconds < 1.0
    sizes = sorted(len(part) for part in parts["train"])
    assert sizes[0] == 1 and sum(sizes) == 2000 and sizes[-1] > 1000


def test_round_train_ids_refuses_a_client_without_training_data() -> None:
    with pytest.raises(ValueError, match=r"client 7 has no training samples in round 3; repartition with "
                       r"partition.min_size >= 1"):
        round_train_ids({"client": 7, "train": [], "val": ["v"]}, 3)
    with pytest.raises(ValueError, match=r"client 2 has no training samples in round 2 \(one-pass part 2 of 2\)"):
        round_train_ids({"client": 2, "train": ["a"], "train_rounds": [["a"], []]}, 2)


# ----------------------------------------------------------------------------- clustering


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize(
    ("mode", "separates"),
    [
        ("image", {"image": True, "text": False, "aligned": True}),
        ("text", {"image": False, "text": True, "aligned": True}),
        ("joint", {"image": True, "text": True, "aligned": True}),
        ("cross", {"aligned": True}),
    ],
)
def test_each_mode_separates_the_clusters_it_is_meant_to(mode: str, separates: dict[str, bool], seed: int) -> None:
    """image (text) clustering recovers groups that differ only in image (text) and not groups
    that differ only in text (image); joint recovers both; cross recovers groups whose image–text
    alignment is group-specific (its behaviour on one-modality groups is checked below)."""
    for differ, expected in separates.items():
        image, text, group = _embeddings(40, 3, differ, seed)
        agreement = _agreement(C.cluster(image, text, mode, 3, seed).assignment, group)
        assert (agreement == 1.0) if expected else (agreement < 0.8), (mode, differ, agreement)


def _factorial(seed: int, repeats: int = 4, dim: int = 24) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Three independent 3-way groupings: A private to the images, C private to the texts (both
    strong), B shared by image and text (weaker), in mutually orthogonal subspaces."""
    rng = np.random.default_rng(seed)
    labels = np.array([(a, b, c) for a in range(3) for b in range(3) for c in range(3)] * repeats)
    basis = np.linalg.qr(rng.normal(size=(dim, 9)))[0].T  # 9 orthonormal directions: A, B, C blocks
    a, b, c = (basis[3 * j : 3 * j + 3][labels[:, j]] for j in range(3))
    noise = 0.1
    image = _unit(2.0 * a + b + noise * rng.normal(size=(len(labels), dim)))
    text = _unit(2.0 * c + b + noise * rng.normal(size=(len(labels), dim)))
    return image, text, labels


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_cross_mode_follows_the_structure_shared_by_image_and_text(seed: int) -> None:
    """Image-only clustering finds the strong private image grouping A, text-only the private text
    grouping C; cross-modal clustering ignores both and recovers the shared grouping B, since only
    B contributes to image–text similarities."""
    image, text, labels = _factorial(seed)
    by_mode = {mode: C.cluster(image, text, mode, 3, seed).assignment for mode in ("image", "text", "cross")}
    assert _agreement(by_mode["image"], labels[:, 0]) == 1.0
    assert _agreement(by_mode["text"], labels[:, 2]) == 1.0
    assert _agreement(by_mode["cross"], labels[:, 1]) == 1.0
    assert _agreement(by_mode["cross"], labels[:, 0]) < 0.8 and _agreement(by_mode["cross"], labels[:, 2]) < 0.8


def test_mode_vectors_similarities() -> None:
    rng = np.random.default_rng(0)
    v, t = _unit(rng.normal(size=(5, 4))), _unit(rng.normal(size=(5, 4)))
    expected = {"image": v @ v.T, "text": t @ t.T, "joint": (v @ v.T + t @ t.T) / 2, "cross": (v @ t.T + t @ v.T) / 2}
    for mode, similarity in expected.items():
        x, y = C.mode_vectors(v, t, mode)
        np.testing.assert_allclose(x @ y.T, similarity, atol=1e-12)
    with pytest.raises(ValueError, match="one width"):
        C.mode_vectors(v, t[:, :3], "cross")
    with pytest.raises(ValueError, match="mode must be one of"):
        C.mode_vectors(v, t, "both")


def test_cap_prunes_the_samples_farthest_from_their_centroid() -> None:
    image, text, _ = _embeddings(30, 3, "image", 0, noise=0.6)
    full = C.cluster(image, text, "image", 3, 0)
    capped = C.cluster(image, text, "image", 3, 0, cap=20)
    sizes = np.bincount(full.assignment, minlength=3)
    assert capped.pruned == int(np.sum(np.maximum(sizes - 20, 0))) > 0
    for c in range(3):
        kept = full.scores[capped.assignment == c]
        pruned = full.scores[(capped.assignment < 0) & (full.assignment == c)]
        assert len(kept) == min(sizes[c], 20)
        if len(pruned):
            assert kept.min() >= pruned.max()


def test_cap_clusters_ties_keep_lower_index() -> None:
    capped = C.cap_clusters(np.array([0, 0, 0, 1]), np.array([0.5, 0.9, 0.5, 0.1]), cap=2)
    assert capped.tolist() == [0, 0, -1, 1]


def test_held_out_samples_go_to_the_cluster_of_their_group() -> None:
    image, text, group = _embeddings(40, 3, "text", 0)
    val_image, val_text, val_group = _embeddings(10, 3, "text", 0)  # same seed: same directions
    result = C.cluster(image, text, "text", 3, 0)
    cluster_of_group = {g: np.bincount(result.assignment[group == g]).argmax() for g in range(3)}
    nearest = C.nearest_centroid(val_image, val_text, result)
    assert nearest.tolist() == [cluster_of_group[g] for g in val_group]


def test_centring_removes_the_modality_cones() -> None:
    """Image and text embeddings in two narrow cones at an angle (CLIP's modality gap): raw cosine
    cross-modal clustering can collapse into one cluster; centred, it recovers the groups."""
    raw, centred = [], []
    for seed in range(3):
        image, text, group = _embeddings(40, 3, "aligned", seed)
        rng = np.random.default_rng(100 + seed)
        cone_image, other = _unit(rng.normal(size=(2, 16)))
        other = _unit((other - (other @ cone_image) * cone_image)[None])[0]
        cone_text = -0.2 * cone_image + np.sqrt(1 - 0.04) * other
        image, text = _unit(image + 4 * cone_image), _unit(text + 4 * cone_text)
        centred.append(_agreement(C.cluster(image, text, "cross", 3, seed, center=True).assignment, group))
        raw.append(_agreement(C.cluster(image, text, "cross", 3, seed, center=False).assignment, group))
    assert centred == [1.0, 1.0, 1.0]
    assert min(raw) == 0.0  # a collapse: two groups share a cluster


def test_spherical_kmeans_is_seeded_and_fills_every_cluster() -> None:
    x = _unit(np.random.default_rng(0).normal(size=(50, 8)))
    first = C.spherical_kmeans(x, x, 7, seed=3)
    np.testing.assert_array_equal(first[0], C.spherical_kmeans(x, x, 7, seed=3)[0])
    assert set(first[0].tolist()) == set(range(7))
    np.testing.assert_allclose(np.linalg.norm(first[1], axis=1), 1.0)
    with pytest.raises(ValueError, match="k=51 for 50 samples"):
        C.spherical_kmeans(x, x, 51, seed=0)


def test_pca_2d() -> None:
    rng = np.random.default_rng(0)
    t = rng.normal(size=200)
    points = np.stack([3 * t, 0.1 * rng.normal(size=200), np.zeros(200)], axis=1) + 5.0
    projected = C.pca_2d(points)
    assert projected.shape == (200, 2)
    np.testing.assert_allclose(projected.mean(axis=0), 0.0, atol=1e-9)
    # The first axis is the long one, signed so that its largest loading is positive.
    np.testing.assert_allclose(projected[:, 0], 3 * (t - t.mean()), atol=0.05)
    assert projected[:, 0].var() > 100 * projected[:, 1].var()
    assert C.pca_2d(points[:1]).tolist() == [[0.0, 0.0]]


def test_cluster_size_cap() -> None:
    assert schemes.cluster_size_cap(None, 100) is None
    assert schemes.cluster_size_cap(30, 100) == 30
    assert schemes.cluster_size_cap(0.25, 100) == 25
    assert schemes.cluster_size_cap(0.001, 100) == 1
    for bad in (0, 1.5, True, "10"):
        with pytest.raises(ValueError, match="max_cluster_size"):
            schemes.cluster_size_cap(bad, 100)


def test_cluster_scheme_errors() -> None:
    labels = {"train": ["x"] * 10, "val": ["x"] * 2}
    image = np.eye(10)
    with pytest.raises(ValueError, match="needs embeddings.*partition.embedder"):
        schemes.partition_splits(labels, "cluster", 2, 0, None, 0)
    with pytest.raises(ValueError, match=r"missing \['val'\]"):
        schemes.partition_splits(labels, "cluster", 2, 0, None, 0, embeddings={"train": (image, image)})
    with pytest.raises(ValueError, match="text embeddings of split 'val' have 3 rows but the split has 2"):
        schemes.partition_splits(labels, "cluster", 2, 0, None, 0, embeddings={"train": (image, image), "val": (image[:2], image[:3])})
    with pytest.raises(ValueError, match="caps clusters at 2 samples, below min_size=3"):
        schemes.partition_splits(labels, "cluster", 2, 0, None, 3, embeddings={"train": (image, image), "val": (image[:2], image[:2])}, max_cluster_size=2)
    image, text, _ = _embeddings(20, 3, "image", 0)
    keep = np.r_[0:40, 40:44]  # groups of 20, 20 and 4 samples
    with pytest.raises(ValueError, match="cluster partition: client 0 holds only 4 'train' samples, fewer than min_size=5"):
        schemes.cluster_partition({"train": (image[keep], text[keep])}, 3, "image", None, 5, 0)


# ----------------------------------------------------------------------------- one-pass rounds, pooling


@settings(max_examples=30, deadline=None)
@given(sizes=st.lists(st.integers(4, 60), min_size=1, max_size=5), num_parts=st.integers(1, 4), seed=st.integers(0, 1000))
def test_one_pass_rounds_are_disjoint_parts_of_each_client(sizes, num_parts, seed) -> None:
    starts = np.cumsum([0, *sizes])
    train_parts = [list(range(starts[k], starts[k + 1])) for k in range(len(sizes))]
    rounds = one_pass_rounds(train_parts, num_parts, seed)
    assert rounds == one_pass_rounds(train_parts, num_parts, seed)
    for part, client_rounds in zip(train_parts, rounds):
        assert len(client_rounds) == num_parts
        assert sorted(i for r in client_rounds for i in r) == part
        lengths = [len(r) for r in client_rounds]
        assert max(lengths) - min(lengths) <= 1 and all(r == sorted(r) for r in client_rounds)


def test_one_pass_needs_a_sample_per_part() -> None:
    with pytest.raises(ValueError, match="client 1 holds 2 training samples, fewer than the 3 parts"):
        one_pass_rounds([[0, 1, 2], [3, 4]], 3, 0)


def test_round_train_ids_cycles_through_the_parts() -> None:
    index = {"train": ["a", "b", "c", "d"], "train_rounds": [["b", "c"], ["a", "d"]]}
    assert [round_train_ids(index, r) for r in (1, 2, 3)] == [["b", "c"], ["a", "d"], ["b", "c"]]
    assert round_train_ids({"train": ["a"]}, 7) == ["a"]
    with pytest.raises(ValueError, match="at least 1"):
        round_train_ids(index, 0)


def test_pool_is_the_union_of_the_clients() -> None:
    parts = {"train": [[0, 3], [1], [2, 4]], "test": [[1], [0]]}
    assert pool(parts) == {"train": [[0, 1, 2, 3, 4]], "test": [[0, 1]]}
    assert pool_rounds([[[0], [3]], [[1], [2, 4]]]) == [[[0, 1], [2, 3, 4]]]


def test_partition_sizes_counts_the_unassigned() -> None:
    sizes = heterogeneity.partition_sizes({"train": 10, "val": 3}, {"train": [[0, 1], [5]], "val": [[0], [1, 2]]})
    assert sizes == {"train": {"clients": [2, 1], "unassigned": 7}, "val": {"clients": [1, 2], "unassigned": 0}}


# ----------------------------------------------------------------------------- report files


def test_pairwise_js_matches_the_mean_and_marks_empty_clients() -> None:
    counts = np.array([[5, 0, 1], [1, 4, 1], [0, 0, 0], [2, 2, 2]])
    matrix = heterogeneity.pairwise_js_divergences(counts)
    assert np.isnan(matrix[2]).all() and np.isnan(matrix[:, 2]).all()
    np.testing.assert_allclose(np.diag(matrix)[[0, 1, 3]], 0.0, atol=1e-12)
    np.testing.assert_allclose(matrix, matrix.T)
    upper = matrix[np.triu_indices(4, 1)]
    assert np.nanmean(upper) == pytest.approx(heterogeneity.js_divergence_heterogeneity(counts))
    assert heterogeneity.pairwise_js_divergences(np.array([[3, 0], [0, 7]]))[0, 1] == pytest.approx(1.0)


def test_write_partition_with_rounds_and_report_files(tmp_path: Path) -> None:
    records = {
        split: [{"id": f"{split}-{i}", "label": "pq"[i % 2]} for i in range(n)] for split, n in [("train", 8), ("val", 2)]
    }
    parts = {"train": [[0, 1, 2], [4, 5, 6, 7]], "val": [[0], [1]]}  # train sample 3 pruned
    rounds = one_pass_rounds(parts["train"], 2, 0)
    files.write_partition(tmp_path / "clients", tmp_path / "c.csv", tmp_path / "h.png", records, parts, "label", train_rounds=rounds)
    client = json.loads((tmp_path / "clients" / "client_001.json").read_text())
    assert client["train"] == ["train-4", "train-5", "train-6", "train-7"]
    assert client["train_rounds"] == [[f"train-{i}" for i in part] for part in rounds[1]]
    assert sorted(sum(client["train_rounds"], [])) == client["train"]
    with pytest.raises(ValueError, match="train_rounds has 1 clients, the partition 2"):
        files.write_partition(tmp_path / "x", tmp_path / "c.csv", tmp_path / "h.png", records, parts, "label", train_rounds=rounds[:1])

    summary = files.write_heterogeneity(tmp_path / "het.json", tmp_path / "het.png", records["train"], parts["train"], "label")
    assert json.loads((tmp_path / "het.json").read_text()) == summary
    # Client 0 holds p, q, p; client 1 holds p, q, p, q.
    assert summary["label"] == "label" and summary["clients"] == 2 and summary["label_values"] == 2
    assert summary["mean_pairwise_js_divergence"] == pytest.approx(heterogeneity.js_divergence_heterogeneity(np.array([[2, 1], [2, 2]])))
    assert (tmp_path / "het.png").read_bytes()[:8] == PNG

    rng = np.random.default_rng(0)
    image, text = rng.normal(size=(8, 4)), rng.normal(size=(8, 4))
    files.write_projection(tmp_path / "proj.png", image, text, parts["train"], "joint", "title")
    assert (tmp_path / "proj.png").read_bytes()[:8] == PNG
    assert files.client_of(8, parts["train"]).tolist() == [0, 0, 0, -1, 1, 1, 1, 1]


# ----------------------------------------------------------------------------- config keys


def _load(default_config: dict, schema: dict, partition: dict, **top) -> dict:
    config = copy.deepcopy(default_config)
    config["experiments"] = {"x": {"partition": partition}}
    config.update(top)
    return fedumm_config.load_experiments(config, schema)["x"]


@pytest.mark.parametrize(
    ("partition", "message"),
    [
        ({"scheme": "cluster"}, "'partition': 'embedder' is a required property"),
        ({"scheme": "cluster", "embedder": "clip_tiny"}, "'partition': 'mode' is a required property"),
        ({"scheme": "cluster", "embedder": "nope", "mode": "image"}, r"'experiments.x.partition.embedder': unknown embedder 'nope' \(defined: clip_b32, clip_tiny\)"),
        ({"scheme": "cluster", "embedder": "clip_tiny", "mode": "pixels"}, "'experiments.x.partition.mode'"),
        ({"scheme": "cluster", "embedder": "clip_tiny", "mode": "image", "max_cluster_size": 10}, "'experiments.x.partition.max_cluster_size': caps clusters at 10"),
        ({"scheme": "cluster", "embedder": "clip_tiny", "mode": "image", "max_cluster_size": 2.5}, "'experiments.x.partition.max_cluster_size'"),
        ({"scheme": "quantity"}, "'partition': 'sizes' is a required property"),
        ({"scheme": "quantity", "sizes": "power_law"}, "'partition': 'exponent' is a required property"),
        ({"scheme": "quantity", "sizes": "dirichlet", "min_size": 600}, "'experiments.x.partition.min_size': 4 clients"),
        ({"scheme": "multitask", "one_pass": 0}, "'experiments.x.partition.one_pass'"),
        ({"scheme": "iid", "center": "yes"}, "'experiments.x.partition.center'"),
    ],
)
def test_config_errors_name_the_key(default_config: dict, schema: dict, partition: dict, message: str) -> None:
    with pytest.raises(fedumm_config.ConfigError, match=message):
        _load(default_config, schema, partition)


def test_config_accepts_the_new_schemes(default_config: dict, schema: dict) -> None:
    cluster = {"scheme": "cluster", "embedder": "clip_tiny", "mode": "cross", "max_cluster_size": 0.3, "one_pass": 4}
    assert _load(default_config, schema, cluster)["partition"]["one_pass"] == 4
    assert _load(default_config, schema, {"scheme": "quantity", "sizes": "power_law", "exponent": 1.0})
    assert _load(default_config, schema, {"scheme": "attribute", "label": "label", "embedder": "clip_tiny"})
    assert _load(default_config, schema, {"scheme": "multitask", "label": "task"})
    with pytest.raises(fedumm_config.ConfigError, match="'embedders.e.config.model_type'"):
        _load(default_config, schema, {"scheme": "iid"}, embedders={"e": {"config": {"model_type": "llama"}}})


# ----------------------------------------------------------------------------- workflow


@pytest.mark.slow
def test_embeddings_and_cluster_partition_rules(tmp_path: Path) -> None:
    """The embeddings rule and the cluster partition (with projection) on the tiny config."""
    cluster = {"scheme": "cluster", "embedder": "clip_tiny", "mode": "cross", "max_cluster_size": 0.4,
               "min_size": 5, "one_pass": 2}
    config = tiny_config({"clu": {"partition": cluster}, "cen": {"kind": "centralized", "partition": cluster}})
    write_config(tmp_path, config)
    targets = [f"results/{exp}/partition/heatmap.png" for exp in ("clu", "cen")]
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "--directory", str(tmp_path),
         "--cores", "1", *targets],
        capture_output=True, text=True, cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-4000:]

    embeddings_dir = tmp_path / "results/embeddings/clip_tiny/shapes"
    assert sorted(p.name for p in embeddings_dir.iterdir()) == ["test.safetensors", "train.safetensors", "val.safetensors"]
    out = tmp_path / "results/clu/partition"
    for name in ("projection.png", "heterogeneity.png", "heatmap.png"):
        assert (out / name).read_bytes()[:8] == PNG
    sizes = json.loads((out / "sizes.json").read_text())["splits"]
    assert sizes["train"] == {"clients": [48, 48], "unassigned": 24}  # 0.4 × 120 = 48 per cluster
    assert sizes["test"]["unassigned"] == 0 and sum(sizes["test"]["clients"]) == 40
    clients = [json.loads((out / "clients" / f"client_00{k}.json").read_text()) for k in range(2)]
    assert all(len(c["train_rounds"]) == 2 and sorted(sum(c["train_rounds"], [])) == sorted(c["train"]) for c in clients)
    heterogeneity = json.loads((out / "heterogeneity.json").read_text())
    assert 0 <= heterogeneity["mean_pairwise_js_divergence"] <= 1
    # The centralized baseline holds exactly the union of the federated clients' data.
    pooled = json.loads((tmp_path / "results/cen/partition/clients/client_000.json").read_text())
    assert sorted(pooled["train"]) == sorted(clients[0]["train"] + clients[1]["train"])
    assert [sorted(r) for r in pooled["train_rounds"]] == [
        sorted(clients[0]["train_rounds"][r] + clients[1]["train_rounds"][r]) for r in range(2)
    ]
