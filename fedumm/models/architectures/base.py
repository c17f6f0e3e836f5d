"""What fedumm needs to know about one transformers architecture of the ``hf`` family.

The architecture modules import transformers only inside the functions that build processors and
tokenizers: the table itself (module paths of the parameter groups) is read by aggregation jobs and
the DAG, which must not load transformers."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Architecture:
    """One ``AutoModelForImageTextToText`` architecture, by its ``model_type``.

    ``vision``, ``projector``, ``language`` and ``generation`` are the module paths of the per-modality
    parameter groups (FedUMM §3.4; ``None`` where the architecture has no such part, e.g. an encoder-free
    model has no vision encoder to adapt). ``image_prompt`` stands for the image in a prompt
    without chat template, before the processor expands it. The ``tiny_*`` fields build an offline
    instance from an inline config: ``special_tokens`` (tokenizer attribute -> token) are the
    placeholders its processor expects, ``token_config`` (config key -> tokenizer attribute) the
    config's ids of them, and ``make_processor(tokenizer, config)`` its processor.
    """

    model_type: str
    vision: str | None
    projector: str | None
    language: str
    image_prompt: str
    special_tokens: dict[str, str]
    token_config: dict[str, str]
    make_processor: Callable
    vision_lora_targets: Sequence[str] = field(default_factory=tuple)
    generation: Sequence[str] = field(default_factory=tuple)
    """Module paths of the image-generation path of a unified model (its own embeddings of image codes,
    aligner and head; Janus): the ``generation`` parameter group, trained as full copies. Empty for a
    model that only understands."""
    adapt_tiny_config: Callable | None = None
    """``(config dict, tokenizer)``: any further change a tiny instance needs (Emu3's visual tokens)."""

    def tiny_tokenizer(self, words: Sequence[str]):
        """A word-level tokenizer over ``words`` with this architecture's placeholder tokens."""
        from fedumm.models.text import build_wordlevel_tokenizer

        return build_wordlevel_tokenizer(words, self.special_tokens)

    def tiny_processor(self, tokenizer, config):
        return self.make_processor(tokenizer, config)


def square(size: int) -> dict[str, int]:
    return {"height": size, "width": size}
