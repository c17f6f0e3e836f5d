"""Communication accounting: parameter and LoRA counts against closed forms of the config.json fields."""

from __future__ import annotations

import json
from pathlib import Path

import peft
import pytest
import torch
from transformers import AutoConfig, AutoModelForImageTextToText

from fedumm.config import defaults_experiment
from fedumm.models import adapters, vlm
from fedumm.reports import accounting

REPO = Path(__file__).resolve().parents[1]
MODELS = REPO / "resources" / "models"
LLAMA_NAMES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
CLIP_NAMES = ["q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"]


def _json(name: str) -> dict:
    return json.loads((MODELS / name / "config.json").read_text())


# ----------------------------------------------------------------------------- closed forms


def _vicuna_7b() -> dict:
    # llava-hf's text_config lists only what differs from LlamaConfig's defaults, which are
    # Llama-2-7B's shapes (Vicuna-7B v1.5 is fine-tuned from it): take those from its config.
    return {**_json("llama-2-7b"), **_json("llava-1.5-7b")["text_config"]}


def _decoder_shapes(c: dict) -> tuple[int, int, int, int]:
    """(hidden, q/o width heads·head_dim, k/v width kv_heads·head_dim, intermediate)."""
    heads = c["num_attention_heads"]
    head_dim = c.get("head_dim", c["hidden_size"] // heads)
    return c["hidden_size"], heads * head_dim, c.get("num_key_value_heads", heads) * head_dim, c["intermediate_size"]


def decoder_params(c: dict, qkv_bias: bool = False) -> int:
    """LLaMA / Qwen2 causal LM: embeddings, layers (attention, SwiGLU MLP, 2 RMSNorms), norm, head.

    Qwen2 has biases on q, k and v (`qkv_bias`); LLaMA has none.
    """
    h, q, kv, i = _decoder_shapes(c)
    attention = h * q + 2 * h * kv + q * h + (q + 2 * kv if qkv_bias else 0)
    layer = attention + 3 * h * i + 2 * h
    embeddings = c["vocab_size"] * h
    head = 0 if c.get("tie_word_embeddings", False) else c["vocab_size"] * h
    return embeddings + c["num_hidden_layers"] * layer + h + head


def decoder_lora(c: dict, r: int) -> int:
    """r·(in + out) for q, k, v, o, gate, up, down of every layer."""
    h, q, kv, i = _decoder_shapes(c)
    return c["num_hidden_layers"] * r * (2 * (h + q) + 2 * (h + kv) + 3 * (h + i))


def clip_vision_params(v: dict) -> int:
    """CLIP ViT: class + patch (no bias) + position embeddings, pre/post LayerNorm, encoder layers."""
    d, i, p = v["hidden_size"], v["intermediate_size"], v["patch_size"]
    positions = (v["image_size"] // p) ** 2 + 1
    layer = 4 * (d * d + d) + (d * i + i) + (i * d + d) + 2 * 2 * d
    return d + 3 * p * p * d + positions * d + 2 * 2 * d + v["num_hidden_layers"] * layer


def clip_vision_lora(v: dict, r: int) -> int:
    d, i = v["hidden_size"], v["intermediate_size"]
    return v["num_hidden_layers"] * r * (4 * 2 * d + 2 * (d + i))


def qwen_vision_params(v: dict) -> int:
    """Qwen2.5-VL ViT without its merger: Conv3d patch embedding (no bias) and blocks."""
    d, i = v["hidden_size"], v["intermediate_size"]
    patch = v["in_chans"] * v["temporal_patch_size"] * v["patch_size"] ** 2 * d
    block = 2 * d + (d * 3 * d + 3 * d) + (d * d + d) + 2 * (d * i + i) + (i * d + d)
    return patch + v["depth"] * block


def qwen_merger_params(v: dict) -> int:
    """RMSNorm, then Linear(d·m², d·m²), GELU, Linear(d·m², out) with biases, m = spatial_merge_size."""
    d, merged = v["hidden_size"], v["hidden_size"] * v["spatial_merge_size"] ** 2
    return d + merged * merged + merged + merged * v["out_hidden_size"] + v["out_hidden_size"]


def qwen_vision_lora_all(v: dict, r: int) -> int:
    """r·(in + out) for qkv, proj, gate, up and down of every block."""
    d, i = v["hidden_size"], v["intermediate_size"]
    return v["depth"] * r * ((d + 3 * d) + 2 * d + 3 * (d + i))


def mlp2x_gelu_params(vision: int, text: int) -> int:
    return vision * text + text + text * text + text


def expected_parts(backbone: str) -> dict[str, int]:
    """Closed-form parameter counts of each part of a bundled backbone."""
    if backbone == "llava-1.5-7b":
        llava = _json("llava-1.5-7b")
        vision = llava["vision_config"]
        return {"vision_tower": clip_vision_params(vision),
                "connector": mlp2x_gelu_params(vision["hidden_size"], _vicuna_7b()["hidden_size"]),
                "language_model": decoder_params(_vicuna_7b())}
    if backbone == "qwen2.5-vl-7b":
        qwen = _json("qwen2.5-vl-7b")
        return {"vision_tower": qwen_vision_params(qwen["vision_config"]),
                "connector": qwen_merger_params(qwen["vision_config"]),
                "language_model": decoder_params(qwen, qkv_bias=True)}
    vision, llama = _json("clip-vit-base-patch32")["vision_config"], _json("llama-3.2-3b")
    return {"vision_tower": clip_vision_params(vision),
            "connector": mlp2x_gelu_params(vision["hidden_size"], llama["hidden_size"]),
            "language_model": decoder_params(llama)}


def language_config(backbone: str) -> dict:
    # Qwen2.5-VL keeps its text fields at the top level of its config.
    return {"llava-1.5-7b": _vicuna_7b, "qwen2.5-vl-7b": lambda: _json("qwen2.5-vl-7b"),
            "clip-vit-b32+llama-3.2-3b": lambda: _json("llama-3.2-3b")}[backbone]()


# ----------------------------------------------------------------------------- tests


@pytest.fixture(scope="module")
def composed() -> dict:
    # Read-only uses share one meta instance per backbone; peft tests compose their own.
    return {backbone: accounting.compose(backbone) for backbone in accounting.BACKBONES}


@pytest.fixture
def experiment(default_config, schema) -> dict:
    """The config's defaults as an experiment: the LoRA settings every experiment starts from."""
    return defaults_experiment(default_config, schema)


def test_closed_forms_give_the_sizes_the_model_cards_state():
    # Hugging Face shows 7.06B (llava-1.5-7b-hf), 8.29B (Qwen2.5-VL-7B-Instruct), 3.21B (Llama-3.2-3B).
    assert round(sum(expected_parts("llava-1.5-7b").values()) / 1e9, 2) == 7.06
    assert round(sum(expected_parts("qwen2.5-vl-7b").values()) / 1e9, 2) == 8.29
    assert round(decoder_params(_json("llama-3.2-3b")) / 1e9, 2) == 3.21


CLOSED_FORM = ("llava-1.5-7b", "qwen2.5-vl-7b", "clip-vit-b32+llama-3.2-3b")
"""The backbones whose part sizes the closed forms above know; the other hf ones are checked by
their split adding up to the whole model and by their language LoRA."""
HF_ONLY = ("smolvlm-instruct", "paligemma-3b-pt-224", "janus-pro-7b", "emu3-chat")


@pytest.mark.parametrize("backbone", CLOSED_FORM)
def test_parameter_counts_match_closed_form(composed, backbone):
    parts = composed[backbone]
    expected = expected_parts(backbone)
    assert {name: accounting.count_parameters(parts[name]) for name in vlm.PARTS} == expected
    assert accounting.count_parameters(parts) == sum(expected.values())


@pytest.mark.parametrize("backbone", CLOSED_FORM)
@pytest.mark.parametrize("r", [8, 16])
def test_language_lora_matches_closed_form(composed, backbone, r):
    language = composed[backbone]["language_model"]
    assert accounting.lora_parameter_count(language, LLAMA_NAMES, r) == decoder_lora(language_config(backbone), r)


@pytest.mark.parametrize("backbone", HF_ONLY)
def test_hf_backbones_split_the_whole_model_and_their_language_lora_is_the_decoder_s(composed, backbone):
    config = AutoConfig.from_pretrained(accounting.MODELS_DIR / backbone)
    with torch.device("meta"):
        whole = AutoModelForImageTextToText.from_config(config)
    parts = composed[backbone]
    assert accounting.count_parameters(parts) == sum(p.numel() for p in whole.parameters())
    assert accounting.count_parameters(parts["language_model"]) > accounting.count_parameters(parts["vision_tower"])
    text = _json(backbone)["text_config"]
    assert accounting.lora_parameter_count(parts["language_model"], LLAMA_NAMES, 8) == decoder_lora(text, 8)


def test_lora_counts_only_the_named_projections(composed):
    llama = _json("llama-3.2-3b")
    h, q, kv, _ = _decoder_shapes(llama)
    language = composed["clip-vit-b32+llama-3.2-3b"]["language_model"]
    assert accounting.lora_parameter_count(language, ["q_proj", "v_proj"], 4) == llama["num_hidden_layers"] * 4 * (
        (h + q) + (h + kv))
    assert accounting.lora_parameter_count(language, ["lm_head_missing"], 4) == 0


def test_clip_vision_names_resolve_directly(composed):
    vision_config = _json("llava-1.5-7b")["vision_config"]
    targets = accounting.resolve_targets(composed["llava-1.5-7b"]["vision_tower"], CLIP_NAMES)
    assert targets == accounting.Targets(tuple(CLIP_NAMES), {}, ())
    assert accounting.lora_parameter_count(composed["llava-1.5-7b"]["vision_tower"], targets.names, 8) == (
        clip_vision_lora(vision_config, 8))


def test_clip_names_map_onto_qwen_vision_and_unknown_names_are_skipped(composed):
    vision = composed["qwen2.5-vl-7b"]["vision_tower"]
    targets = accounting.resolve_targets(vision, [*CLIP_NAMES, "c_attn"])
    assert set(targets.names) == {"qkv", "proj", "gate_proj", "up_proj", "down_proj"}
    assert targets.mapped == {"q_proj": ("qkv",), "k_proj": ("qkv",), "v_proj": ("qkv",), "out_proj": ("proj",),
                              "fc1": ("gate_proj", "up_proj"), "fc2": ("down_proj",)}
    assert targets.skipped == ("c_attn",)
    assert accounting.lora_parameter_count(vision, targets.names, 8) == qwen_vision_lora_all(
        _json("qwen2.5-vl-7b")["vision_config"], 8)
    # LLaMA names on CLIP: o_proj is out_proj, gate/up are fc1, down is fc2.
    clip = accounting.resolve_targets(composed["llava-1.5-7b"]["vision_tower"], LLAMA_NAMES)
    assert set(clip.names) == set(CLIP_NAMES) and clip.skipped == ()


def test_analytic_count_equals_peft_on_the_meta_model(experiment):
    # The pipeline's own adapter (adapters.adapter_config) attached by peft to weightless tensors.
    parts = accounting.compose("clip-vit-b32+llama-3.2-3b")
    lora = {**experiment["lora"], "vision_target_modules": CLIP_NAMES}
    peft_model = peft.get_peft_model(parts, adapters.adapter_config(lora, connector_trainable=True))
    trainable = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
    vision, llama = _json("clip-vit-base-patch32")["vision_config"], _json("llama-3.2-3b")
    assert trainable == (decoder_lora(llama, lora["r"]) + clip_vision_lora(vision, lora["r"])
                         + mlp2x_gelu_params(vision["hidden_size"], llama["hidden_size"]))


def test_a_full_copy_of_the_output_head_is_counted_as_peft_trains_it(experiment):
    experiment["lora"]["modules_to_save"] = ["lm_head"]
    peft_model = peft.get_peft_model(accounting.compose("clip-vit-b32+llama-3.2-3b"),
                                     adapters.adapter_config(experiment["lora"], connector_trainable=True))
    trainable = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
    row, = accounting.accounting_rows(experiment, ["clip-vit-b32+llama-3.2-3b"])
    llama = _json("llama-3.2-3b")
    assert row["saved_language"] == llama["vocab_size"] * llama["hidden_size"]  # tied in the base, a copy here
    assert row["adapter_params"] == trainable


def test_rows_of_the_default_experiment(experiment):
    # Default: joint tuning (LoRA on the language model + connector), r=8, 4 of 4 clients per round.
    row, = accounting.accounting_rows(experiment, ["clip-vit-b32+llama-3.2-3b"])
    parts = expected_parts("clip-vit-b32+llama-3.2-3b")
    total = sum(parts.values())
    adapter = decoder_lora(_json("llama-3.2-3b"), 8) + parts["connector"]
    assert (row["rounds"], row["groups"]) == (f"1-{experiment['rounds']}", ("connector", "language"))
    assert (row["total_params"], row["adapter_params"], row["lora_vision"]) == (total, adapter, 0)
    assert row["clients_per_round"] == 4
    assert row["ratio"] == pytest.approx(adapter / total)
    assert (row["upload_bytes_bf16"], row["upload_bytes_fp32"]) == (2 * adapter, 4 * adapter)
    assert (row["full_bytes_bf16"], row["full_bytes_fp32"]) == (2 * total, 4 * total)
    assert (row["round_bytes_bf16"], row["full_round_bytes_fp32"]) == (4 * 2 * adapter, 4 * 4 * total)


def test_two_stage_uploads_the_connector_then_the_adapters(experiment):
    experiment["tuning"] = {"mode": "two_stage", "connector_rounds": 1}
    experiment["lora"]["vision_target_modules"] = ["qkv"]
    connector_stage, lora_stage = accounting.accounting_rows(experiment, ["qwen2.5-vl-7b"])
    qwen = _json("qwen2.5-vl-7b")
    vision = qwen["vision_config"]
    assert (connector_stage["rounds"], connector_stage["groups"]) == ("1", ("connector",))
    assert connector_stage["adapter_params"] == qwen_merger_params(vision)
    assert (lora_stage["rounds"], lora_stage["groups"]) == (f"2-{experiment['rounds']}", ("vision", "language"))
    qkv_lora = vision["depth"] * 8 * (vision["hidden_size"] + 3 * vision["hidden_size"])
    assert lora_stage["adapter_params"] == decoder_lora(qwen, 8) + qkv_lora


def test_unknown_backbone_is_an_error():
    with pytest.raises(ValueError, match="bundled"):
        accounting.compose("gpt-2")


def test_cli_prints_every_backbone(capsys):
    accounting.main(["--config", str(REPO / "config" / "config.yaml")])
    out = capsys.readouterr().out
    assert "experiment defaults: LoRA r=8, tuning joint, 4 client(s) per round" in out
    table = out.split("LoRA targets per backbone:")[0]
    for backbone in accounting.BACKBONES:
        assert f"\n{backbone} " in table
    assert "0.094 GB" in out and "full copies" not in out
    accounting.main(["--config", str(REPO / "config" / "config.yaml"), "--experiment", "fedavg", "--backbone", "llava-1.5-7b"])
    assert "full copies (lora.modules_to_save): language 131.33M, vision 0.00M" in capsys.readouterr().out
