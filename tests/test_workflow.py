"""The real Snakemake workflow on tiny configs: DAG shape, config errors, a run, resume, more rounds."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
from pathlib import Path

import pytest
from workflow_util import (
    LOCAL_PROFILE,
    SNAKEMAKE,
    job_counts,
    snakemake,
    tiny_config,
    wait_for,
    write_config,
)

pytestmark = pytest.mark.slow

GLOBAL = "results/{}/round_{:03d}/global/adapter_model.safetensors"
# Stateful strategies must resume exactly too: FedAdam's moments, Fed-CMP's basis, SCAFFOLD's
# control variates (server state and per-client state files).
RESUMED_EXPERIMENTS = {
    "fedadam": {"strategy": {"name": "fedadam", "eta": 0.01}},
    "fedcmp": {"strategy": {"name": "fedcmp"}},
    "scaffold": {"strategy": {"name": "scaffold"}},
}


def test_dry_run_of_100_rounds_by_16_clients_builds_its_dag(tmp_path):
    write_config(tmp_path, tiny_config(rounds=100, clients=16, clients_per_round=0.25))
    counts = job_counts(snakemake(tmp_path, "-n").stdout)
    assert counts["client_train"] == 100 * 4
    assert counts["aggregate"] == 100
    assert counts["evaluate"] == 26  # round 0 and every 4th round
    assert counts["init_adapter"] == counts["partition"] == counts["base_model"] == 1


@pytest.mark.parametrize(
    ("experiments", "message"),
    [
        ({"fedavg": {"alhpa": 0.5}}, "config key 'experiments.fedavg': unknown key 'alhpa'"),
        ({"fedavg": {"strategy": {"name": "fedmagic"}}}, "config key 'experiments.fedavg.strategy': unknown strategy 'fedmagic'"),
        ({"fedavg": {"partition": {"alpha": 0}}}, "config key 'experiments.fedavg.partition.alpha'"),
        ({"fedavg": {"clients": 500}}, "config key 'experiments.fedavg.clients': 500 clients but dataset 'shapes' has only 120"),
    ],
)
def test_bad_config_fails_before_any_job_with_the_key_named(tmp_path, experiments, message):
    write_config(tmp_path, tiny_config(experiments))
    result = snakemake(tmp_path, "--cores", "1", check=False)
    assert result.returncode != 0
    assert message in result.stdout + result.stderr
    assert not (tmp_path / "results").exists()


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    """An uninterrupted run of 4 rounds over 2 clients with each of RESUMED_EXPERIMENTS."""
    workdir = tmp_path_factory.mktemp("uninterrupted")
    write_config(workdir, tiny_config(RESUMED_EXPERIMENTS, rounds=4))
    snakemake(workdir, "--cores", "2")
    return workdir


def test_a_run_writes_the_artifact_contract(finished_run):
    results = finished_run / "results"
    lineage = [json.loads(line) for line in (results / "fedadam" / "lineage.jsonl").read_text().splitlines()]
    assert [record["round"] for record in lineage] == [0, 1, 2, 3, 4]
    metrics = json.loads((results / "fedadam/round_001/clients/0/metrics.json").read_text())
    assert metrics["num_samples"] > 0 and metrics["steps"] == 3 and metrics["bytes_uploaded"] > 0
    summary = (results / "summary.md").read_text()
    assert re.search(r"\| fedadam \| federated \| fedadam \(eta=0.01\) \| 2 \| 0.5 \| 4 \|", summary)
    assert (results / "fedadam/partition/heatmap.png").read_bytes()[:4] == b"\x89PNG"
    for rule in ("client_train", "aggregate", "evaluate"):
        assert list((finished_run / "logs" / rule).rglob("*.log")), rule
        assert list((finished_run / "benchmarks" / rule).rglob("*.tsv")), rule


def test_the_global_adapter_loads_with_plain_peft(finished_run):
    from peft import PeftModel

    from fedumm.models import vlm

    base, _, _ = vlm.load_base(finished_run / "results/models/tiny/base")
    adapter_dir = finished_run / "results/fedadam/round_004/global"
    loaded = PeftModel.from_pretrained(base, str(adapter_dir))
    lora = [name for name, _ in loaded.named_parameters() if "lora_" in name]
    connector = [name for name, _ in loaded.named_parameters() if "connector.modules_to_save" in name]
    assert lora and connector


def test_fedumm_predict_answers_as_the_evaluation_does_and_refuses_unknown_words(finished_run, tmp_path):
    """`fedumm predict` on test images (saved as files) gives the answers that the evaluation's own
    code gives on the dataset shards, with the base model (whose caption pretraining makes it say
    something) and with round 4's adapter; a word outside the word-level vocabulary is named."""
    from fedumm.data.shards import read_samples, split_shards
    from fedumm.evaluation.evaluate import predict_answers
    from fedumm.models import families
    from fedumm.models.adapters import load_adapter

    base_dir, adapter_dir = finished_run / "results/models/tiny/base", finished_run / "results/fedadam/round_004/global"
    shards = split_shards(finished_run / "results/data/shapes", "test")
    samples = [s for s in read_samples(shards) if s["task"] == "vqa"][:6]
    for sample in samples:
        sample.pop("image").save(tmp_path / f"{sample['id']}.png")
    fedumm_command = [str(Path(SNAKEMAKE[0]).parent / "fedumm"), "predict", "--base", str(base_dir), "--json",
                      "--batch-size", "4"]
    pairs = [arg for sample in samples for arg in ("--image", str(tmp_path / f"{sample['id']}.png"),
                                                   "--question", sample["question"])]
    for adapter in (None, adapter_dir):
        command = [*fedumm_command, *(["--adapter", str(adapter)] if adapter else []), *pairs]
        result = subprocess.run(command, capture_output=True, text=True, check=True)
        answers = [json.loads(line)["answer"] for line in result.stdout.splitlines()]

        base = families.load_base(base_dir)
        model_inputs = base.family.inputs(base, shards, {sample["id"] for sample in samples})
        model = load_adapter(base.model, adapter, is_trainable=False) if adapter else base.model
        expected = predict_answers(model, model_inputs, samples, 64, {"vqa": 8}, "cpu")
        assert answers == [expected[sample["id"]] for sample in samples], adapter
        if adapter is None:
            assert all(answers), answers

    refused = subprocess.run([*fedumm_command, "--image", str(tmp_path / f"{samples[0]['id']}.png"),
                              "--question", "is the zebra Purple ?"], capture_output=True, text=True)
    assert refused.returncode == 2 and "vocabulary lacks 'zebra'" in refused.stderr


def test_fedumm_export_merges_the_adapter_into_a_base_that_gives_the_same_logits(finished_run, tmp_path):
    import torch

    from fedumm.models import vlm
    from fedumm.models.adapters import load_adapter

    base_dir, adapter_dir = finished_run / "results/models/tiny/base", finished_run / "results/fedadam/round_004/global"
    out = tmp_path / "merged"
    subprocess.run([str(Path(SNAKEMAKE[0]).parent / "fedumm"), "export", "--base", str(base_dir),
                    "--adapter", str(adapter_dir), "--out", str(out)], check=True, capture_output=True)
    merged, tokenizer, _ = vlm.load_base(out)
    adapted = load_adapter(vlm.load_base(base_dir)[0], adapter_dir, is_trainable=False)
    batch = {"input_ids": torch.tensor([[5, 6, 7, 8]]), "attention_mask": torch.ones(1, 4, dtype=torch.long),
             "pixel_values": torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))}
    with torch.no_grad():
        torch.testing.assert_close(merged(**batch).logits, adapted(**batch).logits, atol=1e-5, rtol=1e-4)
        assert not torch.allclose(vlm.load_base(base_dir)[0](**batch).logits, merged(**batch).logits)


def test_a_warm_start_begins_from_the_adapter_it_names_and_refuses_one_that_does_not_fit(finished_run):
    """init: {experiment, round} makes round 0 that round's global adapter, byte for byte; an adapter
    of another LoRA rank is refused by the config, one of other LoRA targets by the init job."""
    source = finished_run / GLOBAL.format("fedadam", 4)
    adapter_dir = str(source.parent)
    experiments = {
        "fedadam": RESUMED_EXPERIMENTS["fedadam"],
        "warm": {"init": {"experiment": "fedadam", "round": 4}, "rounds": 1},
        "warm_dir": {"init": {"from": adapter_dir}, "rounds": 1},
    }
    (finished_run / "warm.yaml").write_text(json.dumps({"experiments": experiments}))
    targets = [GLOBAL.format(name, 0) for name in ("warm", "warm_dir")]
    snakemake(finished_run, *targets, "--cores", "2", "--configfile", "warm.yaml")  # --configfile takes several
    for target in targets:
        assert (finished_run / target).read_bytes() == source.read_bytes()

    other_rank = {"experiments": {"bad": {"init": {"from": adapter_dir}, "lora": {"r": 4}}}}
    (finished_run / "bad.yaml").write_text(json.dumps(other_rank))
    result = snakemake(finished_run, "-n", "--configfile", "bad.yaml", check=False)
    assert result.returncode != 0
    assert (f"config key 'experiments.bad.init.from': {adapter_dir} has LoRA r=8, the experiment lora.r=4"
            in result.stdout + result.stderr)

    other_targets = {"experiments": {"bad": {"init": {"from": adapter_dir}, "lora": {"target_modules": ["q_proj"]}}}}
    (finished_run / "bad.yaml").write_text(json.dumps(other_targets))
    result = snakemake(finished_run, GLOBAL.format("bad", 0), "--cores", "1", "--configfile", "bad.yaml", check=False)
    assert result.returncode != 0
    log = (finished_run / "logs/init_adapter/bad.log").read_text()
    assert f"warm start {adapter_dir}: its adapter does not fit this experiment's" in log
    assert not (finished_run / GLOBAL.format("bad", 0)).exists()


def test_raising_rounds_schedules_only_the_new_rounds(finished_run, tmp_path):
    write_config(finished_run, tiny_config(RESUMED_EXPERIMENTS, rounds=6))
    try:
        dry = snakemake(finished_run, "-n").stdout
    finally:
        write_config(finished_run, tiny_config(RESUMED_EXPERIMENTS, rounds=4))
    trained = set(re.findall(r"output: results/\w+/round_(\d{3})/clients/", dry))
    assert trained == {"005", "006"}
    counts = job_counts(dry)
    assert counts["client_train"] == len(RESUMED_EXPERIMENTS) * 2 * 2 and counts["aggregate"] == len(RESUMED_EXPERIMENTS) * 2
    assert "init_adapter" not in counts and "base_model" not in counts


def test_a_killed_run_resumes_to_byte_identical_adapters(finished_run, tmp_path):
    """A hard kill (crash, node failure) in round 2; SIGTERM (Ctrl-C, scancel) needs only the rerun."""
    write_config(tmp_path, tiny_config(RESUMED_EXPERIMENTS, rounds=4))
    # The dataset, base model and feature cache are finished long before round 2 and are not what
    # this test is about: start from the uninterrupted run's copies (mtimes kept) to save their jobs.
    for shared in ("data", "models", "features"):
        shutil.copytree(finished_run / "results" / shared, tmp_path / "results" / shared)
    command = [*SNAKEMAKE, "--directory", str(tmp_path), *LOCAL_PROFILE]
    process = subprocess.Popen(
        command, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    # Kill the whole run while a client of round 2 is training.
    wait_for(tmp_path / "logs/client_train/fedadam/round_002_client_0.log", process)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=60)
    assert not (tmp_path / GLOBAL.format("fedadam", 4)).exists()

    # A hard kill leaves Snakemake's lock behind; releasing it is the documented first step.
    snakemake(tmp_path, "--unlock")
    snakemake(tmp_path, *LOCAL_PROFILE)  # the same command again, as README says (rerun-incomplete)
    for exp in RESUMED_EXPERIMENTS:
        for r in range(5):
            resumed, uninterrupted = (run / GLOBAL.format(exp, r) for run in (tmp_path, finished_run))
            assert resumed.read_bytes() == uninterrupted.read_bytes(), (exp, r)
        lineage = f"results/{exp}/lineage.jsonl"
        assert (tmp_path / lineage).read_text() == (finished_run / lineage).read_text()
