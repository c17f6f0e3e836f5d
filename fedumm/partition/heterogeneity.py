"""How heterogeneous a partition is: sizes, label counts per client and Jensen-Shannon divergences.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np


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
