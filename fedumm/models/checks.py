"""Model checks that need transformers, run by the workflow while it builds the DAG, before any job.

An inline config's ``model_type`` must be one transformers knows, and every LoRA target module
name must exist in the part of the model it adapts (``lora.target_modules`` in the language
model, ``lora.vision_target_modules`` in the vision encoder), every ``lora.modules_to_save`` name
somewhere in the model (peft would silently train nothing for a name it does not find). Models are built on the meta
device: no memory, no weights, well under a second each once transformers is imported.
Components given by a hub ``id`` are checked when it is a local directory; a hub id is checked
by its ``base_model`` job, which downloads it.

Importing transformers costs seconds, which every ``snakemake`` call would pay: a check that
passed is remembered as an empty file in the user's cache (``$XDG_CACHE_HOME/fedumm/model_checks``,
else ``~/.cache/...``), named by the sha256 of what it read (the model entries, the LoRA settings
and the transformers version), so only a changed model or LoRA entry pays again, in any workflow
directory of the machine.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from fedumm.config import ConfigError
from fedumm.io import atomic_write_bytes


def _check_key(models: dict, experiments: dict) -> str:
    from importlib.metadata import version

    used = {(e["model"], json.dumps(e["lora"], sort_keys=True)) for e in experiments.values()}
    payload = {"models": {name: models[name] for name, _ in used}, "lora": sorted(used),
               "transformers": version("transformers")}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def default_cache_dir() -> Path:
    """Where passed checks are remembered: ``$XDG_CACHE_HOME/fedumm/model_checks`` (``~/.cache``)."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "fedumm" / "model_checks"


def check_models(models: dict, experiments: dict, cache_dir: Path) -> None:
    """Check every model an experiment uses with that experiment's LoRA targets (see the module
    docstring); a ConfigError names the key."""
    passed = Path(cache_dir) / _check_key(models, experiments)
    if passed.exists():
        return
    names_by_model = {name: module_names(name, models[name]) for name in sorted({e["model"] for e in experiments.values()})}
    for exp_name, experiment in experiments.items():
        check_lora_targets(f"experiments.{exp_name}.lora", experiment["lora"], names_by_model[experiment["model"]])
    atomic_write_bytes(passed, b"")


def check_lora_targets(where: str, lora: dict, names: dict[str, set[str] | None]) -> None:
    """Each name of ``lora.target_modules`` must be a module name in the language model, each of
    ``lora.vision_target_modules`` one in the vision encoder, each of ``lora.modules_to_save`` one
    anywhere in the model (``names``: None where unknown)."""
    for key, part in (("target_modules", "language"), ("vision_target_modules", "vision")):
        known = names.get(part)
        if known is None:
            continue
        unknown = [name for name in lora.get(key) or () if name not in known]
        if unknown:
            linear = names.get(f"{part}_linear") or known
            raise ConfigError(
                f"config key '{where}.{key}': the {part} model has no module named {unknown[0]!r} "
                f"(its linear layers: {', '.join(sorted(linear)[:16])})"
            )
    known = names.get("model")
    unknown = [name for name in lora.get("modules_to_save") or () if known is not None and name not in known]
    if unknown:
        raise ConfigError(f"config key '{where}.modules_to_save': the model has no module named {unknown[0]!r}")


def module_names(name: str, spec: dict) -> dict[str, set[str] | None]:
    """The last components of the module names of a model entry's ``language`` and ``vision`` parts
    and of the whole ``model`` (None where only its download can tell), and those of the parts'
    linear layers (``*_linear``)."""
    if spec.get("family") == "hf":
        return _hf_module_names(name, spec)
    names = {
        **_component_names(f"models.{name}.language", spec["language"], "language"),
        **_component_names(f"models.{name}.vision", spec["vision"], "vision"),
    }
    parts = (names["language"], names["vision"])
    names["model"] = None if None in parts else {"connector", *parts[0], *parts[1]}
    return names


def _leaf_names(model, prefix: str = "", linear_only: bool = False) -> set[str]:
    import torch

    return {name.rsplit(".", 1)[-1] for name, module in model.named_modules()
            if name and (not prefix or name.startswith(prefix + "."))
            and (not linear_only or isinstance(module, torch.nn.Linear))}


def _names(model, part: str, prefix: str = "") -> dict[str, set[str]]:
    return {part: _leaf_names(model, prefix), f"{part}_linear": _leaf_names(model, prefix, linear_only=True)}


def _config_of(where: str, part: dict):
    from transformers import AutoConfig

    if "config" in part:
        try:
            return AutoConfig.for_model(**part["config"])
        except (ValueError, KeyError) as error:
            raise ConfigError(f"config key '{where}.config': {error}") from None
    if Path(part["id"]).is_dir():
        return AutoConfig.from_pretrained(part["id"])
    return None


def _component_names(where: str, part: dict, kind: str) -> dict[str, set[str] | None]:
    import torch
    from transformers import AutoModel, AutoModelForCausalLM

    config = _config_of(where, part)
    if config is None:
        return {kind: None}
    with torch.device("meta"):
        model = (AutoModelForCausalLM if kind == "language" else AutoModel).from_config(config)
    return _names(model, kind)


def _hf_module_names(name: str, spec: dict) -> dict[str, set[str] | None]:
    import torch
    from transformers import AutoConfig, AutoModelForImageTextToText

    from fedumm.models.architectures import ARCHITECTURES
    from fedumm.models.families.hf import tiny_config

    if "config" in spec:
        architecture = ARCHITECTURES[spec["config"]["model_type"]]  # known: the schema enumerates them
        config = tiny_config(spec, architecture, architecture.tiny_tokenizer([]))
    elif Path(spec["id"]).is_dir():
        config = AutoConfig.from_pretrained(spec["id"])
        architecture = ARCHITECTURES.get(config.model_type)
        if architecture is None:
            raise ConfigError(f"config key 'models.{name}.id': model_type {config.model_type!r} is not supported "
                              f"by the hf family (supported: {', '.join(sorted(ARCHITECTURES))})")
    else:
        return {"language": None, "vision": None}
    with torch.device("meta"):
        model = AutoModelForImageTextToText.from_config(config)
    return {**_names(model, "language", architecture.language),
            **(_names(model, "vision", architecture.vision) if architecture.vision else {"vision": set()}),
            "model": _leaf_names(model)}
