"""Pooling client parts (the centralized baseline) and one-pass rounds (Fed-CMP's one-pass pre-training).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from fedumm.artifacts import GENERATION_IDS
from fedumm.partition.schemes import named_stream

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
        order = named_stream(seed, f"one_pass/{k}").permutation(np.asarray(part, dtype=int))
        rounds.append([sorted(int(i) for i in chunk) for chunk in np.array_split(order, num_parts)])
    return rounds


def pool_rounds(rounds: list[list[list[int]]]) -> list[list[list[int]]]:
    """The pooled client's parts: part r is the union of every client's part r."""
    num_parts = len(rounds[0]) if rounds else 0
    return [[sorted(i for client in rounds for i in client[r]) for r in range(num_parts)]]


def round_train_ids(index: Mapping, r: int) -> list[str]:
    """The training sample ids a client uses in round ``r`` (1-based) according to its index file.

    With ``train_rounds`` (one-pass partitions) round r reads part (r − 1) mod R, so rounds
    beyond R start a second pass; without it, every round reads all of ``train``. A client without
    training ids that round is an error naming it: it would have nothing to train on.
    """
    if r < 1:
        raise ValueError(f"round must be at least 1, got {r}")
    parts = index.get("train_rounds")
    ids = list(index["train"]) if parts is None else list(parts[(r - 1) % len(parts)])
    if not ids:
        raise ValueError(
            f"client {index.get('client')} has no training samples in round {r}"
            + (f" (one-pass part {(r - 1) % len(parts) + 1} of {len(parts)})" if parts is not None else "")
            + "; repartition with partition.min_size >= 1 (and one_pass at most min_size)"
        )
    return ids


def round_modality_sizes(index: Mapping, r: int) -> dict[str, int]:
    """The client's training examples of each modality in round ``r``: its text-to-image records
    (``generation_ids`` of the index) and the rest (understanding)."""
    ids = round_train_ids(index, r)
    generation = set(index.get(GENERATION_IDS, ()))
    count = sum(1 for i in ids if i in generation)
    return {"understanding": len(ids) - count, "generation": count}
