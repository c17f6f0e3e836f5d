"""Byzantine clients in a real workflow run: 8 clients of which 2 flip the sign of their update
(×10), aggregated by FedAvg and by two robust rules next to honest FedAvg; then the recovery
mechanism, `exclude`, schedules the poisoned round and every round after it again, and the
recomputed round equals that of a run that excluded the attackers from the start.

One run serves all of these tests: every job pays about 9 s of imports (torch, transformers,
peft), so the experiments run one round, and `attacked` two to show what a recovery reruns.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
from safetensors.torch import load_file
from workflow_util import job_counts, snakemake, tiny_config, write_config

pytestmark = pytest.mark.slow

ATTACK = {"kind": "sign_flip", "clients": [0, 1], "scale": 10.0}
EXCLUDE_ATTACKERS = [{"round": 1, "clients": [0, 1]}]
EXPERIMENTS = {
    "honest": {"rounds": 1},
    "median": {"rounds": 1, "attack": ATTACK, "strategy": {"name": "fedavg", "robust": {"name": "median"}}},
    "multi_krum": {"rounds": 1, "attack": ATTACK,
                   "strategy": {"name": "fedavg", "robust": {"name": "multi_krum", "f": 2}}},
    "attacked": {"rounds": 2, "attack": ATTACK},
    "excluded": {"rounds": 1, "attack": ATTACK, "exclude": EXCLUDE_ATTACKERS},
}


@pytest.fixture(scope="module")
def attack_run(tmp_path_factory) -> tuple[Path, dict]:
    workdir = tmp_path_factory.mktemp("attack")
    config = tiny_config(EXPERIMENTS, clients=8)
    config["defaults"]["partition"] = {"scheme": "iid", "label": "answer", "min_size": 5}
    config["defaults"]["eval"]["initial"] = False
    write_config(workdir, config)
    snakemake(workdir, "--cores", "2")
    return workdir, config


def _aggregate(workdir: Path, exp: str, r: int) -> dict:
    return json.loads((workdir / f"results/{exp}/round_{r:03d}/aggregate.json").read_text())


def _global(workdir: Path, exp: str, r: int) -> Path:
    return workdir / f"results/{exp}/round_{r:03d}/global/adapter_model.safetensors"


def _step(workdir: Path, exp: str) -> dict:
    """Round 1's global update: the round-1 global adapter minus round 0's."""
    before, after = load_file(_global(workdir, exp, 0)), load_file(_global(workdir, exp, 1))
    return {name: after[name].double() - before[name].double() for name in before}


def _cosine(x: dict, y: dict) -> float:
    dot = sum(float((x[n] * y[n]).sum()) for n in x)
    return dot / math.sqrt(sum(float(x[n].square().sum()) for n in x) * sum(float(y[n].square().sum()) for n in y))


def test_attackers_change_only_their_own_uploads(attack_run):
    workdir, _ = attack_run
    for k in range(8):
        honest = workdir / f"results/honest/round_001/clients/{k}"
        attacked = workdir / f"results/attacked/round_001/clients/{k}"
        same = (honest / "adapter_model.safetensors").read_bytes() == (attacked / "adapter_model.safetensors").read_bytes()
        assert same == (k not in ATTACK["clients"]), k
        metrics = json.loads((attacked / "metrics.json").read_text())
        assert metrics.get("attack") == ("sign_flip" if k in ATTACK["clients"] else None)


def test_aggregate_json_shows_the_attack_and_what_the_robust_rules_kept(attack_run):
    workdir, _ = attack_run
    attacked = _aggregate(workdir, "attacked", 1)
    norms = {int(k): entry["update_norm"] for k, entry in attacked["uploads"].items()}
    honest_median = sorted(norms[k] for k in range(2, 8))[3]
    assert all(norms[k] > 5 * honest_median for k in ATTACK["clients"])
    assert all(attacked["uploads"][str(k)]["cosine_to_mean"] > 0.8 for k in ATTACK["clients"])
    assert all(attacked["uploads"][str(k)]["cosine_to_mean"] < 0 for k in range(2, 8))
    # Flagged (not refused, by default) where a ×10 update exceeds 10× the round's upper median norm.
    assert set(attacked["outliers"]) <= set(ATTACK["clients"]) and attacked["robust"] is None

    krum = _aggregate(workdir, "multi_krum", 1)
    assert sorted(krum["robust"]["selected"]) == [2, 3, 4, 5, 6, 7]
    assert _aggregate(workdir, "median", 1)["robust"] == {"name": "median"}


def test_robust_rules_keep_the_honest_direction_and_fedavg_loses_it(attack_run):
    workdir, _ = attack_run
    honest = _step(workdir, "honest")
    assert _cosine(_step(workdir, "attacked"), honest) < -0.5
    assert _cosine(_step(workdir, "multi_krum"), honest) > 0.9
    assert _cosine(_step(workdir, "median"), honest) > 0.5


def test_the_summary_shows_each_run_next_to_honest_fedavg(attack_run):
    workdir, _ = attack_run
    with (workdir / "results/summary.csv").open(newline="") as handle:
        rows = {row["name"]: row for row in csv.DictReader(handle)}
    assert set(rows) == set(EXPERIMENTS)
    assert rows["honest"]["attack"] == "" and rows["median"]["robust"] == "median"
    assert rows["attacked"]["attack"] == "sign_flip ×10, 2 of 8 clients from round 1"
    table = (workdir / "results/summary.md").read_text()
    assert "| multi_krum | federated | fedavg + multi_krum (f=2) | sign_flip ×10, 2 of 8 clients from round 1 | 8 |" in table
    assert "| honest | federated | fedavg | none | 8 |" in table


def test_exclude_recomputes_the_poisoned_round_and_the_rounds_after_as_if_excluded_from_the_start(attack_run):
    """Recovery: excluding the attackers from round 1 of `attacked` schedules its round-1 aggregate
    and all of round 2 again (none of round 1's clients), and the recomputed round-1 global adapter
    is byte-identical to that of `excluded`. (Round 2 itself is not run again here: its jobs are
    the ones every round runs.)"""
    workdir, config = attack_run
    poisoned = _global(workdir, "attacked", 1).read_bytes()
    config["experiments"]["attacked"]["exclude"] = EXCLUDE_ATTACKERS
    write_config(workdir, config)
    counts = job_counts(snakemake(workdir, "-n", "--quiet", "rules").stdout)
    assert (counts["aggregate"], counts["client_train"], counts["evaluate"]) == (2, 8, 1)
    round_1 = "results/attacked/round_001/aggregate.json"
    assert job_counts(snakemake(workdir, round_1, "-n", "--quiet", "rules").stdout) == {"aggregate": 1}
    snakemake(workdir, round_1, "--cores", "1")
    assert _global(workdir, "attacked", 1).read_bytes() == _global(workdir, "excluded", 1).read_bytes() != poisoned
    recomputed = _aggregate(workdir, "attacked", 1)
    assert recomputed["excluded"] == [0, 1] and recomputed["clients"] == [2, 3, 4, 5, 6, 7]
