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
  (:func:`cluster_partition`, :mod:`fedumm.partition.clustering`).

Partitions are lists (one per client) of ascending sample indices into a split.
Every index of a split belongs to exactly one client, except the training
samples that the ``cluster`` scheme prunes by design, which belong to none.
:func:`fedumm.partition.rounds.one_pass_rounds` additionally cuts each client's training data into
disjoint per-round parts (Fed-CMP's one-pass pre-training).
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping

import numpy as np

from fedumm.partition import clustering

LABEL_FIELDS: dict[str, str] = {
    "answer": "multiple_choice_answer",
    "question_type": "question_type",
    "answer_type": "answer_type",
    "label": "label",
    "domain": "domain",
    "task": "task",
    # The source dataset of a mixture's record (fedumm.data.sources.mixture): one per client with multitask.
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


def _label_groups(labels: list[str], label_values: list[str]) -> list[np.ndarray]:
    """The ascending sample indices of each of ``label_values`` in ``labels`` (every label must be one of them)."""
    row_of = {value: j for j, value in enumerate(label_values)}
    unknown = sorted(set(labels) - set(row_of))
    if unknown:
        raise ValueError(f"labels {unknown} are not in label_values")
    codes = np.fromiter((row_of[value] for value in labels), dtype=np.int64, count=len(labels))
    return [np.flatnonzero(codes == j) for j in range(len(label_values))]


def _owners(groups: list[np.ndarray], proportions: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The client of every sample: each label's shuffled indices cut at the cumulative ``proportions``."""
    owner = np.zeros(sum(len(idx) for idx in groups), dtype=np.int64)
    for j, idx in enumerate(groups):
        idx = idx.copy()
        rng.shuffle(idx)
        # Flower truncates the boundaries with astype(int); that hands the last
        # client one sample of nearly every label (0.999·n floors to n - 1), so
        # round to the nearest boundary instead.
        cuts = np.rint(np.cumsum(proportions[j]) * len(idx)).astype(int)[:-1]
        # Position p of the shuffled indices falls in chunk #{cuts <= p}, as with np.split(idx, cuts).
        owner[idx] = np.searchsorted(cuts, np.arange(len(idx)), side="right")
    return owner


def _parts_of(owner: np.ndarray, num_clients: int) -> list[list[int]]:
    """Ascending sample indices of each client, from the client of every sample."""
    order = np.argsort(owner, kind="stable")
    counts = np.bincount(owner, minlength=num_clients)
    return [chunk.tolist() for chunk in np.split(order, np.cumsum(counts)[:-1])]


def assign_by_proportions(
    labels: list[str], label_values: list[str], proportions: np.ndarray, rng: np.random.Generator
) -> list[list[int]]:
    """Cut each label's shuffled sample indices among clients at the cumulative ``proportions``.

    Row ``j`` of ``proportions`` belongs to ``label_values[j]``; every label in
    ``labels`` must be one of ``label_values``.
    """
    owner = _owners(_label_groups(labels, label_values), proportions, rng)
    return _parts_of(owner, proportions.shape[1])


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
    groups = {split: _label_groups(split_labels[split], label_values) for split in order}
    rng = np.random.default_rng(seed)
    for _ in range(MAX_ATTEMPTS):
        proportions = dirichlet_proportions(label_values, num_clients, alpha, rng)
        first = _owners(groups[min_size_split], proportions, rng)
        counts = np.bincount(first, minlength=num_clients)
        if counts.min() >= min_size:
            parts = {min_size_split: _parts_of(first, num_clients)}
            for split in order[1:]:
                parts[split] = _parts_of(_owners(groups[split], proportions, rng), num_clients)
            return {split: parts[split] for split in split_labels}
    short = int(np.argmin(counts))
    raise ValueError(
        f"dirichlet partition: no draw in {MAX_ATTEMPTS} attempts gave every one of "
        f"num_clients={num_clients} clients at least min_size={min_size} {min_size_split!r} samples "
        f"with alpha={alpha} (in the last draw client {short} held {int(counts[short])}); "
        "increase alpha, lower min_size or use fewer clients"
    )


def _check_sizes(n_train: int, num_clients: int, min_size: int, split: str) -> None:
    if num_clients < 1:
        raise ValueError(f"num_clients must be at least 1, got {num_clients}")
    if num_clients > n_train:
        raise ValueError(
            f"num_clients={num_clients} exceeds the number of {split!r} samples ({n_train}), so some client "
            "would hold none; use fewer clients or a larger split"
        )
    if min_size < 0:
        raise ValueError(f"min_size must be non-negative, got {min_size}")
    if num_clients * min_size > n_train:
        raise ValueError(
            f"min_size={min_size} for num_clients={num_clients} clients needs "
            f"{num_clients * min_size} {split!r} samples, only {n_train} exist; lower min_size or use fewer clients"
        )


def named_stream(seed: int, purpose: str) -> np.random.Generator:
    # A named stream per random choice, so that adding one choice never shifts another.
    return np.random.default_rng(np.random.SeedSequence([seed, zlib.crc32(purpose.encode("utf-8"))]))


def _check_min_size(scheme: str, parts: list[list[int]], min_size: int, split: str, hint: str) -> None:
    sizes = [len(part) for part in parts]
    short = int(np.argmin(sizes))
    if sizes[short] < min_size:
        raise ValueError(
            f"{scheme} partition: client {short} holds only {sizes[short]} {split!r} samples, fewer than "
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
    proportions = quantity_proportions(num_clients, sizes, alpha, exponent, named_stream(seed, "quantity"))
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
    train_counts = np.array([len(idx) for idx in _label_groups(split_labels[min_size_split], values)])
    # Each value goes to one client, so with fewer values in the split than clients no deal can help.
    present = int(np.count_nonzero(train_counts))
    rng = named_stream(seed, "attribute")
    for _ in range(MAX_ATTEMPTS):
        owner = deal_values(values, num_clients, rng)
        counts = np.bincount([owner[value] for value in values], weights=train_counts, minlength=num_clients)
        if counts.min() >= min_size:
            return {split: _group_by_owner(labels, owner, num_clients) for split, labels in split_labels.items()}
        if present < num_clients:
            break
    short = int(np.argmin(counts))
    if present < num_clients:
        raise ValueError(
            f"attribute partition: client {short} would hold no {min_size_split!r} samples: the label has "
            f"{present} values in the {min_size_split!r} split but num_clients={num_clients}, and each value "
            f"goes to one client; use at most {present} clients, or a label with more values"
        )
    raise ValueError(
        f"attribute partition: no deal in {MAX_ATTEMPTS} attempts gave every one of num_clients={num_clients} "
        f"clients at least min_size={min_size} {min_size_split!r} samples (in the last deal client {short} "
        f"held {int(counts[short])}); lower min_size or use fewer clients"
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
    order = named_stream(seed, "multitask").permutation(len(tasks))
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
    """One semantic cluster per client (Fed-CMP App. E; the clustering is in :mod:`fedumm.partition.clustering`).

    ``split_embeddings`` maps each split to its (image, text) embedding matrices, rows in the
    split's sample order. The ``min_size_split`` (train) samples are clustered under ``mode`` and
    each cluster is capped at ``max_cluster_size`` (:func:`cluster_size_cap`) by pruning the
    samples farthest from its centroid; pruned samples belong to no client. Every sample of the
    other splits goes to its nearest centroid and none is pruned, so a client's val and test data
    are drawn from the same region of embedding space as its training data and held-out scores
    use every sample. Cluster k is client k. ``center`` subtracts each modality's mean
    training embedding first (:mod:`fedumm.partition.clustering`).
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
    ``"train"``, the split on which ``num_clients`` and ``min_size`` are checked: every scheme gives
    every client at least ``min_size`` training samples or raises a ValueError naming a client that
    falls short, so ``min_size >= 1`` (the workflow's schema requires it) means no client is empty.
    ``alpha`` is used by the dirichlet scheme and by quantity skew with ``sizes="dirichlet"``;
    ``exponent`` by quantity skew with ``sizes="power_law"``. The labels are the tasks for
    ``multitask``. ``cluster`` reads ``embeddings`` (split → (image, text) matrices, rows in
    the order of ``split_labels``), ``mode`` (:data:`fedumm.partition.clustering.MODES`),
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
