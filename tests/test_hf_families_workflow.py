"""Every architecture of the hf family, tiny and offline, through the real rules: 2 clients, 1 round.

The round's global adapter of each must load with plain transformers + peft in a process that
cannot import fedumm, and give fedumm's logits, as must the model `fedumm export` merges it into;
an adapter with vision LoRA, language LoRA and a trained projector must upload and aggregate
three parameter groups.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save
from workflow_util import (
    TINY_HF_CONFIGS,
    snakemake,
    tiny_config,
    tiny_hf_model,
    write_config,
)

from fedumm.data.shards import read_records, split_shards
from fedumm.models import families
from fedumm.models.adapters import load_adapter
from fedumm.models.groups import parameter_group

pytestmark = pytest.mark.slow

VISION_LORA = ["q_proj", "v_proj"]


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    workdir = tmp_path_factory.mktemp("hf_families")
    experiments = {f"hf_{name}": {"model": name} for name in TINY_HF_CONFIGS}
    experiments["hf_llava"]["lora"] = {"vision_target_modules": VISION_LORA}
    experiments["hf_emu3"]["tuning"] = {"mode": "lora"}  # encoder-free: no projector to train
    config = tiny_config(experiments, rounds=1, clients=2)
    config["datasets"]["shapes"]["splits"] = {"public": 40, "train": 60, "val": 8, "test": 16}
    config["models"] = {name: tiny_hf_model(name) for name in TINY_HF_CONFIGS}
    config["defaults"]["eval"].update(every=1, initial=False)
    write_config(workdir, config)
    snakemake(workdir, "--cores", "2")
    return workdir


def test_every_family_evaluates(run: Path) -> None:
    for name in TINY_HF_CONFIGS:
        evaluation = json.loads((run / f"results/hf_{name}/round_001/eval.json").read_text())
        assert evaluation["score_metric"] == "vqa.accuracy" and 0.0 <= evaluation["score"] <= 1.0, name
        assert evaluation["n"] == 16


def test_adapters_and_exported_models_load_without_fedumm_and_give_the_same_logits(run: Path, tmp_path: Path) -> None:
    from fedumm.cli import main as fedumm_main

    records = read_records(split_shards(run / "results/data/shapes", "test"))[:2]
    cases = {}
    for name in TINY_HF_CONFIGS:
        base_dir, adapter_dir = f"results/models/{name}/base", f"results/hf_{name}/round_001/global"
        export_dir = tmp_path / f"{name}_merged"
        assert fedumm_main(["export", "--base", str(run / base_dir), "--adapter", str(run / adapter_dir),
                            "--out", str(export_dir)]) == 0
        adapter_config = json.loads((run / adapter_dir / "adapter_config.json").read_text())
        assert adapter_config["base_model_name_or_path"].endswith(base_dir), name
        base = families.load_base(run / base_dir)
        model = load_adapter(base.model, run / adapter_dir, is_trainable=False).eval()
        inputs = base.family.inputs(base, split_shards(run / "results/data/shapes", "test"), {r["id"] for r in records})
        batch = inputs.collate(inputs.examples(records))
        batch.pop("labels")
        with torch.no_grad():
            logits = model(**batch).logits
        torch.save({"batch": batch, "logits": logits}, tmp_path / f"{name}.pt")
        cases[name] = [base_dir, adapter_dir, str(export_dir), str(tmp_path / f"{name}.pt")]
    program = f"""
import json, sys
sys.modules["fedumm"] = None  # any import of fedumm fails
import torch
from peft import PeftModel
from transformers import AutoModelForImageTextToText
out = {{}}
for name, (base_dir, adapter_dir, export_dir, case) in {cases!r}.items():
    model = PeftModel.from_pretrained(AutoModelForImageTextToText.from_pretrained(base_dir), adapter_dir).eval()
    merged = AutoModelForImageTextToText.from_pretrained(export_dir).eval()
    saved = torch.load(case)
    with torch.no_grad():
        logits, merged_logits = model(**saved["batch"]).logits, merged(**saved["batch"]).logits
    out[name] = max((logits - saved["logits"]).abs().max().item(), (merged_logits - saved["logits"]).abs().max().item())
print(json.dumps(out))
"""
    result = subprocess.run([sys.executable, "-c", program], cwd=run, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    differences = json.loads(result.stdout.strip().splitlines()[-1])
    assert set(differences) == set(TINY_HF_CONFIGS)
    assert all(difference <= 1e-5 for difference in differences.values()), differences


def test_vision_language_and_projector_are_three_groups_in_upload_and_aggregate(run: Path) -> None:
    round_dir = run / "results/hf_llava/round_001"
    start = load_file(run / "results/hf_llava/round_000/global/adapter_model.safetensors")
    expected_total = 0
    for client in (0, 1):
        client_dir = round_dir / "clients" / str(client)
        metrics = json.loads((client_dir / "metrics.json").read_text())
        weights = load_file(client_dir / "adapter_model.safetensors")
        by_group = {}
        for key in sorted(weights):  # LoRA A and B and the projector copy all train in a joint round
            by_group.setdefault(parameter_group(key), {})[key] = weights[key]
        assert set(by_group) == {"vision", "connector", "language"}
        assert any(not torch.equal(weights[k], start[k]) for k in by_group["vision"])
        assert metrics["bytes_uploaded_by_group"] == {group: len(save(tensors)) for group, tensors in by_group.items()}
        assert metrics["bytes_uploaded"] == len(save(dict(sorted(weights.items()))))
        expected_total += sum(metrics["bytes_uploaded_by_group"].values())
    groups = json.loads((round_dir / "aggregate.json").read_text())["groups"]
    assert set(groups) == {"vision", "connector", "language"}
    assert sum(group["bytes_uploaded"] for group in groups.values()) == expected_total
    assert sum(group["tensors"] for group in groups.values()) == len(start)


def test_the_papers_tables_know_the_size_of_each_model(run: Path) -> None:
    table4 = (run / "results/tables/table4.csv").read_text()
    for name in TINY_HF_CONFIGS:
        assert f"hf_{name}" in table4
