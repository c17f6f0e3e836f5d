"""One client round on real files: tiny base model, seeded initial adapter, local training."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file
from workflow_util import client_world

from fedumm.data import shards
from fedumm.federated.client import (
    ClientInputs,
    ClientJob,
    LocalTraining,
    train_client,
    upload_size,
)
from fedumm.models import adapters, features, images
from fedumm.models.vlm import load_base

TRAIN = {"lr": 0.01, "weight_decay": 0.0, "warmup_ratio": 0.0, "local_epochs": 1, "local_steps": 4,
         "batch_size": 8, "grad_clip": 1.0, "prox_mu": 0.0}
EVAL = {"batch_size": 32, "max_new_tokens": 3}
LORA = {"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"], "vision_target_modules": []}


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("client")
    dataset, parts = client_world(root, {"public": 64, "train": 48, "val": 16, "test": 8}, pretrain_steps=5, lora=LORA)
    vlm, _, base_spec = load_base(root / "base")
    feature_files = {}
    for split in ("train", "val"):
        feature_files[split] = root / "features" / f"{split}.safetensors"
        features.extract_features(vlm, images.image_transform(base_spec), shards.split_shards(dataset, split),
                                  feature_files[split], batch_size=16, device=torch.device("cpu"))
    return {"root": root, "dataset": dataset, "features": feature_files, "parts": parts}


def _train(world, out: str, groups, use_features=True, index="client_001.json", round_index=1,
           **train_overrides) -> dict:
    root = world["root"]
    inputs = ClientInputs(
        base_dir=root / "base",
        start_adapter=root / "global",
        index_file=root / "index" / index,
        shards={s: shards.split_shards(world["dataset"], s) for s in ("train", "val")},
        feature_files=world["features"] if use_features else None,
    )
    job = ClientJob(experiment="exp", client=1, round_index=round_index, seed=7, groups=groups,
                    training=LocalTraining.from_config({**TRAIN, **train_overrides}), eval_config=EVAL)
    return train_client(inputs, job, root / out)


def _changed(world, out: str) -> dict[str, bool]:
    start = load_file(world["root"] / "global" / "adapter_model.safetensors")
    trained = load_file(world["root"] / out / "adapter_model.safetensors")
    assert set(start) == set(trained)
    return {name: not torch.equal(start[name], trained[name]) for name in start}


def test_client_trains_only_its_groups_and_reports_metrics(world):
    metrics = _train(world, "lora_only", ["language"])
    assert metrics["num_samples"] == len(world["parts"]["train"][1])
    assert metrics["steps"] == 4 and metrics["val_samples"] == len(world["parts"]["val"][1])
    assert 0.0 <= metrics["val_vqa_accuracy"] <= 1.0
    changed = _changed(world, "lora_only")
    # LoRA B starts at zero, so one optimizer step moves every B; the connector stays frozen.
    assert all(changed[n] for n in changed if "lora_B" in n)
    assert not any(changed[n] for n in changed if adapters.parameter_group(n) == "connector")

    state = load_file(world["root"] / "lora_only" / "adapter_model.safetensors")
    language_bytes = sum(t.numel() * t.element_size() for n, t in state.items() if "lora_" in n)
    assert language_bytes < metrics["bytes_uploaded"] < language_bytes + 8192
    language = {name for name in state if adapters.parameter_group(name) == "language"}
    assert metrics["bytes_uploaded"] == upload_size(state, language, {})
    assert json.loads((world["root"] / "lora_only" / "metrics.json").read_text())["steps"] == 4


def test_a_one_pass_client_trains_on_the_rounds_part_only(world):
    index = json.loads((world["root"] / "index" / "client_001.json").read_text())
    parts = [index["train"][:5], index["train"][5:12]]
    (world["root"] / "index" / "one_pass.json").write_text(json.dumps({**index, "train_rounds": parts}))
    # Round 2 reads part 2, round 3 starts a second pass over part 1.
    assert _train(world, "pass_2", ["language"], index="one_pass.json", round_index=2)["num_samples"] == 7
    assert _train(world, "pass_3", ["language"], index="one_pass.json", round_index=3)["num_samples"] == 5


def test_connector_round_leaves_lora_untouched(world):
    _train(world, "connector_only", ["connector"])
    changed = _changed(world, "connector_only")
    assert any(changed[n] for n in changed if adapters.parameter_group(n) == "connector")
    assert not any(changed[n] for n in changed if "lora_" in n)


def test_training_from_images_matches_cached_features(world):
    from_features = _train(world, "from_features", ["language", "connector"])
    from_images = _train(world, "from_images", ["language", "connector"], use_features=False)
    assert from_images["train_loss"] == pytest.approx(from_features["train_loss"], rel=1e-4)


def test_client_training_is_deterministic(world):
    _train(world, "again_a", ["language"])
    _train(world, "again_b", ["language"])
    a = (world["root"] / "again_a" / "adapter_model.safetensors").read_bytes()
    assert a == (world["root"] / "again_b" / "adapter_model.safetensors").read_bytes()


def test_fedprox_term_keeps_the_client_closer_to_the_global_adapter(world):
    _train(world, "plain", ["language", "connector"], local_steps=8)
    _train(world, "prox", ["language", "connector"], local_steps=8, prox_mu=50.0)
    start = load_file(world["root"] / "global" / "adapter_model.safetensors")

    def distance(out: str) -> float:
        trained = load_file(world["root"] / out / "adapter_model.safetensors")
        return sum(float((trained[n] - start[n]).pow(2).sum()) for n in start)

    assert distance("prox") < 0.9 * distance("plain")


def test_the_output_head_copy_trains_in_language_rounds_and_is_uploaded(tmp_path):
    # The demo's setting (lora.modules_to_save: [lm_head]), with images instead of cached features.
    client_world(tmp_path, {"public": 32, "train": 16, "val": 8, "test": 4}, pretrain_steps=2,
                 lora={**LORA, "modules_to_save": ["lm_head"]})
    world = {"root": tmp_path, "dataset": tmp_path / "data", "features": None}
    head = "base_model.model.language_model.lm_head.weight"
    metrics = _train(world, "language", ["language"], use_features=False, index="client_000.json")
    assert _changed(world, "language")[head]
    state = load_file(tmp_path / "language" / "adapter_model.safetensors")
    assert metrics["bytes_uploaded"] >= state[head].numel() * state[head].element_size()
    _train(world, "connector", ["connector"], use_features=False, index="client_000.json")
    assert not _changed(world, "connector")[head]
