"""Composable VLM, base-model artifact and PEFT adapters (fedumm.model), on tiny random models."""

import json

import pytest
import torch
from peft import PeftModel
from PIL import Image
from safetensors import safe_open
from torch import nn
from transformers import (
    CLIPConfig,
    CLIPModel,
    CLIPVisionConfig,
    CLIPVisionModel,
    LlamaConfig,
    LlamaForCausalLM,
    SiglipVisionConfig,
    SiglipVisionModel,
)

from fedumm.models.adapters import (
    adapter_config,
    adapter_state,
    attach_adapter,
    load_adapter,
    parameter_group,
    save_adapter,
    set_adapter_state,
    trainable_groups,
)
from fedumm.models.images import (
    CLIP_MEAN,
    CLIP_STD,
    image_transform,
    transform_from_preprocessor,
)
from fedumm.models.text import (
    build_wordlevel_tokenizer,
    collate_train,
    decode_answers,
    encode_example,
    encode_prompts,
)
from fedumm.models.vlm import (
    VisionLanguageModel,
    build_connector,
    build_vlm,
    load_base,
    save_base,
    unwrap,
    validate_spec,
)

VISION = {"model_type": "clip_vision_model", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
          "num_attention_heads": 2, "image_size": 64, "patch_size": 16}
LANGUAGE = {"model_type": "llama", "hidden_size": 128, "intermediate_size": 256, "num_hidden_layers": 2,
            "num_attention_heads": 4, "num_key_value_heads": 4, "max_position_embeddings": 128}
SPEC = {"vision": {"config": VISION}, "language": {"config": LANGUAGE}, "tokenizer": {"wordlevel": True}}
LORA = {"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"], "vision_target_modules": ["q_proj"]}
QUESTIONS = ["what color is the cat?", "how many dogs?", None]
ANSWERS = ["red", "two", "blue cats"]


@pytest.fixture(scope="module")
def tokenizer():
    return build_wordlevel_tokenizer(["what color is the cat", "how many dogs", "red blue two cats"])


@pytest.fixture()
def model(tokenizer):
    return build_vlm(SPEC, len(tokenizer), seed=0).eval()


@pytest.fixture(scope="module")
def pixels():
    return torch.rand(3, 3, 64, 64, generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def batch(tokenizer):
    return collate_train([encode_example(tokenizer, q, a) for q, a in zip(QUESTIONS, ANSWERS)], tokenizer.pad_token_id)


def greedy(model, tokenizer, pixels, questions, max_new_tokens=4):
    prompts = encode_prompts(tokenizer, questions)
    return model.generate(**prompts, pixel_values=pixels, max_new_tokens=max_new_tokens,
                          eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)


def count_lora(module: nn.Module) -> int:
    return sum(name.endswith("lora_A") for name, _ in module.named_modules())


# ----------------------------------------------------------------------------- connector and spec


@pytest.mark.parametrize(
    ("kind", "linears", "gelus"),
    [("linear", 1, 0), ("mlp1x_gelu", 1, 0), ("mlp2x_gelu", 2, 1), ("mlp6x_gelu", 6, 5)],
)
def test_connector_kinds(kind, linears, gelus):
    connector = build_connector(kind, 64, 128)
    assert sum(isinstance(m, nn.Linear) for m in connector.modules()) == linears
    assert sum(isinstance(m, nn.GELU) for m in connector.modules()) == gelus
    assert connector(torch.zeros(2, 5, 64)).shape == (2, 5, 128)


def test_mlp2x_gelu_has_llava_parameter_names():
    assert list(build_connector("mlp2x_gelu", 8, 16).state_dict()) == ["0.weight", "0.bias", "2.weight", "2.bias"]


def test_identity_connector():
    features = torch.randn(1, 3, 16)
    assert torch.equal(build_connector("identity", 16, 16)(features), features)
    with pytest.raises(ValueError, match="equal dims"):
        build_connector("identity", 16, 32)


@pytest.mark.parametrize("kind", ["mlp0x_gelu", "mlp2x_relu", "conv"])
def test_unknown_connector(kind):
    with pytest.raises(ValueError, match="connector"):
        build_connector(kind, 8, 8)


def test_validate_spec_fills_defaults():
    spec = validate_spec(SPEC)
    assert (spec["select_layer"], spec["select_feature"], spec["connector"], spec["dtype"]) == (-2, "patch", "mlp2x_gelu", "float32")


@pytest.mark.parametrize(
    ("change", "key"),
    [
        ({"vision": {"id": "a", "config": {}}}, "`vision`"),
        ({"language": {"config": {"hidden_size": 8}}}, "`language.config`"),
        ({"tokenizer": {}}, "`tokenizer`"),
        ({"select_layer": "last"}, "`select_layer`"),
        ({"select_feature": "cls"}, "`select_feature`"),
        ({"connector": "mlp2x_relu"}, "`connector`"),
        ({"dtype": "float99"}, "`dtype`"),
        ({"projector": "linear"}, "projector"),
    ],
)
def test_validate_spec_names_the_bad_key(change, key):
    with pytest.raises(ValueError, match=key):
        validate_spec({**SPEC, **change})


# ----------------------------------------------------------------------------- forward / generate


def test_encode_images_selects_layer_and_drops_cls(model, pixels):
    hidden = model.vision_tower(pixels, output_hidden_states=True).hidden_states[-2]
    features = model.encode_images(pixels)
    assert features.shape == (3, 16, 64)  # (64 / 16) ** 2 patches, CLS dropped
    assert torch.equal(features, hidden[:, 1:])
    model.select_feature = "cls_patch"
    assert torch.equal(model.encode_images(pixels), hidden)


def test_forward_loss_and_image_features_path(model, batch, pixels):
    from_pixels = model(**batch, pixel_values=pixels)
    from_features = model(**batch, image_features=model.encode_images(pixels))
    assert torch.isfinite(from_pixels.loss)
    assert from_pixels.logits.shape == (3, 16 + batch["input_ids"].shape[1], model.language_model.config.vocab_size)
    assert torch.equal(from_pixels.loss, from_features.loss)
    assert torch.equal(from_pixels.logits, from_features.logits)
    with pytest.raises(ValueError, match="exactly one"):
        model(**batch)


def test_visual_positions_carry_no_loss(model, batch, pixels):
    # Only target tokens are labelled, so the loss equals cross-entropy over the text positions alone.
    logits = model(**batch, pixel_values=pixels).logits[:, 16:]
    expected = nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1), batch["labels"][:, 1:].flatten())
    assert torch.allclose(model(**batch, pixel_values=pixels).loss, expected, atol=1e-6)


def test_left_padded_forward_matches_unpadded(model, tokenizer, pixels):
    prompts = encode_prompts(tokenizer, ["what color is the cat?", None])
    padded = model(**prompts, pixel_values=pixels[:2]).logits[1, -3:]
    alone = model(**encode_prompts(tokenizer, [None]), pixel_values=pixels[1:2]).logits[0, -3:]
    assert torch.allclose(padded, alone, atol=1e-5)


def test_batched_generation_equals_one_by_one(model, tokenizer, pixels):
    batched = greedy(model, tokenizer, pixels, QUESTIONS, max_new_tokens=6)
    for i, question in enumerate(QUESTIONS):
        alone = greedy(model, tokenizer, pixels[i:i + 1], [question], max_new_tokens=6)[0]
        assert batched[i, : len(alone)].tolist() == alone.tolist()
        assert set(batched[i, len(alone):].tolist()) <= {tokenizer.pad_token_id}


def test_overfits_a_batch_then_generates_the_answers(model, tokenizer, batch, pixels):
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(30):
        loss = model(**batch, pixel_values=pixels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.1 * losses[0]
    model.eval()
    assert decode_answers(tokenizer, greedy(model, tokenizer, pixels, QUESTIONS)) == ANSWERS


def test_siglip_vision_keeps_all_tokens(tokenizer, batch, pixels):
    siglip = {key: value for key, value in VISION.items() if key != "model_type"} | {"model_type": "siglip_vision_model"}
    model = build_vlm({**SPEC, "vision": {"config": siglip}}, len(tokenizer), seed=0)
    assert isinstance(model.vision_tower, SiglipVisionModel)
    assert model.encode_images(pixels).shape == (3, 16, 64)  # no CLS: "patch" keeps all 16
    assert torch.isfinite(model(**batch, pixel_values=pixels).loss)


def test_build_is_seeded_and_leaves_global_rng_alone(tokenizer):
    state = torch.random.get_rng_state()
    first, again = build_vlm(SPEC, len(tokenizer), seed=3), build_vlm(SPEC, len(tokenizer), seed=3)
    assert torch.equal(torch.random.get_rng_state(), state)
    other = build_vlm(SPEC, len(tokenizer), seed=4)
    for name, tensor in first.state_dict().items():
        assert torch.equal(tensor, again.state_dict()[name])
    assert not torch.equal(first.connector[0].weight, other.connector[0].weight)
    assert first.language_model.config.vocab_size == len(tokenizer) == 20


def test_dtype_applies_to_all_parts(tokenizer):
    model = build_vlm({**SPEC, "dtype": "bfloat16"}, len(tokenizer), seed=0)
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}


# ----------------------------------------------------------------------------- hub-format checkpoints


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory, tokenizer):
    """Tiny CLIPModel / CLIPVisionModel / SiglipVisionModel / Llama checkpoints in hub layout."""
    root = tmp_path_factory.mktemp("hub")
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, image_size=32, patch_size=16)
    torch.manual_seed(0)
    models = {
        "clip": CLIPModel(CLIPConfig(vision_config=vision, projection_dim=16, text_config=dict(
            hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, vocab_size=50,
            bos_token_id=0, eos_token_id=1, pad_token_id=1))),
        "clip_vision": CLIPVisionModel(CLIPVisionConfig(**vision)),
        "siglip_vision": SiglipVisionModel(SiglipVisionConfig(**vision)),
        "llama": LlamaForCausalLM(LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                                              num_key_value_heads=2, vocab_size=len(tokenizer), max_position_embeddings=64)),
    }
    for name, model in models.items():
        model.save_pretrained(root / name)
    # the layout of openai/clip-vit-large-patch14-336 (int sizes), with a non-default mean/std
    preprocessor = {"crop_size": 32, "do_center_crop": True, "do_normalize": True, "do_resize": True,
                    "feature_extractor_type": "CLIPFeatureExtractor", "image_mean": [0.5, 0.5, 0.5],
                    "image_std": [0.25, 0.25, 0.25], "resample": 3, "size": 32}
    (root / "clip" / "preprocessor_config.json").write_text(json.dumps(preprocessor))
    tokenizer.save_pretrained(root / "tokenizer")
    return root, models


@pytest.mark.parametrize(("name", "tower"), [("clip", "vision_model"), ("clip_vision", None), ("siglip_vision", None)])
def test_build_from_local_checkpoints(checkpoints, name, tower):
    root, models = checkpoints
    spec = {"vision": {"id": str(root / name)}, "language": {"id": str(root / "llama")},
            "tokenizer": {"id": str(root / "tokenizer")}, "connector": "linear"}
    model = build_vlm(spec, None, seed=0)
    saved_vision = getattr(models[name], tower) if tower else models[name]
    for key, tensor in saved_vision.state_dict().items():
        assert torch.equal(model.vision_tower.state_dict()[key], tensor), key
    assert set(model.vision_tower.state_dict()) == set(saved_vision.state_dict())
    for key, tensor in models["llama"].state_dict().items():
        assert torch.equal(model.language_model.state_dict()[key], tensor), key
    assert model.connector.weight.shape == (32, 32)


def test_build_rejects_too_small_hub_vocabulary(checkpoints, tokenizer):
    root, _ = checkpoints
    spec = {"vision": {"id": str(root / "clip")}, "language": {"id": str(root / "llama")}, "tokenizer": {"wordlevel": True}}
    with pytest.raises(ValueError, match="embeds only 20"):
        build_vlm(spec, len(tokenizer) + 1, seed=0)


def solid(width: int, height: int, rgb: tuple[int, int, int]) -> Image.Image:
    return Image.new("RGB", (width, height), rgb)


def test_image_transform_reads_preprocessor_config(checkpoints):
    root, _ = checkpoints
    transform = image_transform({"vision": {"id": str(root / "clip")}})
    assert (transform.shortest_edge, transform.crop, transform.mean, transform.std) == (32, (32, 32), (0.5,) * 3, (0.25,) * 3)
    pixels = transform(solid(80, 40, (255, 0, 51)))
    assert pixels.shape == (3, 32, 32)
    assert torch.allclose(pixels[:, 5, 7], torch.tensor([2.0, -2.0, -1.2]), atol=1e-6)  # (x / 255 - 0.5) / 0.25


@pytest.mark.parametrize(
    ("pre", "expected"),
    [
        ({"size": {"shortest_edge": 48}, "crop_size": {"height": 40, "width": 40}}, (48, None, (40, 40))),
        ({"size": 48, "crop_size": 40, "do_center_crop": False}, (48, None, None)),
        ({"size": {"height": 40, "width": 30}}, (None, (40, 30), None)),  # SigLIP: exact resize, no crop
        ({}, (64, None, (64, 64))),
    ],
)
def test_transform_from_preprocessor_size_forms(pre, expected):
    transform = transform_from_preprocessor(pre, image_size=64)
    assert (transform.shortest_edge, transform.resize, transform.crop) == expected
    height, width = expected[2] or expected[1] or (48, 72)  # 72x48 input keeps 3:2 under shortest edge 48
    assert transform(solid(90, 60, (0, 0, 0))).shape == (3, height, width)


def test_image_transform_without_preprocessor_uses_clip_defaults(checkpoints):
    root, _ = checkpoints
    transform = image_transform(root / "siglip_vision")
    assert (transform.shortest_edge, transform.crop, transform.mean, transform.std) == (32, (32, 32), CLIP_MEAN, CLIP_STD)


def test_image_transform_inline_config():
    transform = image_transform(SPEC)
    pixels = transform(solid(100, 70, (255, 255, 0)))
    assert pixels.shape == (3, 64, 64)
    expected = [(1 - CLIP_MEAN[0]) / CLIP_STD[0], (1 - CLIP_MEAN[1]) / CLIP_STD[1], -CLIP_MEAN[2] / CLIP_STD[2]]
    assert torch.allclose(pixels[:, 30, 30], torch.tensor(expected), atol=1e-5)


def test_image_transform_resize_and_centre_crop_geometry():
    transform = image_transform(SPEC)
    # left third red, right two thirds blue: after resizing 96x64 -> 96x64 (shortest edge 64) and
    # cropping the central 64 columns (16..80), the red band keeps columns 16..32, i.e. 16 of 64.
    image = Image.new("RGB", (96, 64), (0, 0, 255))
    image.paste((255, 0, 0), (0, 0, 32, 64))
    red = transform(image)[0, 10] > 0
    assert red[:15].all() and not red[17:].any()


# ----------------------------------------------------------------------------- base artifact


def files(directory):
    return {path.relative_to(directory).as_posix(): path.read_bytes() for path in sorted(directory.rglob("*")) if path.is_file()}


def test_save_load_base_round_trip(model, tokenizer, batch, pixels, tmp_path):
    with torch.no_grad():
        model.connector[0].weight.add_(1.0)  # differs from the seeded init: must come from the file
    out = tmp_path / "base"
    save_base(model, tokenizer, SPEC, out, ["vision_tower", "connector", "language_model"])
    assert sorted(files(out)) == ["spec.json", "tokenizer/tokenizer.json", "tokenizer/tokenizer_config.json", "weights.safetensors"]
    record = json.loads((out / "spec.json").read_text())
    assert record["seed"] == 0 and record["spec"]["language"]["config"]["vocab_size"] == 20
    loaded, loaded_tokenizer, spec = load_base(out)
    assert spec == record["spec"] and loaded_tokenizer.get_vocab() == tokenizer.get_vocab()
    assert torch.equal(loaded.eval()(**batch, pixel_values=pixels).logits, model(**batch, pixel_values=pixels).logits)


def test_save_base_is_byte_reproducible_and_replaces(model, tokenizer, tmp_path):
    save_base(model, tokenizer, SPEC, tmp_path / "a", ["connector"])
    save_base(model, tokenizer, SPEC, tmp_path / "b", ["connector"])
    assert files(tmp_path / "a") == files(tmp_path / "b")
    save_base(model, tokenizer, SPEC, tmp_path / "a", ["connector", "language_model"])  # replaces existing dir
    assert json.loads((tmp_path / "a" / "spec.json").read_text())["trained_parts"] == ["connector", "language_model"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b"]  # no temp dirs left behind


def test_connector_only_base_rebuilds_the_rest_from_the_seed(tokenizer, tmp_path):
    model = build_vlm(SPEC, len(tokenizer), seed=7)
    with torch.no_grad():
        model.connector[2].bias.fill_(0.5)
    save_base(model, tokenizer, SPEC, tmp_path / "base", ["connector"])
    with safe_open(tmp_path / "base" / "weights.safetensors", "pt") as f:
        assert sorted(f.keys()) == ["connector.0.bias", "connector.0.weight", "connector.2.bias", "connector.2.weight"]
    loaded = load_base(tmp_path / "base")[0]
    for name, tensor in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name


# ----------------------------------------------------------------------------- adapters


def test_lora_targets_only_the_intended_modules(model):
    peft_model = attach_adapter(model, adapter_config(LORA, connector_trainable=True), seed=0)
    inner = unwrap(peft_model)
    assert count_lora(inner.language_model) == 4  # q_proj, v_proj x 2 layers
    assert count_lora(inner.vision_tower) == 2  # q_proj x 2 layers
    assert count_lora(inner.connector) == 0


def test_language_only_lora_leaves_vision_alone(model):
    peft_model = attach_adapter(model, adapter_config({**LORA, "vision_target_modules": []}, connector_trainable=False), seed=0)
    assert (count_lora(unwrap(peft_model).language_model), count_lora(unwrap(peft_model).vision_tower)) == (4, 0)
    assert {parameter_group(key) for key in adapter_state(peft_model)} == {"language"}
    with pytest.raises(ValueError, match="target_modules"):
        adapter_config({**LORA, "target_modules": [], "vision_target_modules": []}, connector_trainable=True)


def test_adapter_state_groups_and_round_trip(model):
    peft_model = attach_adapter(model, adapter_config(LORA, connector_trainable=True), seed=0)
    state = adapter_state(peft_model)
    groups = {parameter_group(key) for key in state}
    assert groups == {"vision", "language", "connector"}
    assert sorted(key for key in state if parameter_group(key) == "connector") == [
        "base_model.model.connector.0.bias", "base_model.model.connector.0.weight",
        "base_model.model.connector.2.bias", "base_model.model.connector.2.weight"]
    assert len(state) == 2 * 6 + 4
    changed = {key: value + 1.0 for key, value in state.items()}
    set_adapter_state(peft_model, changed)
    for key, value in adapter_state(peft_model).items():
        assert torch.equal(value, changed[key]), key
    with pytest.raises(ValueError, match="missing"):
        set_adapter_state(peft_model, {key: value for key, value in state.items() if "connector" not in key})


def test_parameter_group_accepts_state_keys_and_parameter_names():
    assert parameter_group("base_model.model.vision_tower.encoder.layers.0.self_attn.q_proj.lora_A.weight") == "vision"
    assert parameter_group("base_model.model.connector.modules_to_save.default.0.weight") == "connector"
    assert parameter_group("language_model.model.layers.0.self_attn.v_proj.lora_B.default.weight") == "language"
    assert parameter_group("base_model.model.lm_head.modules_to_save.default.weight") == "language"  # hf models' head
    with pytest.raises(ValueError):
        parameter_group("base_model.model.pooler.weight")


def test_modules_to_save_trains_a_full_copy_of_the_output_head(model):
    head = model.language_model.lm_head.weight.detach().clone()
    peft_model = attach_adapter(model, adapter_config({**LORA, "modules_to_save": ["lm_head"]}, connector_trainable=False), seed=0)
    state = adapter_state(peft_model)
    assert torch.equal(state["base_model.model.language_model.lm_head.weight"], head)
    assert parameter_group("base_model.model.language_model.lm_head.weight") == "language"
    assert len(state) == 2 * 6 + 1
    trainable_groups(peft_model, {"language"})
    trained = {name for name, param in peft_model.named_parameters() if param.requires_grad}
    assert "base_model.model.language_model.lm_head.modules_to_save.default.weight" in trained


def test_attach_adapter_is_seeded(tokenizer):
    config = adapter_config(LORA, connector_trainable=True)
    first = adapter_state(attach_adapter(build_vlm(SPEC, len(tokenizer), seed=0), config, seed=1))
    again = adapter_state(attach_adapter(build_vlm(SPEC, len(tokenizer), seed=0), config, seed=1))
    other = adapter_state(attach_adapter(build_vlm(SPEC, len(tokenizer), seed=0), config, seed=2))
    lora_a = "base_model.model.language_model.model.layers.0.self_attn.q_proj.lora_A.weight"
    assert all(torch.equal(first[key], again[key]) for key in first)
    assert not torch.equal(first[lora_a], other[lora_a])


@pytest.mark.parametrize(
    ("groups", "expected"),
    [({"connector"}, {"connector": 4}), ({"language", "vision"}, {"language": 8, "vision": 4}),
     ({"vision", "language", "connector"}, {"connector": 4, "language": 8, "vision": 4}), (set(), {})],
)
def test_trainable_groups(model, groups, expected):
    peft_model = attach_adapter(model, adapter_config(LORA, connector_trainable=True), seed=0)
    trainable_groups(peft_model, groups)
    counts: dict[str, int] = {}
    for name, param in peft_model.named_parameters():
        if param.requires_grad:
            counts[parameter_group(name)] = counts.get(parameter_group(name), 0) + 1
    assert counts == expected


def test_peft_model_forward_and_generate(model, tokenizer, batch, pixels):
    peft_model = attach_adapter(model, adapter_config(LORA, connector_trainable=True), seed=0)
    inner = unwrap(peft_model)
    assert isinstance(inner, VisionLanguageModel) and unwrap(inner) is inner
    with torch.no_grad():
        inner.connector.modules_to_save["default"][0].weight.add_(0.5)  # the trained copy is the one used
    assert torch.equal(peft_model(**batch, pixel_values=pixels).logits, inner(**batch, pixel_values=pixels).logits)
    assert not torch.equal(inner(**batch, pixel_values=pixels).logits, build_vlm(SPEC, len(tokenizer), 0)(**batch, pixel_values=pixels).logits)
    assert greedy(inner, tokenizer, pixels, QUESTIONS).shape[0] == 3


def test_save_adapter_round_trips_through_peft_from_pretrained(model, tokenizer, batch, pixels, tmp_path):
    save_base(model, tokenizer, SPEC, tmp_path / "base", ["vision_tower", "connector", "language_model"])
    peft_model = attach_adapter(model, adapter_config(LORA, connector_trainable=True), seed=0)
    # LoRA B starts at zero: perturb every adapter tensor so the round trip is meaningful.
    set_adapter_state(peft_model, {key: value + 0.01 for key, value in adapter_state(peft_model).items()})
    save_adapter(peft_model, tmp_path / "adapter")
    assert sorted(files(tmp_path / "adapter")) == ["adapter_config.json", "adapter_model.safetensors"]

    loaded = PeftModel.from_pretrained(load_base(tmp_path / "base")[0], tmp_path / "adapter").eval()
    assert torch.equal(loaded(**batch, pixel_values=pixels).logits, peft_model(**batch, pixel_values=pixels).logits)
    assert greedy(unwrap(loaded), tokenizer, pixels, QUESTIONS).tolist() == greedy(unwrap(peft_model), tokenizer, pixels, QUESTIONS).tolist()

    trainable = load_adapter(load_base(tmp_path / "base")[0], tmp_path / "adapter", is_trainable=True)
    assert any(p.requires_grad for p in trainable.parameters())
    assert not any(p.requires_grad for p in loaded.parameters())


def test_save_adapter_is_byte_deterministic_and_accepts_a_state(model, tmp_path):
    peft_model = attach_adapter(model, adapter_config(LORA, connector_trainable=True), seed=0)
    save_adapter(peft_model, tmp_path / "a")
    save_adapter(peft_model, tmp_path / "b")
    assert files(tmp_path / "a") == files(tmp_path / "b")
    zeros = {key: torch.zeros_like(value) for key, value in adapter_state(peft_model).items()}
    save_adapter(peft_model, tmp_path / "a", state=zeros)  # replaces, e.g. with an aggregated state
    with safe_open(tmp_path / "a" / "adapter_model.safetensors", "pt") as f:
        assert sorted(f.keys()) == sorted(zeros) and f.metadata() == {"format": "pt"}
        assert all(f.get_tensor(key).abs().sum() == 0 for key in f.keys())
    with pytest.raises(ValueError, match="unexpected"):
        save_adapter(peft_model, tmp_path / "c", state={**zeros, "base_model.model.connector.9.weight": torch.zeros(1)})
    assert not (tmp_path / "c").exists()
    config = json.loads((tmp_path / "a" / "adapter_config.json").read_text())
    assert (config["r"], config["lora_alpha"], config["modules_to_save"], config["inference_mode"]) == (4, 8, ["connector"], True)


def test_failed_write_leaves_the_old_directory(tmp_path):
    from fedumm.io import atomic_dir

    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "kept").write_text("old")
    with pytest.raises(RuntimeError), atomic_dir(tmp_path / "out") as tmp:
        (tmp / "new").write_text("new")
        raise RuntimeError("interrupted")
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["kept"]
