"""From dataset records to model-ready batches.

A record (see ``fedumm.data``) becomes a text example (prompt + target, tokenized with the
loss on the target only) plus its visual input, which is either the image, transformed for
the vision encoder, or the encoder's cached output (``fedumm.features``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from fedumm import data, features, text


def target_of(record: dict, task: str) -> tuple[str | None, str]:
    """(question, target) for a training task: VQA-style tasks answer, captioning describes."""
    if task == "caption":
        return None, record["caption"]
    return record["question"], record["multiple_choice_answer"]


def build_examples(records: list[dict], tokenizer, tasks: list[str]) -> list[dict]:
    """One tokenized example per record and task; ``vqa`` covers the classify records too."""
    examples = []
    for record in records:
        for task in tasks:
            question, target = target_of(record, task)
            encoded = text.encode_example(tokenizer, question, target)
            examples.append({"id": record["id"], **encoded})
    return examples


class VisualSource:
    """Visual inputs by sample id: cached encoder features when given, images otherwise."""

    def __init__(
        self,
        shards: list[Path],
        ids: set[str],
        feature_file: Path | None = None,
        transform=None,
    ) -> None:
        if feature_file is not None:
            self.kind = "image_features"
            self.tensors = features.load_features(feature_file, ids)
        else:
            self.kind = "pixel_values"
            samples = data.read_samples(shards, ids)
            self.tensors = {sample["id"]: transform(sample["image"]) for sample in samples}
        missing = ids - set(self.tensors)
        if missing:
            raise KeyError(f"no visual input for {len(missing)} sample(s), e.g. {sorted(missing)[0]}")

    def batch(self, ids: list[str]) -> dict[str, torch.Tensor]:
        return {self.kind: torch.stack([self.tensors[i] for i in ids])}


def collate(examples: list[dict], visual: VisualSource, pad_id: int) -> dict[str, torch.Tensor]:
    return {**text.collate_train(examples, pad_id), **visual.batch([e["id"] for e in examples])}


def shuffled_batches(num_examples: int, batch_size: int, steps: int, seed: int) -> Iterator[list[int]]:
    """``steps`` batches of example indices; a fresh seeded permutation each pass over the data."""
    rng = np.random.default_rng(seed)
    produced = 0
    while produced < steps:
        order = rng.permutation(num_examples)
        for start in range(0, num_examples, batch_size):
            if produced == steps:
                return
            yield [int(i) for i in order[start : start + batch_size]]
            produced += 1


def steps_for(num_examples: int, batch_size: int, epochs: float, steps: int | None) -> int:
    """Local steps: ``steps`` when given, else ``epochs`` passes over the data (at least one step)."""
    if steps is not None:
        return steps
    return max(1, int(np.ceil(epochs * num_examples / batch_size)))
