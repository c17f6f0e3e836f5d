"""A unified model (tiny Janus) through the real rules: VQA and text-to-image records, two clients
that each hold one modality, per-modality adapters, the GenEval-style evaluation and Table 2, and a
run killed in round 2 resumed to byte-identical files."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
from pathlib import Path

import pytest
import torch
from workflow_util import (
    LOCAL_PROFILE,
    SNAKEMAKE,
    embedded_bytes,
    report_results,
    snakemake,
    tiny_config,
    tiny_hf_model,
    wait_for,
    write_config,
)

from fedumm.artifacts import read_weights
from fedumm.models.groups import parameter_group

pytestmark = pytest.mark.slow

IMAGES_PER_PROMPT = 2
EXPERIMENTS = {
    # attribute over the task field with two clients and two tasks: one client holds every VQA
    # record, the other every text-to-image record (which one is the partition's seeded deal).
    "unified": {"partition": {"scheme": "attribute", "label": "task", "min_size": 5}},
    "unified_central": {"kind": "centralized"},
}
WEIGHTS = "results/{}/round_{:03d}/global/adapter_model.safetensors"


def unified_config() -> dict:
    config = tiny_config(EXPERIMENTS, rounds=2, clients=2, model="janus")
    config["datasets"]["shapes"].update(splits={"public": 120, "train": 60, "val": 8, "test": 24},
                                        classify_fraction=0.0, generate_fraction=0.4)
    model = tiny_hf_model("janus", steps=10)
    model["pretrain"]["tasks"] = ["vqa", "generate"]
    model["generation"] = {"image_tokenizer": "grid", "guidance_scale": 2.0}
    config["models"] = {"janus": model}
    config["defaults"]["partition"].update(label="task")
    config["defaults"]["eval"].update(every=2, initial=False, images_per_prompt=IMAGES_PER_PROMPT)
    return config


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    workdir = tmp_path_factory.mktemp("unified")
    write_config(workdir, unified_config())
    snakemake(workdir, "--cores", "2")
    return workdir


def _modality_clients(run: Path) -> tuple[str, str]:
    """(the client with understanding records, the client with text-to-image records) of round 1."""
    metrics = {k: json.loads((run / f"results/unified/round_001/clients/{k}/metrics.json").read_text()) for k in "01"}
    understanding = [k for k, m in metrics.items() if m["num_samples_by_modality"]["understanding"] > 0]
    generation = [k for k, m in metrics.items() if m["num_samples_by_modality"]["generation"] > 0]
    assert len(understanding) == len(generation) == 1 and understanding != generation, metrics
    return understanding[0], generation[0]


def test_each_client_trains_and_uploads_the_adapter_of_its_own_modality(run: Path) -> None:
    understanding, generation = _modality_clients(run)
    for client, groups in ((understanding, ["connector", "language"]), (generation, ["generation"])):
        metrics = json.loads((run / f"results/unified/round_001/clients/{client}/metrics.json").read_text())
        assert metrics["trained_groups"] == groups
        assert sorted(metrics["bytes_uploaded_by_group"]) == sorted(groups)
    aggregate = json.loads((run / "results/unified/round_001/aggregate.json").read_text())
    assert aggregate["modalities"]["understanding"]["clients"] == [int(understanding)]
    assert aggregate["modalities"]["generation"]["clients"] == [int(generation)]
    assert aggregate["groups"]["generation"]["tensors"] > 0


def test_each_modality_of_the_global_adapter_comes_from_the_clients_holding_it(run: Path) -> None:
    """A client without text-to-image records contributes nothing to the generation group (and the
    other way round): with one holder per modality, each group of the global adapter is its copy."""
    understanding, generation = _modality_clients(run)
    start = read_weights(run / WEIGHTS.format("unified", 0))
    merged = read_weights(run / WEIGHTS.format("unified", 1))
    uploads = {k: read_weights(run / f"results/unified/round_001/clients/{k}/adapter_model.safetensors")
               for k in (understanding, generation)}
    changed = {"understanding": 0, "generation": 0}
    for name, tensor in merged.items():
        modality = "generation" if parameter_group(name) == "generation" else "understanding"
        holder = generation if modality == "generation" else understanding
        # FedAvg adds the weighted mean delta to the start: one holder's copy up to rounding
        torch.testing.assert_close(tensor, uploads[holder][name], rtol=1e-6, atol=1e-7, msg=name)
        changed[modality] += int(not torch.equal(tensor, start[name]))
    assert changed["understanding"] > 0 and changed["generation"] > 0


def test_eval_json_has_vqa_and_geneval_blocks_and_images_in_genevals_layout(run: Path) -> None:
    evaluation = json.loads((run / "results/unified/round_002/eval.json").read_text())
    assert evaluation["vqa"]["n"] > 0 and evaluation["score_metric"] == "vqa.accuracy"
    geneval = evaluation["geneval"]
    prompts = sorted((run / "results/unified/round_002/geneval/global").iterdir())
    assert geneval["n"] == IMAGES_PER_PROMPT * len(prompts) > 0
    assert geneval["images_per_prompt"] == IMAGES_PER_PROMPT and 0 <= geneval["overall"] <= 1
    assert 0 <= geneval["empty_prompt"]["overall"] <= 1
    # The client holding the text-to-image records holds all of the split's: its personalized score is the whole's.
    _, generation = _modality_clients(run)
    assert list(geneval["personalized"]["clients"]) == [f"client_{generation}"]
    assert geneval["personalized"]["mean"]["overall"] == geneval["overall"]
    first = prompts[0]
    metadata = json.loads((first / "metadata.jsonl").read_text())
    assert metadata["tag"] in geneval["tasks"] and metadata["prompt"].startswith("a photo of")
    assert sorted(p.name for p in (first / "samples").iterdir()) == ["00000.png", "00001.png"]
    summary = (run / "results/summary.md").read_text()
    assert "GenEval-shapes" in summary and "Empty prompt" in summary and f"{IMAGES_PER_PROMPT} images per prompt" in summary


def test_table2_and_the_sample_grid_are_in_the_report(run: Path) -> None:
    table = (run / "results/tables/table2.md").read_text()
    assert "| Centralized (unified_central) |" in table and "| Federated, 2 clients, attribute |" in table
    assert "vs. centralized" in table
    csv_rows = (run / "results/tables/table2.csv").read_text().splitlines()
    assert csv_rows[0].startswith("Configuration,Single obj.,Two obj.,Counting,Colors,Position,Color attr.,Overall")
    snakemake(run, "--report", "report.html")
    results = report_results((run / "report.html").read_text(encoding="utf-8"))
    for path in ("results/tables/table2.md", "results/unified/round_002/samples.png"):
        assert embedded_bytes(results[path]) == (run / path).read_bytes(), path
    assert (run / "results/unified/round_002/samples.png").read_bytes()[:4] == b"\x89PNG"


def test_a_run_killed_in_a_round_with_generation_resumes_byte_identical(run: Path, tmp_path: Path) -> None:
    config = unified_config()
    config["experiments"] = {"unified": EXPERIMENTS["unified"]}  # an experiment's files do not depend on the others
    write_config(tmp_path, config)
    for shared in ("data", "models"):
        shutil.copytree(run / "results" / shared, tmp_path / "results" / shared)
    process = subprocess.Popen([*SNAKEMAKE, "--directory", str(tmp_path), *LOCAL_PROFILE], cwd=tmp_path,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    _, generation = _modality_clients(run)
    wait_for(tmp_path / f"logs/client_train/unified/round_002_client_{generation}.log", process)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=60)
    assert not (tmp_path / WEIGHTS.format("unified", 2)).exists()
    snakemake(tmp_path, "--unlock")
    snakemake(tmp_path, *LOCAL_PROFILE)  # the same command again, as README says (rerun-incomplete)
    for r in range(3):
        assert (tmp_path / WEIGHTS.format("unified", r)).read_bytes() == (run / WEIGHTS.format("unified", r)).read_bytes(), r
    for name in ("geneval.json", "eval.json", "samples.png"):
        path = f"results/unified/round_002/{name}"
        assert (tmp_path / path).read_bytes() == (run / path).read_bytes(), path
