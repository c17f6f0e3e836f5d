"""The model-family layer on tiny offline models: the hf architectures' parameter groups, labels on
the target tokens only, generation, and a checkpoint loaded from a local directory like a hub id."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
import yaml
from workflow_util import REPO, TINY_HF_CONFIGS, tiny_hf_model

from fedumm.data.shapes import generate_shapes
from fedumm.data.shards import read_records, split_shards
from fedumm.models import adapters, families
from fedumm.models.architectures import ARCHITECTURES
from fedumm.models.families.hf import HFFamily
from fedumm.models.groups import parameter_group
from fedumm.models.text import IGNORE_INDEX

LORA = {"r": 2, "alpha": 4, "target_modules": ["q_proj", "v_proj"], "vision_target_modules": []}


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("shapes") / "shapes"
    generate_shapes(out, {"public": 12, "train": 6, "test": 4}, seed=0, image_size=64, shard_size=100)
    return out


@pytest.fixture(scope="module")
def built(data, tmp_path_factory) -> dict[str, families.LoadedBase]:
    root = tmp_path_factory.mktemp("bases")
    bases = {}
    for name in ("llava", "qwen2_5_vl", "emu3"):
        HFFamily().build_base(tiny_hf_model(name), split_shards(data, "public"), root / name, threads=1)
        bases[name] = families.load_base(root / name)
    return bases


def test_the_schema_lists_every_architecture() -> None:
    schema = yaml.safe_load((REPO / "workflow/schemas/config.schema.yaml").read_text())
    listed = schema["$defs"]["hf_model"]["properties"]["config"]["properties"]["model_type"]["enum"]
    assert sorted(listed) == sorted(ARCHITECTURES) == sorted(TINY_HF_CONFIGS)


@pytest.mark.parametrize(("key", "group"), [
    ("base_model.model.model.visual.merger.mlp.0.weight", "connector"),  # Qwen2.5-VL: projector inside the ViT
    ("base_model.model.model.visual.blocks.0.attn.qkv.lora_A.weight", "vision"),
    ("base_model.model.model.language_model.layers.0.self_attn.q_proj.lora_B.weight", "language"),
    ("base_model.model.model.text_model.layers.1.mlp.down_proj.lora_A.weight", "language"),  # Idefics3, Emu3
    ("base_model.model.model.connector.modality_projection.proj.weight", "connector"),
    ("base_model.model.model.aligner.fc1.weight", "connector"),  # Janus
    ("base_model.model.model.vision_model.encoder.layers.0.self_attn.q_proj.lora_A.weight", "vision"),
    ("base_model.model.model.multi_modal_projector.linear_1.weight", "connector"),
    ("base_model.model.connector.0.weight", "connector"),  # the LLaVA recipe
])
def test_parameter_groups_of_every_family(key: str, group: str) -> None:
    assert parameter_group(key) == group


def test_labels_cover_the_target_and_eos_only(built, data) -> None:
    base = built["llava"]
    records = read_records(split_shards(data, "train"))[:3]
    inputs = base.family.inputs(base, split_shards(data, "train"), {r["id"] for r in records})
    batch = inputs.collate(inputs.examples(records))
    tokenizer = base.processor.tokenizer
    for row, record in enumerate(records):
        labelled = batch["labels"][row][batch["labels"][row] != IGNORE_INDEX].tolist()
        assert tokenizer.decode(labelled[:-1]).strip() == record["multiple_choice_answer"].lower()
        assert labelled[-1] == tokenizer.eos_token_id
        n_image = int((batch["input_ids"][row] == base.model.config.image_token_index).sum())
        assert n_image == 16  # 64x64 image, 16x16 patches, CLS dropped
    assert base.model(**batch).loss.item() > 0


def test_qwen_projector_is_trained_as_a_whole_and_kept_out_of_vision_lora(built) -> None:
    base = built["qwen2_5_vl"]
    lora = {**LORA, "vision_target_modules": ["qkv"]}
    model = adapters.attach_adapter(base.model, base.family.adapter_config(base.model, lora, True), seed=0)
    groups = {}
    for key in adapters.adapter_state(model):
        groups.setdefault(parameter_group(key), []).append(key)
    assert set(groups) == {"vision", "connector", "language"}
    assert all(".lora_" not in key for key in groups["connector"])  # the merger is a full copy
    assert all("merger" not in key for key in groups["vision"])


def test_the_output_head_is_a_trained_copy_in_the_language_group(built) -> None:
    fresh = copy.deepcopy(built["qwen2_5_vl"].model)  # attaching an adapter changes the model in place
    assert not hasattr(fresh.lm_head, "modules_to_save")
    config = built["qwen2_5_vl"].family.adapter_config(fresh, {**LORA, "modules_to_save": ["lm_head"]}, False)
    head = fresh.lm_head.weight.detach().clone()
    state = adapters.adapter_state(adapters.attach_adapter(fresh, config, seed=0))
    assert torch.equal(state["base_model.model.lm_head.weight"], head)
    assert [key for key in state if "lm_head" in key] == ["base_model.model.lm_head.weight"]
    assert parameter_group("base_model.model.lm_head.weight") == "language"


def test_an_encoder_free_model_refuses_vision_lora_and_a_projector(built) -> None:
    base = built["emu3"]
    with pytest.raises(ValueError, match="emu3 has no vision encoder"):
        base.family.adapter_config(base.model, {**LORA, "vision_target_modules": ["q_proj"]}, False)
    with pytest.raises(ValueError, match="emu3 has no projector"):
        base.family.adapter_config(base.model, LORA, True)


def test_generation_returns_one_answer_per_record(built, data) -> None:
    base = built["qwen2_5_vl"]
    records = read_records(split_shards(data, "test"))
    inputs = base.family.inputs(base, split_shards(data, "test"), {r["id"] for r in records})
    answers = inputs.generate(base.model.eval(), records, max_new_tokens=3, device="cpu")
    assert len(answers) == len(records) and all(isinstance(answer, str) for answer in answers)
    assert all(len(answer.split()) <= 3 for answer in answers)


def test_a_local_checkpoint_directory_loads_like_a_hub_id(built, data, tmp_path) -> None:
    """`id` pointing at a directory with a model, its processor and a chat template: the path a
    cluster without internet takes. The prompt then comes from the chat template."""
    source = built["llava"]
    checkpoint = tmp_path / "llava-checkpoint"
    source.model.save_pretrained(checkpoint)
    source.processor.chat_template = (
        "{% for m in messages %}USER: {% for c in m['content'] %}{% if c['type'] == 'image' %}<image>"
        "{% else %}{{ c['text'] }}{% endif %}{% endfor %}{% endfor %} ASSISTANT:"
    )
    source.processor.save_pretrained(checkpoint)
    spec = {"family": "hf", "id": str(checkpoint), "dtype": "float32"}
    summary = HFFamily().build_base(spec, None, tmp_path / "base", threads=1)
    assert summary["source"] == str(checkpoint)
    assert json.loads((tmp_path / "base/spec.json").read_text())["spec"] == spec
    base = families.load_base(tmp_path / "base")
    records = read_records(split_shards(data, "train"))[:2]
    inputs = base.family.inputs(base, split_shards(data, "train"), {r["id"] for r in records})
    batch = inputs.collate(inputs.examples(records))
    prompt = base.processor.tokenizer.convert_ids_to_tokens(batch["input_ids"][0].tolist())
    # The chat template's words are not in the tiny vocabulary (<unk>); the plain template's are.
    assert "question" not in prompt and "answer" not in prompt and prompt[:2] == ["<unk>", ":"]
    with torch.no_grad():
        assert torch.allclose(base.model(**batch).logits, source.model(**batch).logits)
