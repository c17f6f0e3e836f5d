"""Federated partitioning of a dataset's splits among clients.

Two schemes:

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

Partitions are lists (one per client) of ascending sample indices into a split;
every index of a split belongs to exactly one client.
"""

from __future__ import annotations

import csv
import io
import zlib
from pathlib import Path

import numpy as np
# A bare Figure renders with the Agg canvas without touching pyplot's global backend.
from matplotlib.figure import Figure

from fedumm.io import atomic_write_bytes, atomic_write_json, atomic_write_text

LABEL_FIELDS: dict[str, str] = {
    "answer": "multiple_choice_answer",
    "question_type": "question_type",
    "answer_type": "answer_type",
    "label": "label",
    "domain": "domain",
    "task": "task",
}
SCHEMES: tuple[str, ...] = ("iid", "dirichlet")
MAX_ATTEMPTS = 100


def label_of(record: dict, field: str) -> str:
    """The value of partition field ``field`` (a key of :data:`LABEL_FIELDS`) of a record."""
    if field not in LABEL_FIELDS:
        raise ValueError(f"label field must be one of {sorted(LABEL_FIELDS)}, got {field!r}")
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


def partition_splits(
    split_labels: dict[str, list[str]],
    scheme: str,
    num_clients: int,
    seed: int,
    alpha: float | None,
    min_size: int,
) -> dict[str, list[list[int]]]:
    """Partition every split among ``num_clients`` clients; the single entry point.

    ``split_labels`` maps split name to the per-sample labels and must contain
    ``"train"``, the split on which ``num_clients`` and ``min_size`` are checked.
    ``alpha`` is used by the dirichlet scheme only.
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
    return {
        split: _iid(len(labels), num_clients, np.random.default_rng(_split_seed(seed, split)))
        for split, labels in split_labels.items()
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
    fig = Figure(figsize=(max(4.0, 0.45 * n_values + 2.5), max(3.0, 0.35 * n_clients + 2.0)))
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
) -> None:
    """Write ``index_dir/client_{k:03d}.json`` (sample ids per split), the counts CSV and the heatmap.

    Counts and heatmap are over the train split's ``label_field`` values.
    """
    if set(split_records) != set(parts):
        raise ValueError(f"split_records splits {sorted(split_records)} differ from parts splits {sorted(parts)}")
    if "train" not in parts:
        raise ValueError(f"parts must contain a 'train' split, got {sorted(parts)}")
    num_clients = len(parts["train"])
    if any(len(p) != num_clients for p in parts.values()):
        raise ValueError(f"every split must have {num_clients} clients, got {({s: len(p) for s, p in parts.items()})}")
    index_dir = Path(index_dir)
    for k in range(num_clients):
        client = {"client": k}
        for split, split_parts in parts.items():
            client[split] = [split_records[split][i]["id"] for i in split_parts[k]]
        atomic_write_json(index_dir / f"client_{k:03d}.json", client)
    labels = [label_of(r, label_field) for r in split_records["train"]]
    values, counts = label_counts(labels, parts["train"])
    atomic_write_text(counts_path, counts_csv(values, counts))
    heterogeneity = js_divergence_heterogeneity(counts)
    title = f"train samples per client by {label_field}\nmean pairwise JS divergence {heterogeneity:.3f}"
    atomic_write_bytes(heatmap_path, heatmap_png(values, counts, title, label_field))
