"""Per-modality parameter groups (FedUMM §3.4): the group of an adapter tensor, in every family.

A tensor belongs to the vision encoder, the projector (``connector``), the language model or, in a
unified model, the image-generation path (``generation``: Janus' embeddings of image codes, their
aligner and the head that predicts them). Its group follows from the module names on its path: the LLaVA recipe's parts and the last name of
each hf architecture's module paths. This module imports neither torch nor transformers, so the
server and the DAG can group tensors too.
"""

from __future__ import annotations

from fedumm.models.architectures import ARCHITECTURES

GROUPS: tuple[str, ...] = ("vision", "connector", "language", "generation")
"""The groups, in the order rounds list them; a projector inside the vision module (Qwen2.5-VL's
``visual.merger``) belongs to the connector."""
MODALITIES: tuple[str, ...] = ("understanding", "generation")
"""The modalities of FedUMM's per-modality adapters: each trains on the records of its own tasks and
is aggregated with the clients' example counts of that modality (``fedumm.federated.modalities``)."""
GROUP_MODALITY: dict[str, str] = {"vision": "understanding", "connector": "understanding",
                                  "language": "understanding", "generation": "generation"}
LLAVA_RECIPE_PARTS: dict[str, str] = {"vision_tower": "vision", "connector": "connector", "language_model": "language"}
"""The group of each submodule of ``fedumm.models.vlm.VisionLanguageModel``."""


def _module_groups() -> dict[str, str]:
    # The output head sits beside the language model in hf models (Qwen2.5-VL, Janus) and is a
    # trained copy when `lora.modules_to_save` names it.
    table = {**LLAVA_RECIPE_PARTS, "lm_head": "language"}
    for architecture in ARCHITECTURES.values():
        for path, group in ((architecture.vision, "vision"), (architecture.projector, "connector"),
                            (architecture.language, "language"),
                            *((path, "generation") for path in architecture.generation)):
            if path is not None:
                table[path.rsplit(".", 1)[-1]] = group
    return table


MODULE_GROUPS: dict[str, str] = _module_groups()


def parameter_group(name: str) -> str:
    """"vision" / "connector" / "language" / "generation" for an adapter state key or a PeftModel
    parameter name: the group of the module names on its path, the connector first."""
    found = {MODULE_GROUPS[part] for part in name.split(".") if part in MODULE_GROUPS}
    for group in ("connector", "generation", "vision", "language"):
        if group in found:
            return group
    raise ValueError(f"parameter {name!r} belongs to no parameter group (modules: {', '.join(sorted(MODULE_GROUPS))})")
