"""From dataset records to model-ready batches.

A record (see ``fedumm.data``) becomes a text example (prompt + target, tokenized with the
loss on the target only) plus its visual input, which is either the image, transformed for
the vision encoder, or the encoder's cached output (``fedumm.models.features``).

Every record names its task in ``task``:

* ``vqa``, ``classify``, ``ground``: the prompt is the record's ``question`` and the target its
  ``multiple_choice_answer`` (for ``ground``, the box written as text, ``fedumm.evaluation.grounding``);
* ``caption``: the prompt is the captioning prompt (``fedumm.models.text.format_prompt(None)``) and the
  targets are the reference captions, ``captions`` (a list) or ``caption``; as in COCO caption
  training, each (image, reference) pair is one example;
* ``generate`` (text-to-image): the prompt is the record's ``prompt`` and the target its image, as the
  codes of an image tokenizer; only a family that generates (``fedumm.models.generation``) trains on it.

A task's *modality* (FedUMM §3.4) says which adapter it trains: ``generation`` for ``generate``,
``understanding`` for every other task.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from fedumm.data.shards import GENERATE_TASK, read_samples
from fedumm.models import features, text
from fedumm.models.groups import MODALITIES

QUESTION_TASKS: frozenset[str] = frozenset({"vqa", "classify", "ground"})
"""Tasks whose prompt is the record's question and whose target is its ``multiple_choice_answer``."""
GENERATE = GENERATE_TASK
TASKS: frozenset[str] = QUESTION_TASKS | {"caption", GENERATE}


def task_modality(task: str) -> str:
    return "generation" if task == GENERATE else "understanding"


def record_task(record: Mapping) -> str:
    """The record's own task; a missing or unknown one is an error naming the record."""
    task = record.get("task")
    if task not in TASKS:
        raise ValueError(f"record {record.get('id')!r}: task {task!r} is not one of {sorted(TASKS)}")
    return task


def caption_references(record: Mapping) -> list[str]:
    """The reference captions of a record: its ``captions`` list, else its single ``caption``."""
    if "captions" in record:
        references = record["captions"]
    else:
        references = [record["caption"]] if "caption" in record else []
    if not isinstance(references, list) or not references or not all(isinstance(c, str) for c in references):
        raise ValueError(f"record {record.get('id')!r}: needs reference captions in 'captions' (a list) or 'caption'")
    return list(references)


def example_modality(example: Mapping) -> str:
    """The modality of a training example: only text-to-image examples name their task."""
    return task_modality(example.get("task", ""))


def record_modality(record: Mapping) -> str:
    return task_modality(record_task(record))


def modality_counts(records: Sequence[Mapping]) -> dict[str, int]:
    """The number of ``records`` of each modality (every modality listed, zeros included)."""
    counts = dict.fromkeys(MODALITIES, 0)
    for record in records:
        counts[record_modality(record)] += 1
    return counts


def understanding_records(records: Sequence[Mapping]) -> list:
    """The records a model answers (every task but ``generate``)."""
    return [record for record in records if record_task(record) != GENERATE]


def prompt_question(record: Mapping) -> str | None:
    """What the prompt of the record's own task shows: its question, or None (captioning prompt)."""
    return None if record_task(record) == "caption" else record["question"]


def targets_of(record: Mapping, task: str) -> list[tuple[str | None, str]]:
    """(question, target) pairs of ``record`` trained on ``task``: one per reference caption for
    ``caption``, the question and its ``multiple_choice_answer`` for the question tasks."""
    if task == "caption":
        return [(None, caption) for caption in caption_references(record)]
    if task == GENERATE or record.get("task") == GENERATE:
        raise ValueError(f"record {record.get('id')!r}: text-to-image records are trained through the "
                         "generation path of a unified model, not as answers")
    if task not in QUESTION_TASKS:
        raise ValueError(f"unknown training task {task!r} (known: {sorted(TASKS)})")
    missing = [key for key in ("question", "multiple_choice_answer") if key not in record]
    if missing:
        raise ValueError(
            f"record {record.get('id')!r} (task {record.get('task')!r}) has no {', '.join(missing)} "
            f"to train on task {task!r}"
        )
    return [(record["question"], record["multiple_choice_answer"])]


def build_examples(records: list[dict], tokenizer, tasks: Sequence[str] | None = None) -> list[dict]:
    """Tokenized examples of ``records``, in record order.

    By default each record is trained on its own task (``record_task``). ``tasks`` trains every
    record on each listed task instead, e.g. ``["caption"]`` for captioning pretraining on
    records of any task; ``vqa`` there means answering the record's question.
    """
    examples = []
    for record in records:
        for task in tasks if tasks is not None else [record_task(record)]:
            for question, target in targets_of(record, task):
                examples.append({"id": record["id"], **text.encode_example(tokenizer, question, target)})
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
        self.shards = shards
        # (width, height) of the images read so far; grounding scores need them.
        self.sizes: dict[str, tuple[int, int]] = {}
        if feature_file is not None:
            self.kind = "image_features"
            self.tensors = features.load_features(feature_file, ids)
        else:
            self.kind = "pixel_values"
            samples = read_samples(shards, ids)
            self.tensors = {sample["id"]: transform(sample["image"]) for sample in samples}
            self.sizes = {sample["id"]: sample["image"].size for sample in samples}
        missing = ids - set(self.tensors)
        if missing:
            raise KeyError(f"no visual input for {len(missing)} sample(s), e.g. {sorted(missing)[0]}")

    def batch(self, ids: list[str]) -> dict[str, torch.Tensor]:
        return {self.kind: torch.stack([self.tensors[i] for i in ids])}

    def image_sizes(self, ids: set[str]) -> dict[str, tuple[int, int]]:
        """(width, height) of each image in ``ids``, PIL's order; with cached features the
        images are read from the shards only now, and only these."""
        unread = ids - set(self.sizes)
        if unread:
            self.sizes.update({s["id"]: s["image"].size for s in read_samples(self.shards, unread)})
        missing = ids - set(self.sizes)
        if missing:
            raise KeyError(f"no image for {len(missing)} sample(s), e.g. {sorted(missing)[0]}")
        return {i: self.sizes[i] for i in ids}


def collate(examples: list[dict], visual: VisualSource, pad_id: int) -> dict[str, torch.Tensor]:
    return {**text.collate_train(examples, pad_id), **visual.batch([e["id"] for e in examples])}


def modality_batches(modalities: Sequence[str], batch_size: int, steps: int, seed: int) -> Iterator[list[int]]:
    """``steps`` batches of example indices, each of one modality (``modalities[i]`` is example i's):
    each pass draws a fresh seeded permutation, cuts each modality's examples (in that order) into
    batches and visits the batches in a seeded order. With one modality these are exactly the
    batches of :func:`shuffled_batches`.

    A batch holds one modality because each trains its own adapter (FedUMM §3.4; the training loop
    freezes the other's parameters for that step).
    """
    kinds = sorted(set(modalities))
    if len(kinds) <= 1:
        yield from shuffled_batches(len(modalities), batch_size, steps, seed)
        return
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    rng = np.random.default_rng(seed)
    produced = 0
    while True:
        order = rng.permutation(len(modalities))
        chunks = []
        for kind in kinds:
            members = [int(i) for i in order if modalities[i] == kind]
            chunks.extend(members[start : start + batch_size] for start in range(0, len(members), batch_size))
        for chunk_index in rng.permutation(len(chunks)):
            if produced == steps:
                return
            yield chunks[chunk_index]
            produced += 1


def shuffled_batches(num_examples: int, batch_size: int, steps: int, seed: int) -> Iterator[list[int]]:
    """``steps`` batches of example indices; a fresh seeded permutation each pass over the data.

    Zero examples (or a batch size below 1) is an error: no pass over nothing yields a batch.
    """
    if num_examples < 1:
        raise ValueError(
            f"no training examples to draw {steps} batches from: a client (or pretraining split) without "
            "data cannot train; give every client data (partition.min_size >= 1) or check the split"
        )
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
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
    """Local steps: ``steps`` when given, else ``epochs`` passes over the data (at least one step).

    Zero examples is an error, as in :func:`shuffled_batches`: there is nothing to take a step on.
    """
    if num_examples < 1:
        raise ValueError(
            "no training examples: a client without data cannot train; give every client data "
            "(partition.min_size >= 1)"
        )
    if steps is not None:
        return steps
    return max(1, int(np.ceil(epochs * num_examples / batch_size)))
