"""What every model family provides to the rest of the pipeline.

The client, the evaluation, the base-model rule and round 0 see a model only through these two
interfaces, so a new family is one module that implements them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import peft
import torch


class ModelInputs(Protocol):
    """Turns records of one split into what the model eats: training batches with labels on the
    target tokens only, and generation prompts."""

    def examples(self, records: list[dict], tasks: Sequence[str] | None = None) -> list[dict]:
        """One training example per (record, target) of the record's own task (or of ``tasks``)."""

    def collate(self, examples: list[dict]) -> dict[str, torch.Tensor]:
        """A training batch (``model(**batch).loss`` is the loss on the targets)."""

    def generate(self, model: torch.nn.Module, records: list[dict], max_new_tokens: int, device) -> list[str]:
        """Greedy answers of ``model`` to the prompts of ``records`` (normalized text)."""

    def image_sizes(self, ids: set[str]) -> dict[str, tuple[int, int]]:
        """(width, height) of each image in ``ids``."""


@dataclass
class LoadedBase:
    """A base model ready for adapters: the model, what turns text (and images) into ids, its spec."""

    model: torch.nn.Module
    processor: Any
    spec: dict
    family: Family


class Family(Protocol):
    name: str
    feature_cache: bool
    """Whether the frozen vision encoder's outputs can be cached by the ``features`` rule."""

    def build_base(self, spec: dict, public_shards: list[Path] | None, out_dir: Path, threads: int) -> dict:
        """The ``base_model`` rule: build (and for inline parts, pretrain) the base model into ``out_dir``."""

    def load_base(self, base_dir: Path) -> LoadedBase:
        """The base model that ``build_base`` wrote."""

    def adapter_config(self, model: torch.nn.Module, lora: dict, connector_trainable: bool) -> peft.LoraConfig:
        """LoRA on the language model's ``lora.target_modules`` and the vision encoder's
        ``lora.vision_target_modules``, plus trained copies of the projector when ``connector_trainable``
        and of the modules named in ``lora.modules_to_save``."""

    def export(self, base: LoadedBase, merged: torch.nn.Module, out_dir: Path) -> str:
        """Write ``merged`` (the base with an adapter merged in) as a standalone model directory;
        return how to load it."""

    def inputs(self, base: LoadedBase, shards: list[Path], ids: set[str], feature_file: Path | None = None) -> ModelInputs:
        """The records of ``ids`` in ``shards`` as model inputs (cached features for the vision tower
        where the family supports them)."""
