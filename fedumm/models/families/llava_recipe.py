"""The LLaVA recipe: fedumm's own composition of a vision tower, a connector and a causal LM.

Its model, base artifact and adapters are ``fedumm.models.vlm``, ``fedumm.models.pretrain`` and
``fedumm.models.adapters``; its prompts are the plain template of ``fedumm.models.text``. It is the only
family whose frozen vision encoder the ``features`` rule can cache.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import peft
import torch

from fedumm.models import adapters, batches, images, pretrain, text, vlm
from fedumm.models.families.base import LoadedBase


class LlavaRecipeInputs:
    """Records as word-level (or hub) token ids plus the images, transformed, or their cached features."""

    def __init__(self, tokenizer, visual: batches.VisualSource) -> None:
        self.tokenizer = tokenizer
        self.visual = visual

    def examples(self, records: list[dict], tasks: Sequence[str] | None = None) -> list[dict]:
        return batches.build_examples(records, self.tokenizer, tasks)

    def collate(self, examples: list[dict]) -> dict[str, torch.Tensor]:
        return batches.collate(examples, self.visual, self.tokenizer.pad_token_id)

    def generate(self, model: torch.nn.Module, records: list[dict], max_new_tokens: int, device) -> list[str]:
        prompts = text.encode_prompts(self.tokenizer, [batches.prompt_question(record) for record in records])
        inputs = {**prompts, **self.visual.batch([record["id"] for record in records])}
        generated = vlm.unwrap(model).generate(
            **{key: value.to(device) for key, value in inputs.items()},
            max_new_tokens=max_new_tokens,
            eos_token_id=self.tokenizer.eos_token_id,
            pad_token_id=self.tokenizer.pad_token_id,
        )
        return text.decode_answers(self.tokenizer, generated)

    def image_sizes(self, ids: set[str]) -> dict[str, tuple[int, int]]:
        return self.visual.image_sizes(ids)


class LlavaRecipe:
    name = "llava_recipe"
    feature_cache = True

    def build_base(self, spec: dict, public_shards: list[Path] | None, out_dir: Path, threads: int) -> dict:
        return pretrain.build_base_model(spec, public_shards, out_dir, threads)

    def load_base(self, base_dir: Path) -> LoadedBase:
        model, tokenizer, spec = vlm.load_base(base_dir)
        return LoadedBase(model=model, processor=tokenizer, spec=spec, family=self)

    def adapter_config(self, model: torch.nn.Module, lora: dict, connector_trainable: bool) -> peft.LoraConfig:
        return adapters.adapter_config(lora, connector_trainable)

    def export(self, base: LoadedBase, merged: torch.nn.Module, out_dir: Path) -> str:
        """A base-model directory holding every part: the model class is fedumm's own composition,
        so fedumm (``fedumm predict --base``, or a model entry's base) is what loads it."""
        vlm.save_base(merged.cpu(), base.processor, base.spec, out_dir, trained_parts=sorted(pretrain.ALL_PARTS))
        return f"fedumm.models.vlm.load_base({str(out_dir)!r}) (a fedumm base directory: this family has no transformers class)"

    def inputs(self, base: LoadedBase, shards: list[Path], ids: set[str], feature_file: Path | None = None):
        visual = batches.VisualSource(
            shards, ids, feature_file=feature_file,
            transform=None if feature_file else images.image_transform(base.spec),
        )
        return LlavaRecipeInputs(base.processor, visual)
