"""Communication accounting for real model sizes: LoRA adapters against full fine-tuning.

``python -m fedumm.reports.accounting [--config config/config.yaml] [--experiment NAME] [--backbone NAME ...]``
prints, for each bundled backbone, the total parameter count, the parameters a client uploads
per round under the experiment's ``lora`` (r, ``target_modules``, ``vision_target_modules``) and
``tuning`` settings, the bytes of that upload in 16-bit (bf16/fp16, 2 bytes per element) and
fp32 (4 bytes), the same for full fine-tuning (every parameter), their ratio, and the GB per
round for ``clients_per_round`` clients (uploads only; broadcasting the global model back costs
as much again). GB are 10^9 bytes.

For reference, FedUMM (Su et al., arXiv:2601.15390) reports 0.094 GB per round for adapter-only
federation of its BLIP3o backbone against 28.6 GB for full fine-tuning.

Bundled backbones, built from the published ``config.json`` files in ``resources/models/``
on the meta device (shapes only, no weights, nothing downloaded):

- ``llava-1.5-7b``: llava-hf/llava-1.5-7b-hf, CLIP ViT-L/14-336 + Vicuna-7B + its
  ``multi_modal_projector`` (LLaVA-1.5 ``mlp2x_gelu``).
- ``qwen2.5-vl-7b``: Qwen/Qwen2.5-VL-7B-Instruct, the understanding backbone of BLIP3o; the
  vision tower's patch merger (``visual.merger``) is counted as its connector.
- ``smolvlm-instruct``: HuggingFaceTB/SmolVLM-Instruct (Idefics3: SigLIP-so400m, pixel-shuffle
  connector, SmolLM2-1.7B).
- ``paligemma-3b-pt-224``: google/paligemma-3b-pt-224 (SigLIP-so400m, linear projector, Gemma-2B).
- ``janus-pro-7b``: deepseek-community/Janus-Pro-7B, a unified model; its image-generation parts
  (VQ model, generation embeddings, aligner and head) are counted under ``rest``.
- ``emu3-chat``: BAAI/Emu3-Chat-hf, encoder-free (no vision encoder or projector; its VQ image
  tokenizer is under ``rest``).
- ``clip-vit-b32+llama-3.2-3b``: FedVLMBench's composition of openai/clip-vit-base-patch32's
  vision tower, an ``mlp2x_gelu`` connector and meta-llama/Llama-3.2-3B, assembled like
  ``fedumm.models.vlm.build_vlm`` assembles a model spec.

The hf checkpoints are split by the module paths of their architecture (``fedumm.models.architectures``);
the configs of SmolVLM, PaliGemma, Janus-Pro and Emu3 are transcribed from the published ones (the
sizes that set the parameter count), see ``resources/README.md``.

Each backbone is an ``nn.ModuleDict`` with the parts of ``fedumm.models.vlm.PARTS``, so parameter
names (``language_model.…``, ``vision_tower.…``) are those ``fedumm.models.adapters.adapter_config``
targets.

Target names. The experiment names its LoRA targets the way one architecture spells them;
each name is looked up among the Linear layers of the part it targets and, when absent, mapped
through ``ALIASES`` onto the same projection in the other naming families:

====================  ==================================  ==================================
LLaMA, Vicuna, Qwen2  CLIP vision                         Qwen2.5-VL vision
====================  ==================================  ==================================
q_proj, k_proj,       q_proj, k_proj, v_proj              qkv (one fused Linear: naming any of
v_proj                                                    the three adapts all three)
o_proj                out_proj                            proj
gate_proj, up_proj    fc1                                 gate_proj, up_proj
down_proj             fc2                                 down_proj
====================  ==================================  ==================================

Names matching no Linear layer, directly or through an alias, are skipped and reported.
LoRA adapts Linear layers only: a layer of in_features × out_features gets A (r × in) and
B (out × r), i.e. r·(in + out) parameters; the adapters of this package have no bias. (peft,
given ``fedumm.models.adapters.adapter_config``'s name regex, would also adapt Qwen2.5-VL's patch-embedding
Conv3d, which is named ``proj`` too: r·(3·2·14·14 + 1280) more parameters, not counted here.)
"""

from __future__ import annotations

import argparse
import functools
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForImageTextToText,
    CLIPVisionModel,
    PretrainedConfig,
)

from fedumm import config as fedumm_config
from fedumm.artifacts import BASE_SPEC
from fedumm.federated.planning import trained_groups
from fedumm.models.architectures import architecture_of
from fedumm.models.vlm import PARTS, build_connector, validate_spec

REPO = Path(__file__).resolve().parents[2]
MODELS_DIR = REPO / "resources" / "models"
DEFAULT_CONFIG = REPO / "config" / "config.yaml"
SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"

DTYPE_BYTES = {"bf16": 2, "fp32": 4}
"""Bytes per element of the precisions the table shows (fp16 costs as much as bf16)."""
GB = 10**9

ALIASES: dict[str, tuple[str, ...]] = {
    "q_proj": ("qkv",),
    "k_proj": ("qkv",),
    "v_proj": ("qkv",),
    "qkv": ("q_proj", "k_proj", "v_proj"),
    "o_proj": ("out_proj", "proj"),
    "out_proj": ("o_proj", "proj"),
    "proj": ("o_proj", "out_proj"),
    "fc1": ("gate_proj", "up_proj"),
    "gate_proj": ("fc1",),
    "up_proj": ("fc1",),
    "fc2": ("down_proj",),
    "down_proj": ("fc2",),
}
"""The same projection under another architecture's name (see the module docstring)."""


# ----------------------------------------------------------------------------- backbones


def _config(name: str) -> PretrainedConfig:
    return AutoConfig.from_pretrained(MODELS_DIR / name)


def _parts(vision: nn.Module, connector: nn.Module, language: nn.Module) -> nn.ModuleDict:
    return nn.ModuleDict(dict(zip(PARTS, (vision, connector, language))))


def _hf_backbone(name: str) -> nn.ModuleDict:
    """A bundled hf-family checkpoint split into the parts of its architecture
    (``fedumm.models.architectures``): vision encoder (without a projector nested in it, such as
    Qwen2.5-VL's ``visual.merger``), projector, language model with its head, and under ``rest``
    whatever belongs to none of them (Janus' and Emu3's image-generation VQ models and heads)."""
    model = AutoModelForImageTextToText.from_config(_config(name))
    architecture = architecture_of(model)

    def part(path: str | None) -> nn.Module:
        return model.get_submodule(path) if path else nn.ModuleDict()

    vision = part(architecture.vision)
    if architecture.vision and architecture.projector and architecture.projector.startswith(architecture.vision + "."):
        nested = architecture.projector[len(architecture.vision) + 1:]
        vision = nn.ModuleDict({child: module for child, module in vision.named_children() if child != nested})
    language = nn.ModuleDict({"model": part(architecture.language), "lm_head": model.lm_head})
    claimed = {architecture.vision, architecture.projector, architecture.language}
    rest = nn.ModuleDict({
        child: module for child, module in model.model.named_children() if f"model.{child}" not in claimed
    })
    parts = _parts(vision, part(architecture.projector), language)
    parts["rest"] = rest
    return parts


def _clip_b32_llama32_3b() -> nn.ModuleDict:
    vision = CLIPVisionModel._from_config(_config("clip-vit-base-patch32").vision_config)
    language = AutoModelForCausalLM.from_config(_config("llama-3.2-3b"))
    connector = build_connector("mlp2x_gelu", vision.config.hidden_size, language.config.hidden_size)
    return _parts(vision, connector, language)


BACKBONES: dict[str, Callable[[], nn.ModuleDict]] = {
    "llava-1.5-7b": functools.partial(_hf_backbone, "llava-1.5-7b"),
    "qwen2.5-vl-7b": functools.partial(_hf_backbone, "qwen2.5-vl-7b"),
    "clip-vit-b32+llama-3.2-3b": _clip_b32_llama32_3b,
    "smolvlm-instruct": functools.partial(_hf_backbone, "smolvlm-instruct"),
    "paligemma-3b-pt-224": functools.partial(_hf_backbone, "paligemma-3b-pt-224"),
    "janus-pro-7b": functools.partial(_hf_backbone, "janus-pro-7b"),
    "emu3-chat": functools.partial(_hf_backbone, "emu3-chat"),
}


def compose(backbone: str) -> nn.ModuleDict:
    """A fresh weightless (meta device) instance of a bundled backbone, keyed by `PARTS`."""
    if backbone not in BACKBONES:
        raise ValueError(f"unknown backbone {backbone!r}; bundled: {', '.join(BACKBONES)}")
    with torch.device("meta"):
        return BACKBONES[backbone]()


# ----------------------------------------------------------------------------- counting


def count_parameters(model: nn.Module) -> int:
    """Number of distinct parameters (a tied embedding / LM head counts once)."""
    return sum(param.numel() for param in model.parameters())


def _targeted_linears(model: nn.Module, target_names: Iterable[str]) -> Iterable[nn.Linear]:
    names = set(target_names)
    return (
        module
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear) and name.rsplit(".", 1)[-1] in names
    )


def lora_parameter_count(model: nn.Module, target_names: Iterable[str], r: int) -> int:
    """LoRA parameters, r·(in + out) per Linear layer of `model` whose own name is in `target_names`."""
    return sum(r * (linear.in_features + linear.out_features) for linear in _targeted_linears(model, target_names))


def saved_parameter_count(model: nn.Module, module_names: Iterable[str]) -> int:
    """Parameters of the full trained copies (peft's `modules_to_save`): every module of `model`
    whose own name is in `module_names`, e.g. the language model's `lm_head`."""
    names = set(module_names)
    return sum(count_parameters(module) for name, module in model.named_modules() if name.rsplit(".", 1)[-1] in names)


@dataclass(frozen=True)
class Targets:
    """How requested LoRA target names resolve on one part of an architecture."""

    names: tuple[str, ...]
    """Linear-layer names that get LoRA."""
    mapped: dict[str, tuple[str, ...]]
    """Requested names that were absent and replaced by their aliases."""
    skipped: tuple[str, ...]
    """Requested names with no Linear layer, directly or through an alias."""


def resolve_targets(model: nn.Module, requested: Iterable[str]) -> Targets:
    """Map `requested` target names onto the Linear-layer names present in `model` (see `ALIASES`)."""
    present = {name.rsplit(".", 1)[-1] for name, module in model.named_modules() if isinstance(module, nn.Linear)}
    names: dict[str, None] = {}  # an ordered set: aliases of several names may coincide (q/k/v -> qkv)
    mapped: dict[str, tuple[str, ...]] = {}
    skipped: list[str] = []
    for name in requested:
        if name in present:
            names[name] = None
            continue
        aliases = tuple(alias for alias in ALIASES.get(name, ()) if alias in present)
        if aliases:
            mapped[name] = aliases
            names.update(dict.fromkeys(aliases))
        else:
            skipped.append(name)
    return Targets(tuple(names), mapped, tuple(skipped))


# ----------------------------------------------------------------------------- rows


def _stages(experiment: dict) -> list[tuple[str, tuple[str, ...]]]:
    """(rounds, trained groups) for each run of consecutive rounds that train the same groups."""
    stages: list[tuple[int, int, tuple[str, ...]]] = []
    for round_index in range(1, experiment["rounds"] + 1):
        groups = tuple(trained_groups(experiment, round_index))
        if stages and stages[-1][2] == groups:
            stages[-1] = (stages[-1][0], round_index, groups)
        else:
            stages.append((round_index, round_index, groups))
    return [(str(first) if first == last else f"{first}-{last}", groups) for first, last, groups in stages]


def _backbone_row(backbone: str, experiment: dict) -> dict:
    """The stage-independent part of a row: parameter counts and LoRA targets of one backbone."""
    parts = compose(backbone)
    lora = experiment["lora"]
    language = resolve_targets(parts["language_model"], lora["target_modules"])
    vision = resolve_targets(parts["vision_tower"], lora["vision_target_modules"])
    return {
        "backbone": backbone,
        "total_params": count_parameters(parts),
        "vision_params": count_parameters(parts["vision_tower"]),
        "connector_params": count_parameters(parts["connector"]),
        "language_params": count_parameters(parts["language_model"]),
        "language_targets": language,
        "vision_targets": vision,
        "lora_language": lora_parameter_count(parts["language_model"], language.names, lora["r"]),
        "lora_vision": lora_parameter_count(parts["vision_tower"], vision.names, lora["r"]),
        "saved_language": saved_parameter_count(parts["language_model"], lora["modules_to_save"]),
        "saved_vision": saved_parameter_count(parts["vision_tower"], lora["modules_to_save"]),
    }


def accounting_rows(experiment: dict, backbones: list[str] | None) -> list[dict]:
    """One row per backbone (default: all bundled) and per run of rounds training the same groups.

    `experiment` is a resolved experiment (`fedumm.config.load_experiments`). A row holds the
    parameter counts (`total_params`, per part, LoRA and full trained copies per part), the trained `groups` and the
    `adapter_params` uploaded by one client in those `rounds`, `clients_per_round`, `ratio`
    (adapter / total), and for each precision of `DTYPE_BYTES` the bytes of one client's upload
    (`upload_bytes_<dtype>`), of a full fine-tuning upload (`full_bytes_<dtype>`) and of a round
    of `clients_per_round` uploads (`round_bytes_<dtype>`, `full_round_bytes_<dtype>`).
    """
    clients = fedumm_config.clients_per_round(experiment)
    rows = []
    for backbone in backbones if backbones is not None else list(BACKBONES):
        base = _backbone_row(backbone, experiment)
        for rounds, groups in _stages(experiment):
            adapter = (
                (base["lora_language"] + base["saved_language"]) * ("language" in groups)
                + (base["lora_vision"] + base["saved_vision"]) * ("vision" in groups)
                + base["connector_params"] * ("connector" in groups)
            )
            row = {**base, "rounds": rounds, "groups": groups, "adapter_params": adapter,
                   "clients_per_round": clients, "ratio": adapter / base["total_params"]}
            for dtype, size in DTYPE_BYTES.items():
                row[f"upload_bytes_{dtype}"] = adapter * size
                row[f"full_bytes_{dtype}"] = base["total_params"] * size
                row[f"round_bytes_{dtype}"] = adapter * size * clients
                row[f"full_round_bytes_{dtype}"] = base["total_params"] * size * clients
            rows.append(row)
    return rows


# ----------------------------------------------------------------------------- table


def _count(n: int) -> str:
    return f"{n / 1e9:.3f}B" if n >= 10**9 else f"{n / 1e6:.2f}M"


def _gb(row: dict, key: str) -> str:
    return " / ".join(f"{row[f'{key}_{dtype}'] / GB:.3f}" for dtype in DTYPE_BYTES)


def _targets_line(label: str, targets: Targets) -> str:
    used = ", ".join(targets.names) or "none"
    notes = [f"{name} -> {'+'.join(aliases)}" for name, aliases in targets.mapped.items()]
    notes += [f"skipped {name} (no such Linear)" for name in targets.skipped]
    return f"{label}: {used}" + (f" [{'; '.join(notes)}]" if notes else "")


def format_table(rows: list[dict]) -> str:
    """A plain-text table of `accounting_rows`, then the LoRA targets resolved on each backbone."""
    if not rows:
        return "no backbones"
    precisions = " / ".join(DTYPE_BYTES)
    clients = rows[0]["clients_per_round"]
    header = ["backbone", "rounds", "trains", "params", "adapter", "adapter/full",
              f"client upload GB ({precisions})", f"full FT GB ({precisions})",
              f"round GB x{clients} ({precisions})", f"full FT round GB x{clients} ({precisions})"]
    body = [
        [row["backbone"], row["rounds"], "+".join(row["groups"]), _count(row["total_params"]),
         _count(row["adapter_params"]), f"{100 * row['ratio']:.3f}%", _gb(row, "upload_bytes"),
         _gb(row, "full_bytes"), _gb(row, "round_bytes"), _gb(row, "full_round_bytes")]
        for row in rows
    ]
    widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip() for line in [header, *body]]
    lines.insert(1, "  ".join("-" * width for width in widths))
    lines.append("")
    lines.append("LoRA targets per backbone:")
    for row in {row["backbone"]: row for row in rows}.values():
        lines.append(f"  {row['backbone']}")
        lines.append("    " + _targets_line("language", row["language_targets"]))
        lines.append("    " + _targets_line("vision", row["vision_targets"]))
        if row["saved_language"] or row["saved_vision"]:
            lines.append(f"    full copies (lora.modules_to_save): language {_count(row['saved_language'])}, "
                         f"vision {_count(row['saved_vision'])}")
    lines.append("")
    lines.append("FedUMM (BLIP3o) reports 0.094 GB (adapters) vs 28.6 GB (full fine-tuning) per round.")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> None:
    """Print the accounting table for one experiment of a config file."""
    parser = argparse.ArgumentParser(prog="python -m fedumm.reports.accounting", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="workflow config (default: %(default)s)")
    parser.add_argument("--experiment", help="experiment name (default: the config's `defaults`, where every "
                                             "experiment starts)")
    parser.add_argument("--backbone", action="append", choices=list(BACKBONES),
                        help="backbone to account for; repeatable (default: all bundled)")
    args = parser.parse_args(argv)
    config, schema = fedumm_config.load_yaml(args.config), fedumm_config.load_yaml(SCHEMA)
    if args.experiment is None:
        # The demo's experiments train the tiny LM's output head in full (config.yaml), which a hub
        # backbone's head does not need; the defaults are the LoRA settings the papers account for.
        name, experiment = "defaults", fedumm_config.defaults_experiment(config, schema)
    else:
        experiments = fedumm_config.load_experiments(config, schema)
        name = args.experiment
        if name not in experiments:
            parser.error(f"unknown experiment {name!r}; defined: {', '.join(experiments)}")
        experiment = experiments[name]
    lora, tuning = experiment["lora"], experiment["tuning"]
    print(f"experiment {name}: LoRA r={lora['r']}, tuning {tuning['mode']}, "
          f"{fedumm_config.clients_per_round(experiment)} client(s) per round, {experiment['rounds']} rounds")
    print(format_table(accounting_rows(experiment, args.backbone)))


if __name__ == "__main__":
    main()


# ----------------------------------------------------------------------------- size of a base model


def _part_config(part: dict, vision: bool) -> PretrainedConfig:
    """The transformers config of a model-spec part: inline, or read from its hub id / directory
    (config.json only, no weights); a full CLIP/SigLIP checkpoint contributes its vision config."""
    if "config" in part:
        return AutoConfig.for_model(**part["config"])
    config = AutoConfig.from_pretrained(part["id"])
    return config.vision_config if vision and hasattr(config, "vision_config") else config


def model_size(spec: dict) -> tuple[int, int]:
    """(parameters, bytes per parameter) of the whole model of a base model's spec (its spec.json
    "spec", whose inline language model has its vocabulary size resolved).

    The model is built on the meta device, so no weight is allocated or downloaded; a tied
    embedding and LM head count once.
    """
    spec = validate_spec(spec)
    with torch.device("meta"):
        vision = AutoModel.from_config(_part_config(spec["vision"], vision=True))
        language = AutoModelForCausalLM.from_config(_part_config(spec["language"], vision=False))
        connector = build_connector(spec["connector"], vision.config.hidden_size, language.config.hidden_size)
    parameters = sum(param.numel() for param in torch.nn.ModuleList([vision, connector, language]).parameters())
    return parameters, getattr(torch, spec["dtype"]).itemsize


def read_model_size(base_dir: Path | str) -> tuple[int, int] | None:
    """`model_size` of a base model directory (`fedumm.models.vlm.save_base`); None when the config of a
    hub part cannot be read here (no cache and no network on this node), so that the tables are
    still written, with full fine-tuning unknown."""
    spec = json.loads((Path(base_dir) / BASE_SPEC).read_text(encoding="utf-8"))["spec"]
    try:
        return hf_model_size(spec, Path(base_dir)) if spec.get("family") == "hf" else model_size(spec)
    except OSError:
        return None


def hf_model_size(spec: dict, base_dir: Path) -> tuple[int, int]:
    """`model_size` of an hf-family model: its config (the base directory's for an inline config, the
    checkpoint's otherwise) built on the meta device."""
    config = AutoConfig.from_pretrained(base_dir if "config" in spec else spec["id"])
    with torch.device("meta"):
        model = AutoModelForImageTextToText.from_config(config)
    return count_parameters(model), getattr(torch, spec.get("dtype", "float32")).itemsize
