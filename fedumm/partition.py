"""Federated partitioning of a dataset's splits among clients.

Schemes (one entry point, :func:`partition_splits`, dispatching on ``scheme``):

* ``iid``: a seeded shuffle cut into near-equal parts, per split.
* ``dirichlet``: label-distribution skew after Hsu et al. 2019, "Measuring the
  effects of non-identical data distribution for federated visual
  classification", as implemented by Flower Datasets' ``DirichletPartitioner``
  (without its ``self_balancing`` option): for every label value the client
  proportions are drawn from Dir(alpha·1_K), the label's shuffled samples are
  cut at the cumulative proportions (rounded, where Flower truncates), and
  everything is redrawn until every client holds at least ``min_size``
  training samples. Unlike Flower, one
  proportion matrix (labels × clients) is drawn per attempt and applied to
  every split, so a client's train, val and test data share one label
  distribution.
* ``quantity``: quantity skew, samples otherwise IID (:func:`quantity_partition`).
* ``attribute``: whole label values per client, FedVLMBench's "complete" non-IID
  (:func:`attribute_partition`).
* ``multitask``: one task per client, FedVLMBench's Fed-Nature / Fed-Med
  (:func:`multitask_partition`).
* ``cluster``: semantic clustering of image/text embeddings, Fed-CMP App. E
  (:func:`cluster_partition`, :mod:`fedumm.clustering`).

Partitions are lists (one per client) of ascending sample indices into a split.
Every index of a split belongs to exactly one client, except the training
samples that the ``cluster`` scheme prunes by design, which belong to none.
:func:`one_pass_rounds` additionally cuts each client's training data into
disjoint per-round parts (Fed-CMP's one-pass pre-training).
"""

from __future__ import annotations

import csv
import io
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from fedumm import clustering
from fedumm.io import atomic_write_bytes, atomic_write_json, atomic_write_text

if TYPE_CHECKING:
    from matplotlib.figure import Figure

LABEL_FIELDS: dict[str, str] = {
    "answer": "multiple_choice_answer",
    "question_type": "question_type",
    "answer_type": "answer_type",
    "label": "label",
    "domain": "domain",
    "task": "task",
    # The source dataset of a mixture's record (fedumm.sources.mixture): one per client with multitask.
    "dataset": "dataset",
}
SPLITS: tuple[str, ...] = ("train", "val", "test")
"""The splits a partition covers (the public split is for pretraining the base model only)."""
SCHEMES: tuple[str, ...] = ("iid", "dirichlet", "quantity", "attribute", "multitask", "cluster")
LABEL_SCHEMES: tuple[str, ...] = ("iid", "dirichlet", "quantity", "attribute")
"""The schemes that need nothing but the labels and give every sample of every split one client."""
QUANTITY_SIZES: tuple[str, ...] = ("dirichlet", "power_law")
MAX_ATTEMPTS = 100


def label_of(record: dict, field: str) -> str:
    """The value of partition field ``field`` (a key of :data:`LABEL_FIELDS`) of a record."""
    if field not in LABEL_FIELDS:
        raise ValueError(f"label field must be one of {sorted(LABEL_FIELDS)}, got {field!r}")
    if LABEL_FIELDS[field] not in record:
        raise ValueError(
            f"label field {field!r}: record {record.get('id')!r} has no {LABEL_FIELDS[field]!r} field"
            + (" (only mixture datasets have one)" if field == "dataset" else "")
        )
    return str(record[LABEL_FIELDS[field]])


def _split_seed(seed: int, split: str) -> np.random.SeedSequence:
    # Each split gets its own stream so adding or resizing a split leaves the others unchanged.
    return np.random.SeedSequence([seed, zlib.crc32(split.encode("utf-8"))])


def _iid(n: int, num_clients: int, rng: np.random.Generator) -> list[list[int]]:
    return [sorted(int(i) for i in part) for part in np.array_split(rng.permutation(n), num_clients)]


def iid_partition(n: int, num_clients: int, seed: int) -> list[list[int]]:
    """Indices 0..n-1 shuffled with ``seed`` and cut into ``num_clients`` near-equal parts."""
    if n < 0:
        raise ValueError(f"n must be non-negative, got {n}")
    if num_clients < 1:
        raise ValueError(f"num_clients must be at least 1, got {num_clients}")
    return _iid(n, num_clients, np.random.default_rng(seed))


def dirichlet_proportions(
    label_values: list[str], num_clients: int, alpha: float, rng: np.random.Generator
) -> np.ndarray:
    """Client proportions per label value, one Dir(alpha·1_K) row per label: shape (labels, clients)."""
    if not alpha > 0:
        raise ValueError(f"alpha must be > 0 for the dirichlet scheme, got {alpha!r}")
    return rng.dirichlet(np.full(num_clients, float(alpha)), size=len(label_values))


def assign_by_proportions(
    labels: list[str], label_values: list[str], proportions: np.ndarray, rng: np.random.Generator
) -> list[list[int]]:
    """Cut each label's shuffled sample indices among clients at the cumulative ``proportions``.

    Row ``j`` of ``proportions`` belongs to ``label_values[j]``; every label in
    ``labels`` must be one of ``label_values``.
    """
    row_of = {value: j for j, value in enumerate(label_values)}
    unknown = sorted(set(labels) - set(row_of))
    if unknown:
        raise ValueError(f"labels {unknown} are not in label_values")
    labels_array = np.asarray(labels, dtype=object)
    parts: list[list[int]] = [[] for _ in range(proportions.shape[1])]
    for value, j in row_of.items():
        idx = np.flatnonzero(labels_array == value)
        rng.shuffle(idx)
        # Flower truncates the boundaries with astype(int); that hands the last
        # client one sample of nearly every label (0.999·n floors to n - 1), so
        # round to the nearest boundary instead.
        cuts = np.rint(np.cumsum(proportions[j]) * len(idx)).astype(int)[:-1]
        for client, chunk in enumerate(np.split(idx, cuts)):
            parts[client].extend(int(i) for i in chunk)
    return [sorted(part) for part in parts]


def dirichlet_partition(
    split_labels: dict[str, list[str]],
    num_clients: int,
    alpha: float,
    min_size: int,
    seed: int,
    min_size_split: str = "train",
) -> dict[str, list[list[int]]]:
    """Dirichlet label skew over all splits with one shared proportion matrix.

    Redraws (at most :data:`MAX_ATTEMPTS` times) until every client has at
    least ``min_size`` samples of ``min_size_split``.
    """
    if min_size_split not in split_labels:
        raise ValueError(f"min_size_split {min_size_split!r} is not one of the splits {sorted(split_labels)}")
    _check_sizes(len(split_labels[min_size_split]), num_clients, min_size, min_size_split)
    label_values = sorted({value for labels in split_labels.values() for value in labels})
    # Fixed split order so the result does not depend on the dict's order.
    order = [min_size_split] + sorted(s for s in split_labels if s != min_size_split)
    rng = np.random.default_rng(seed)
    for _ in range(MAX_ATTEMPTS):
        proportions = dirichlet_proportions(label_values, num_clients, alpha, rng)
        first = assign_by_proportions(split_labels[min_size_split], label_values, proportions, rng)
        if min(len(part) for part in first) >= min_size:
            parts = {min_size_split: first}
            for split in order[1:]:
                parts[split] = assign_by_proportions(split_labels[split], label_values, proportions, rng)
            return {split: parts[split] for split in split_labels}
    raise ValueError(
        f"dirichlet partition: no draw in {MAX_ATTEMPTS} attempts gave every one of "
        f"num_clients={num_clients} clients at least min_size={min_size} {min_size_split!r} samples "
        f"with alpha={alpha}; increase alpha, lower min_size or use fewer clients"
    )


def _check_sizes(n_train: int, num_clients: int, min_size: int, split: str) -> None:
    if num_clients < 1:
        raise ValueError(f"num_clients must be at least 1, got {num_clients}")
    if num_clients > n_train:
        raise ValueError(f"num_clients={num_clients} exceeds the number of {split!r} samples ({n_train})")
    if min_size < 0:
        raise ValueError(f"min_size must be non-negative, got {min_size}")
    if num_clients * min_size > n_train:
        raise ValueError(
            f"min_size={min_size} for num_clients={num_clients} clients needs "
            f"{num_clients * min_size} {split!r} samples, only {n_train} exist"
        )


def _stream(seed: int, purpose: str) -> np.random.Generator:
    # A named stream per random choice, so that adding one choice never shifts another.
    return np.random.default_rng(np.random.SeedSequence([seed, zlib.crc32(purpose.encode("utf-8"))]))


def _check_min_size(scheme: str, parts: list[list[int]], min_size: int, split: str, hint: str) -> None:
    smallest = min(len(part) for part in parts)
    if smallest < min_size:
        raise ValueError(
            f"{scheme} partition: a client holds only {smallest} {split!r} samples, fewer than "
            f"min_size={min_size}; {hint}"
        )


def _group_by_owner(labels: list[str], owner: Mapping[str, int], num_clients: int) -> list[list[int]]:
    parts: list[list[int]] = [[] for _ in range(num_clients)]
    for i, value in enumerate(labels):
        parts[owner[value]].append(i)
    return parts


# ----------------------------------------------------------------------------- quantity skew


def quantity_proportions(
    num_clients: int, sizes: str, alpha: float | None, exponent: float | None, rng: np.random.Generator
) -> np.ndarray:
    """The clients' shares of the data, shape (clients,), summing to 1.

    ``dirichlet``: q ~ Dir(alpha·1_K), the quantity-based skew of Li et al. 2022 ("Federated
    learning on non-IID data silos: an experimental study", NIID-Bench). ``power_law``: a
    Zipf law q_k ∝ (ρ_k + 1)^(−exponent) over a seeded random ranking ρ of the clients, the
    power-law client sizes of LEAF (Caldas et al. 2018) and FedProx (Li et al. 2020);
    exponent 0 gives equal shares.
    """
    if sizes == "dirichlet":
        if alpha is None or not alpha > 0:
            raise ValueError(f"alpha must be > 0 for quantity skew with sizes 'dirichlet', got {alpha!r}")
        return rng.dirichlet(np.full(num_clients, float(alpha)))
    if sizes == "power_law":
        if exponent is None or not exponent >= 0:
            raise ValueError(f"exponent must be >= 0 for quantity skew with sizes 'power_law', got {exponent!r}")
        weights = (rng.permutation(num_clients) + 1.0) ** -float(exponent)
        return weights / weights.sum()
    raise ValueError(f"sizes must be one of {QUANTITY_SIZES}, got {sizes!r}")


def apportion(n: int, proportions: np.ndarray, min_size: int = 0) -> np.ndarray:
    """Integer sizes summing to ``n``: ``min_size`` each, the rest by the largest-remainder method.

    Each client first gets ``min_size``; the remaining n − K·min_size samples are shared in
    proportion to ``proportions`` (Hamilton's method: floors, then one more sample to the
    largest fractional parts, ties to the lower client index).
    """
    proportions = np.asarray(proportions, dtype=float)
    k = len(proportions)
    if k * min_size > n:
        raise ValueError(f"min_size={min_size} for {k} clients needs {k * min_size} samples, only {n} exist")
    rest = n - k * min_size
    quotas = proportions / proportions.sum() * rest
    counts = np.floor(quotas).astype(int)
    order = np.lexsort((np.arange(k), -(quotas - counts)))
    counts[order[: rest - int(counts.sum())]] += 1
    return counts + min_size


def quantity_partition(
    split_sizes: Mapping[str, int],
    num_clients: int,
    sizes: str,
    alpha: float | None,
    exponent: float | None,
    min_size: int,
    seed: int,
    min_size_split: str = "train",
) -> dict[str, list[list[int]]]:
    """Quantity skew: client sizes from :func:`quantity_proportions`, samples otherwise IID.

    One share vector is drawn and applied to every split (a client's val and test are as large,
    relative to the split, as its train data), each split is shuffled with its own stream and cut
    at the :func:`apportion`-ed sizes. Unlike NIID-Bench, which redraws until every client is big
    enough, ``min_size`` samples of ``min_size_split`` are reserved for every client first, so no
    redraw is needed. As alpha → ∞ (or exponent → 0) every client gets n/K samples: IID.
    """
    _check_sizes(split_sizes[min_size_split], num_clients, min_size, min_size_split)
    proportions = quantity_proportions(num_clients, sizes, alpha, exponent, _stream(seed, "quantity"))
    parts = {}
    for split, n in split_sizes.items():
        counts = apportion(n, proportions, min_size if split == min_size_split else 0)
        order = np.random.default_rng(_split_seed(seed, split)).permutation(n)
        parts[split] = [sorted(int(i) for i in chunk) for chunk in np.split(order, np.cumsum(counts)[:-1])]
    return parts


# ----------------------------------------------------------------------------- by attribute, by task


def deal_values(values: list[str], num_clients: int, rng: np.random.Generator) -> dict[str, int]:
    """Owner client of each value: the values in a seeded random order, dealt round-robin."""
    order = rng.permutation(len(values))
    return {values[j]: position % num_clients for position, j in enumerate(order)}


def attribute_partition(
    split_labels: Mapping[str, list[str]],
    num_clients: int,
    min_size: int,
    seed: int,
    min_size_split: str = "train",
) -> dict[str, list[list[int]]]:
    """Whole label values per client: FedVLMBench's "complete" non-IID partition.

    FedVLMBench (Sec. 3, Fed-FGVC / Fed-SLAKE) gives every client whole categories of a key
    attribute (e.g. FGVC's manufacturer), "merged" so that each category lives at exactly one
    client. Here the values seen in any split are dealt round-robin in a seeded random order
    (:func:`deal_values`), the same deal for every split; the deal is repeated (at most
    :data:`MAX_ATTEMPTS` times) until every client has ``min_size`` samples of ``min_size_split``.
    """
    _check_sizes(len(split_labels[min_size_split]), num_clients, min_size, min_size_split)
    values = sorted({value for labels in split_labels.values() for value in labels})
    if min_size > 0 and len(values) < num_clients:
        raise ValueError(
            f"attribute partition: the label has {len(values)} values but num_clients={num_clients}, "
            f"so some client would hold none and fall below min_size={min_size}; use fewer clients "
            "or a label with more values"
        )
    rng = _stream(seed, "attribute")
    for _ in range(MAX_ATTEMPTS):
        owner = deal_values(values, num_clients, rng)
        train = _group_by_owner(split_labels[min_size_split], owner, num_clients)
        if min(len(part) for part in train) >= min_size:
            return {split: _group_by_owner(labels, owner, num_clients) for split, labels in split_labels.items()}
    raise ValueError(
        f"attribute partition: no deal in {MAX_ATTEMPTS} attempts gave every one of num_clients={num_clients} "
        f"clients at least min_size={min_size} {min_size_split!r} samples; lower min_size or use fewer clients"
    )


def task_of_clients(tasks: list[str], num_clients: int, seed: int) -> list[str]:
    """The task each client holds: the tasks in a seeded random order, dealt round-robin over clients.

    With as many clients as tasks every client holds a different task (FedVLMBench maps each task
    to a dedicated client); with more clients, tasks are shared by several clients.
    """
    if num_clients < len(tasks):
        raise ValueError(
            f"multitask partition: {len(tasks)} tasks {tasks} need at least as many clients, "
            f"got num_clients={num_clients}"
        )
    order = _stream(seed, "multitask").permutation(len(tasks))
    return [tasks[order[k % len(tasks)]] for k in range(num_clients)]


def multitask_partition(
    split_labels: Mapping[str, list[str]],
    num_clients: int,
    min_size: int,
    seed: int,
    min_size_split: str = "train",
) -> dict[str, list[list[int]]]:
    """One task per client (FedVLMBench's Fed-Nature and Fed-Med multitask datasets).

    The labels are each record's task (its ``task`` field, or whatever names its source
    dataset); :func:`task_of_clients` gives each client one task, and a task's samples are
    shuffled (per split) and cut into near-equal parts among the clients holding it.
    """
    _check_sizes(len(split_labels[min_size_split]), num_clients, min_size, min_size_split)
    tasks = sorted({value for labels in split_labels.values() for value in labels})
    held = task_of_clients(tasks, num_clients, seed)
    holders = {task: [k for k in range(num_clients) if held[k] == task] for task in tasks}
    parts: dict[str, list[list[int]]] = {}
    for split, labels in split_labels.items():
        rng = np.random.default_rng(_split_seed(seed, split))
        labels_array = np.asarray(labels, dtype=object)
        split_parts: list[list[int]] = [[] for _ in range(num_clients)]
        for task in tasks:
            idx = rng.permutation(np.flatnonzero(labels_array == task))
            for client, chunk in zip(holders[task], np.array_split(idx, len(holders[task]))):
                split_parts[client].extend(int(i) for i in chunk)
        parts[split] = [sorted(part) for part in split_parts]
    _check_min_size(
        "multitask", parts[min_size_split], min_size, min_size_split,
        "a task has too few samples for the clients sharing it; lower min_size or use fewer clients",
    )
    return parts


# ----------------------------------------------------------------------------- semantic clusters


def cluster_size_cap(max_cluster_size: int | float | None, n: int) -> int | None:
    """The cap on a cluster's training samples: an int is a count, a float in (0, 1] a fraction of ``n``."""
    if max_cluster_size is None:
        return None
    if isinstance(max_cluster_size, bool) or not isinstance(max_cluster_size, (int, float)):
        raise ValueError(f"max_cluster_size must be an int, a float in (0, 1] or None, got {max_cluster_size!r}")
    if isinstance(max_cluster_size, int):
        if max_cluster_size < 1:
            raise ValueError(f"max_cluster_size must be at least 1, got {max_cluster_size}")
        return max_cluster_size
    if not 0 < max_cluster_size <= 1:
        raise ValueError(f"max_cluster_size as a fraction must be in (0, 1], got {max_cluster_size}")
    return max(1, int(np.floor(max_cluster_size * n)))


def cluster_partition(
    split_embeddings: Mapping[str, tuple[np.ndarray, np.ndarray]],
    num_clients: int,
    mode: str,
    max_cluster_size: int | float | None,
    min_size: int,
    seed: int,
    center: bool = True,
    min_size_split: str = "train",
) -> dict[str, list[list[int]]]:
    """One semantic cluster per client (Fed-CMP App. E; the clustering is in :mod:`fedumm.clustering`).

    ``split_embeddings`` maps each split to its (image, text) embedding matrices, rows in the
    split's sample order. The ``min_size_split`` (train) samples are clustered under ``mode`` and
    each cluster is capped at ``max_cluster_size`` (:func:`cluster_size_cap`) by pruning the
    samples farthest from its centroid; pruned samples belong to no client. Every sample of the
    other splits goes to its nearest centroid and none is pruned, so a client's val and test data
    are drawn from the same region of embedding space as its training data and held-out scores
    use every sample. Cluster k is client k. ``center`` subtracts each modality's mean
    training embedding first (:mod:`fedumm.clustering`).
    """
    if min_size_split not in split_embeddings:
        raise ValueError(f"cluster partition: no embeddings of the {min_size_split!r} split")
    image, text = split_embeddings[min_size_split]
    _check_sizes(len(image), num_clients, min_size, min_size_split)
    cap = cluster_size_cap(max_cluster_size, len(image))
    if cap is not None and cap < min_size:
        raise ValueError(f"max_cluster_size caps clusters at {cap} samples, below min_size={min_size}")
    result = clustering.cluster(image, text, mode, num_clients, seed, cap, center)
    parts = {min_size_split: [np.flatnonzero(result.assignment == k).tolist() for k in range(num_clients)]}
    for split, (split_image, split_text) in split_embeddings.items():
        if split != min_size_split:
            nearest = clustering.nearest_centroid(split_image, split_text, result)
            parts[split] = [np.flatnonzero(nearest == k).tolist() for k in range(num_clients)]
    _check_min_size(
        "cluster", parts[min_size_split], min_size, min_size_split,
        "the clusters are unbalanced; lower min_size, raise max_cluster_size or use fewer clients",
    )
    return {split: parts[split] for split in split_embeddings}


# ----------------------------------------------------------------------------- entry point


def _checked_embeddings(
    split_labels: Mapping[str, list[str]], embeddings: Mapping[str, tuple[np.ndarray, np.ndarray]] | None
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    if embeddings is None:
        raise ValueError("the cluster scheme needs embeddings (set partition.embedder)")
    missing = sorted(set(split_labels) - set(embeddings))
    if missing:
        raise ValueError(f"the cluster scheme needs embeddings of every split; missing {missing}")
    for split, labels in split_labels.items():
        for name, matrix in zip(("image", "text"), embeddings[split]):
            if len(matrix) != len(labels):
                raise ValueError(
                    f"{name} embeddings of split {split!r} have {len(matrix)} rows but the split has {len(labels)} samples"
                )
    return {split: embeddings[split] for split in split_labels}


def partition_splits(
    split_labels: dict[str, list[str]],
    scheme: str,
    num_clients: int,
    seed: int,
    alpha: float | None,
    min_size: int,
    *,
    sizes: str = "dirichlet",
    exponent: float | None = None,
    embeddings: Mapping[str, tuple[np.ndarray, np.ndarray]] | None = None,
    mode: str = "image",
    max_cluster_size: int | float | None = None,
    center: bool = True,
) -> dict[str, list[list[int]]]:
    """Partition every split among ``num_clients`` clients; the single entry point.

    ``split_labels`` maps split name to the per-sample labels and must contain
    ``"train"``, the split on which ``num_clients`` and ``min_size`` are checked.
    ``alpha`` is used by the dirichlet scheme and by quantity skew with ``sizes="dirichlet"``;
    ``exponent`` by quantity skew with ``sizes="power_law"``. The labels are the tasks for
    ``multitask``. ``cluster`` reads ``embeddings`` (split → (image, text) matrices, rows in
    the order of ``split_labels``), ``mode`` (:data:`fedumm.clustering.MODES`),
    ``max_cluster_size`` and ``center``.
    """
    if scheme not in SCHEMES:
        raise ValueError(f"scheme must be one of {SCHEMES}, got {scheme!r}")
    if "train" not in split_labels:
        raise ValueError(f"split_labels must contain a 'train' split, got {sorted(split_labels)}")
    if scheme == "dirichlet":
        if alpha is None or not alpha > 0:
            raise ValueError(f"alpha must be > 0 for the dirichlet scheme, got {alpha!r}")
        return dirichlet_partition(split_labels, num_clients, alpha, min_size, seed)
    _check_sizes(len(split_labels["train"]), num_clients, min_size, "train")
    if scheme == "quantity":
        split_sizes = {split: len(labels) for split, labels in split_labels.items()}
        return quantity_partition(split_sizes, num_clients, sizes, alpha, exponent, min_size, seed)
    if scheme == "attribute":
        return attribute_partition(split_labels, num_clients, min_size, seed)
    if scheme == "multitask":
        return multitask_partition(split_labels, num_clients, min_size, seed)
    if scheme == "cluster":
        checked = _checked_embeddings(split_labels, embeddings)
        return cluster_partition(checked, num_clients, mode, max_cluster_size, min_size, seed, center)
    return {
        split: _iid(len(labels), num_clients, np.random.default_rng(_split_seed(seed, split)))
        for split, labels in split_labels.items()
    }


# ----------------------------------------------------------------------------- pooling and one-pass rounds


def pool(parts: Mapping[str, list[list[int]]]) -> dict[str, list[list[int]]]:
    """One client holding the union of every client's samples, per split (the centralized baseline)."""
    return {split: [sorted(i for part in split_parts for i in part)] for split, split_parts in parts.items()}


def one_pass_rounds(train_parts: list[list[int]], num_parts: int, seed: int) -> list[list[list[int]]]:
    """Each client's training indices cut into ``num_parts`` disjoint near-equal parts (client → part → indices).

    Fed-CMP (Sec. 4.1) pre-trains one pass over the data: "the local dataset is divided into 10
    parts, and in each round of communication, the client will perform training on one of the
    data subsets". Client k's samples are shuffled with its own stream of ``seed`` and cut with
    ``np.array_split``; each part is sorted. Every client needs at least ``num_parts`` samples.
    """
    if num_parts < 1:
        raise ValueError(f"one_pass must be at least 1 part, got {num_parts}")
    rounds = []
    for k, part in enumerate(train_parts):
        if len(part) < num_parts:
            raise ValueError(
                f"one_pass: client {k} holds {len(part)} training samples, fewer than the {num_parts} parts"
            )
        order = _stream(seed, f"one_pass/{k}").permutation(np.asarray(part, dtype=int))
        rounds.append([sorted(int(i) for i in chunk) for chunk in np.array_split(order, num_parts)])
    return rounds


def pool_rounds(rounds: list[list[list[int]]]) -> list[list[list[int]]]:
    """The pooled client's parts: part r is the union of every client's part r."""
    num_parts = len(rounds[0]) if rounds else 0
    return [[sorted(i for client in rounds for i in client[r]) for r in range(num_parts)]]


def round_train_ids(index: Mapping, r: int) -> list[str]:
    """The training sample ids a client uses in round ``r`` (1-based) according to its index file.

    With ``train_rounds`` (one-pass partitions) round r reads part (r − 1) mod R, so rounds
    beyond R start a second pass; without it, every round reads all of ``train``.
    """
    if r < 1:
        raise ValueError(f"round must be at least 1, got {r}")
    parts = index.get("train_rounds")
    if parts is None:
        return list(index["train"])
    return list(parts[(r - 1) % len(parts)])


def partition_sizes(split_sizes: Mapping[str, int], parts: Mapping[str, list[list[int]]]) -> dict[str, dict]:
    """Per split: the clients' sample counts and how many samples no client holds (pruned)."""
    return {
        split: {
            "clients": [len(part) for part in parts[split]],
            "unassigned": int(split_sizes[split] - sum(len(part) for part in parts[split])),
        }
        for split in parts
    }


def label_counts(labels: list[str], parts: list[list[int]]) -> tuple[list[str], np.ndarray]:
    """Sorted label values and the (clients × labels) count matrix of a partition."""
    values = sorted(set(labels))
    column = {value: j for j, value in enumerate(values)}
    counts = np.zeros((len(parts), len(values)), dtype=int)
    for client, part in enumerate(parts):
        for i in part:
            counts[client, column[labels[i]]] += 1
    return values, counts


def _kl_bits(p: np.ndarray, q: np.ndarray) -> float:
    # KL(p || q) in bits with 0·log 0 = 0.
    mask = p > 0
    return float(np.sum(p[mask] * np.log2(p[mask] / q[mask])))


def js_divergence_heterogeneity(counts: np.ndarray) -> float:
    """Mean pairwise Jensen–Shannon divergence (base 2, in [0, 1]) of the clients' label distributions.

    Rows of ``counts`` are clients; clients without samples are ignored. 0 means
    every client has the same label distribution.
    """
    counts = np.asarray(counts, dtype=float)
    totals = counts.sum(axis=1)
    dists = counts[totals > 0] / totals[totals > 0, None]
    k = len(dists)
    if k < 2:
        return 0.0
    divergences = []
    for a in range(k):
        for b in range(a + 1, k):
            m = (dists[a] + dists[b]) / 2
            divergences.append(0.5 * _kl_bits(dists[a], m) + 0.5 * _kl_bits(dists[b], m))
    return float(np.mean(divergences))


def pairwise_js_divergences(counts: np.ndarray) -> np.ndarray:
    """(clients × clients) Jensen–Shannon divergences (base 2) of the clients' label distributions.

    The entries are those :func:`js_divergence_heterogeneity` averages over pairs a < b; a client
    without samples has NaN in its row and column.
    """
    counts = np.asarray(counts, dtype=float)
    totals = counts.sum(axis=1)
    k = len(counts)
    matrix = np.full((k, k), np.nan)
    for a in range(k):
        for b in range(k):
            if totals[a] > 0 and totals[b] > 0:
                p, q = counts[a] / totals[a], counts[b] / totals[b]
                m = (p + q) / 2
                matrix[a, b] = 0.5 * _kl_bits(p, m) + 0.5 * _kl_bits(q, m)
    return matrix


def heterogeneity_summary(values: list[str], counts: np.ndarray, label_field: str, split: str = "train") -> dict:
    """The heterogeneity of a partition as a JSON-ready mapping (``heterogeneity.json``).

    ``mean_pairwise_js_divergence`` is :func:`js_divergence_heterogeneity` (0: every client has
    the label distribution of every other; 1: no two clients share a label value) and
    ``pairwise_js_divergence`` the matrix of :func:`pairwise_js_divergences` (null: empty client).
    """
    matrix = pairwise_js_divergences(counts)
    return {
        "label": label_field,
        "split": split,
        "clients": int(len(counts)),
        "label_values": len(values),
        "mean_pairwise_js_divergence": js_divergence_heterogeneity(counts),
        "pairwise_js_divergence": [[None if np.isnan(x) else float(x) for x in row] for row in matrix],
    }


def _figure(figsize: tuple[float, float]) -> Figure:
    """A bare Figure, which renders with the Agg canvas without touching pyplot's global backend.

    matplotlib is imported here, not with the module: client jobs import this module for
    ``round_train_ids`` and never draw.
    """
    from matplotlib.figure import Figure

    return Figure(figsize=figsize)


def _png(fig: Figure) -> bytes:
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()


def heterogeneity_png(matrix: np.ndarray, title: str) -> bytes:
    """PNG bytes of a client × client divergence matrix on a fixed [0, 1] colour scale."""
    k = len(matrix)
    fig = _figure((max(5.0, 0.35 * k + 2.5), max(3.5, 0.35 * k + 2.0)))
    ax = fig.add_subplot()
    image = ax.imshow(np.ma.masked_invalid(matrix), vmin=0.0, vmax=1.0, cmap="magma", interpolation="nearest")
    ticks = [str(c) for c in range(k)]
    ax.set_xticks(range(k), labels=ticks, fontsize=8)
    ax.set_yticks(range(k), labels=ticks, fontsize=8)
    ax.set_xlabel("client")
    ax.set_ylabel("client")
    ax.set_title(title, fontsize=10)
    fig.colorbar(image, ax=ax, label="JS divergence (bits)")
    return _png(fig)


def projection_png(points: np.ndarray, client_of: np.ndarray, title: str) -> bytes:
    """PNG bytes of a 2-D scatter of samples coloured by client; ``client_of`` −1 (pruned) is grey.

    Fed-CMP Fig. 3 shows its clusters with t-SNE; a linear projection (PCA) is used here, which
    needs no extra dependency and is deterministic.
    """
    points, client_of = np.asarray(points), np.asarray(client_of)
    fig = _figure((5.5, 4.5))
    ax = fig.add_subplot()
    unassigned = client_of < 0
    if unassigned.any():
        ax.scatter(*points[unassigned].T, s=4, c="lightgrey", marker="x", label=f"pruned ({int(unassigned.sum())})")
    clients = sorted(set(client_of[~unassigned].tolist()))
    colours = _colours(len(clients))
    for colour, k in zip(colours, clients):
        ax.scatter(*points[client_of == k].T, s=6, color=colour, label=f"client {k}")
    if len(clients) <= 20:
        ax.legend(fontsize=7, markerscale=2, loc="best")
    ax.set_xlabel("PC 1")
    ax.set_ylabel("PC 2")
    ax.set_title(title)
    return _png(fig)


def _colours(n: int) -> list:
    """``n`` distinct colours: tab10 up to 10, tab20 up to 20, then evenly spaced on turbo."""
    from matplotlib import colormaps

    if n <= 10:
        return [colormaps["tab10"](i) for i in range(n)]
    if n <= 20:
        return [colormaps["tab20"](i) for i in range(n)]
    return [colormaps["turbo"](x) for x in np.linspace(0, 1, n)]


def counts_csv(values: list[str], counts: np.ndarray) -> str:
    """CSV text: header ``client,<values...>,total`` and one row per client."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["client", *values, "total"])
    for client, row in enumerate(counts):
        writer.writerow([client, *(int(c) for c in row), int(row.sum())])
    return buffer.getvalue()


def heatmap_png(values: list[str], counts: np.ndarray, title: str, xlabel: str = "label") -> bytes:
    """PNG bytes of a client × label count heatmap with axis labels and a colour bar."""
    n_clients, n_values = counts.shape
    fig = _figure((max(4.0, 0.45 * n_values + 2.5), max(3.0, 0.35 * n_clients + 2.0)))
    ax = fig.add_subplot()
    image = ax.imshow(counts, aspect="auto", cmap="viridis", interpolation="nearest")
    ax.set_xticks(range(n_values), labels=values, rotation=90, fontsize=8)
    ax.set_yticks(range(n_clients), labels=[str(k) for k in range(n_clients)], fontsize=8)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("client")
    ax.set_title(title)
    # Numbers only while the cells are big enough to read them.
    if n_values <= 30 and n_clients <= 30:
        threshold = counts.max() / 2 if counts.size else 0
        for client in range(n_clients):
            for j in range(n_values):
                colour = "black" if counts[client, j] > threshold else "white"
                ax.text(j, client, str(counts[client, j]), ha="center", va="center", fontsize=6, color=colour)
    fig.colorbar(image, ax=ax, label="samples")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()


def write_partition(
    index_dir: Path,
    counts_path: Path,
    heatmap_path: Path,
    split_records: dict[str, list[dict]],
    parts: dict[str, list[list[int]]],
    label_field: str,
    *,
    train_rounds: list[list[list[int]]] | None = None,
) -> None:
    """Write ``index_dir/client_{k:03d}.json`` (sample ids per split), the counts CSV and the heatmap.

    Counts and heatmap are over the train split's ``label_field`` values. With ``train_rounds``
    (client → part → train indices, :func:`one_pass_rounds`) each index file also holds
    ``train_rounds``: the ids of each one-pass part, read by :func:`round_train_ids`.
    """
    if set(split_records) != set(parts):
        raise ValueError(f"split_records splits {sorted(split_records)} differ from parts splits {sorted(parts)}")
    if "train" not in parts:
        raise ValueError(f"parts must contain a 'train' split, got {sorted(parts)}")
    num_clients = len(parts["train"])
    if any(len(p) != num_clients for p in parts.values()):
        raise ValueError(f"every split must have {num_clients} clients, got {({s: len(p) for s, p in parts.items()})}")
    if train_rounds is not None and len(train_rounds) != num_clients:
        raise ValueError(f"train_rounds has {len(train_rounds)} clients, the partition {num_clients}")
    index_dir = Path(index_dir)
    for k in range(num_clients):
        client = {"client": k}
        for split, split_parts in parts.items():
            client[split] = [split_records[split][i]["id"] for i in split_parts[k]]
        if train_rounds is not None:
            client["train_rounds"] = [[split_records["train"][i]["id"] for i in part] for part in train_rounds[k]]
        atomic_write_json(index_dir / f"client_{k:03d}.json", client)
    labels = [label_of(r, label_field) for r in split_records["train"]]
    values, counts = label_counts(labels, parts["train"])
    atomic_write_text(counts_path, counts_csv(values, counts))
    heterogeneity = js_divergence_heterogeneity(counts)
    title = f"train samples per client by {label_field}\nmean pairwise JS divergence {heterogeneity:.3f}"
    atomic_write_bytes(heatmap_path, heatmap_png(values, counts, title, label_field))


def client_of(n: int, parts: list[list[int]]) -> np.ndarray:
    """Each of the ``n`` samples' client under ``parts``, −1 for samples no client holds."""
    owner = np.full(n, -1)
    for k, part in enumerate(parts):
        owner[np.asarray(part, dtype=int)] = k
    return owner


def write_heterogeneity(
    json_path: Path, png_path: Path, train_records: list[dict], train_parts: list[list[int]], label_field: str
) -> dict:
    """Write ``heterogeneity.json`` (:func:`heterogeneity_summary`) and its client × client figure."""
    labels = [label_of(r, label_field) for r in train_records]
    values, counts = label_counts(labels, train_parts)
    summary = heterogeneity_summary(values, counts, label_field)
    atomic_write_json(json_path, summary)
    title = (f"JS divergence between clients' {label_field} distributions\n"
             f"mean over pairs {summary['mean_pairwise_js_divergence']:.3f}")
    atomic_write_bytes(png_path, heterogeneity_png(pairwise_js_divergences(counts), title))
    return summary


def write_projection(
    path: Path,
    image: np.ndarray,
    text: np.ndarray,
    train_parts: list[list[int]],
    mode: str,
    title: str,
    center: bool = True,
) -> None:
    """Write the PCA projection (Fed-CMP Fig. 3 style) of the train samples' ``mode`` vectors.

    The vectors are those the clustering compares (:func:`fedumm.clustering.mode_vectors`, after
    the same centring): image, text, or the joint [v, t]/√2 for ``joint`` and ``cross``.
    """
    image_mean, text_mean = clustering.modality_means(image, text, center)
    points = clustering.pca_2d(clustering.mode_vectors(image - image_mean, text - text_mean, mode)[0])
    atomic_write_bytes(path, projection_png(points, client_of(len(points), train_parts), title))
