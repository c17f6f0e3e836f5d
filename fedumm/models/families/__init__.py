"""Model families: how each kind of model is built, fed, adapted and asked for answers.

A model entry of the config names its ``family``: ``llava_recipe`` (fedumm's own composition of a
vision tower, a connector and a causal LM, ``fedumm.models.vlm``) or ``hf`` (any checkpoint that
``AutoModelForImageTextToText`` and ``AutoProcessor`` load: a hub id, a local directory, or an inline
config for tiny offline models). What differs between the architectures of ``hf`` (module names of
the vision encoder, projector and language model, special tokens, processor) is one small module
each in ``fedumm.models.architectures``.
"""

from __future__ import annotations

import json
from pathlib import Path

from fedumm.artifacts import BASE_SPEC
from fedumm.models.families import hf, llava_recipe
from fedumm.models.families.base import Family, LoadedBase

FAMILIES: dict[str, Family] = {family.name: family for family in (llava_recipe.LlavaRecipe(), hf.HFFamily())}
DEFAULT_FAMILY = llava_recipe.LlavaRecipe.name


def family_of(spec: dict) -> Family:
    """The family of a model spec (its ``family`` key; ``llava_recipe`` when absent)."""
    name = spec.get("family", DEFAULT_FAMILY)
    if name not in FAMILIES:
        raise ValueError(f"model family {name!r} is unknown (known: {', '.join(sorted(FAMILIES))})")
    return FAMILIES[name]


def read_spec(base_dir: str | Path) -> dict:
    """The model spec a base model directory was built from (its ``spec.json``)."""
    return json.loads((Path(base_dir) / BASE_SPEC).read_text(encoding="utf-8"))["spec"]


def load_base(base_dir: str | Path) -> LoadedBase:
    """The base model of ``base_dir`` (written by the ``base_model`` rule), whatever its family."""
    return family_of(read_spec(base_dir)).load_base(Path(base_dir))


__all__ = ["FAMILIES", "Family", "LoadedBase", "family_of", "load_base", "read_spec"]
