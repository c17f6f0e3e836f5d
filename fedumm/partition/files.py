"""The partition rule's files: client indexes, counts, figures, heterogeneity and projection.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np

from fedumm.artifacts import GENERATION_IDS, client_index_name
from fedumm.data.shards import GENERATE_TASK
from fedumm.io import atomic_write_bytes, atomic_write_json, atomic_write_text
from fedumm.partition import clustering
from fedumm.partition.figures import heatmap_png, heterogeneity_png, projection_png
from fedumm.partition.heterogeneity import (
    heterogeneity_summary,
    js_divergence_heterogeneity,
    label_counts,
    pairwise_js_divergences,
)
from fedumm.partition.schemes import label_of


def counts_csv(values: list[str], counts: np.ndarray) -> str:
    """CSV text: header ``client,<values...>,total`` and one row per client."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["client", *values, "total"])
    for client, row in enumerate(counts):
        writer.writerow([client, *(int(c) for c in row), int(row.sum())])
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
    ``train_rounds``: the ids of each one-pass part, read by :func:`round_train_ids`. A client with
    text-to-image training records lists them again under ``generation_ids``, so that the server
    weighs each modality's adapter by the client's count of that modality without reading the data.
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
        generation_ids = [split_records["train"][i]["id"] for i in parts["train"][k]
                          if split_records["train"][i].get("task") == GENERATE_TASK]
        if generation_ids:
            client[GENERATION_IDS] = generation_ids
        atomic_write_json(index_dir / client_index_name(k), client)
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

    The vectors are those the clustering compares (:func:`fedumm.partition.clustering.mode_vectors`, after
    the same centring): image, text, or the joint [v, t]/√2 for ``joint`` and ``cross``.
    """
    image_mean, text_mean = clustering.modality_means(image, text, center)
    points = clustering.pca_2d(clustering.mode_vectors(image - image_mean, text - text_mean, mode)[0])
    atomic_write_bytes(path, projection_png(points, client_of(len(points), train_parts), title))
