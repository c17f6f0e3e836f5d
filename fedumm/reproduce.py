"""``make reproduce`` (``python -m fedumm.reproduce``): the papers' tables in miniature, and whether
the directions the papers state hold in this run.

It writes a config into its own working directory (``reproduce/`` by default), runs the workflow
there with the local profile, prints Tables 1 to 4 and then one line per direction: what the
paper states, the difference measured here as mean ± sample standard deviation over seeds, and
"held" or "not held". A direction counts as held when the measured difference has the paper's
sign; "within the spread" says when it is within two standard deviations of zero
(`fedumm.reports.replicates.within_spread`), i.e. when this run cannot tell it from seed noise.

Sizes: ``cpu`` (default) fits about an hour on 2 CPU cores: FedAvg over clients 2, 4, 8 × Dirichlet
α 0.1, 1.0, FedProx, SCAFFOLD and Fed-CMP at 4 clients and α 0.1, centralized training, each
over 2 seeds; FedAvg, FedProx and FedAdam with full fine-tuning and the centralized full
fine-tuning row (1 seed); the unified model and its centralized baseline (Table 2); 3 rounds,
each evaluated (577 jobs). ``gpu`` is the same grid with 5 seeds, 10 rounds and larger splits,
for a machine with a GPU.
"""

from __future__ import annotations

import argparse
import copy
import csv
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

from fedumm.config import deep_merge
from fedumm.reports import replicates
from fedumm.reports.replicates import Estimate

REPO = Path(__file__).resolve().parents[1]

SCALES: dict[str, dict] = {
    # 3 rounds: after 2, the 8-client FedAvg runs were still below the majority baseline.
    "cpu": {"seeds": [0, 1], "rounds": 3, "full_seeds": [0], "splits": None},
    "gpu": {"seeds": [0, 1, 2, 3, 4], "rounds": 10, "full_seeds": [0, 1, 2],
            "splits": {"public": 6000, "train": 8000, "val": 800, "test": 1600}},
}
CLIENTS = (2, 4, 8)
ALPHAS = (0.1, 1.0)
HETEROGENEOUS = {"clients": 4, "alpha": 0.1}
"""Where the papers compare strategies under strong heterogeneity (Fed-CMP Table 1, FedVLMBench)."""
STRATEGIES = {
    "fedprox": {"strategy": {"name": "fedavg"}, "train": {"prox_mu": 0.01}},
    "scaffold": {"strategy": {"name": "scaffold"}},
    "fedcmp": {"strategy": {"name": "fedcmp"}},
}
FULL = {
    "fedavg": {},
    "fedprox": {"train": {"prox_mu": 0.01}},
    "fedadam": {"strategy": {"name": "fedadam", "eta": 0.01}},
}


@dataclass(frozen=True)
class Run:
    """One experiment of the grid: its name and the coordinates the directions compare."""

    name: str
    method: str  # fedavg, fedprox, scaffold, fedcmp, fedadam, centralized
    clients: int | None
    alpha: float | None
    seed: int
    tuning: str  # lora or full


def _alpha(alpha: float) -> str:
    return f"{alpha:g}".replace(".", "p")


def grid(scale: str, demo: Mapping | None = None) -> tuple[dict[str, dict], list[Run]]:
    """The experiments of ``scale`` (config entries by name) and their coordinates. Each starts from
    ``demo``, the default config's overrides of its tiny-model FedAvg experiment (the demo's ``fedavg``)."""
    sizes = SCALES[scale]
    experiments: dict[str, dict] = {}
    runs: list[Run] = []

    def add(name: str, entry: dict, run: Run) -> None:
        experiments[name] = deep_merge(demo or {}, {"rounds": sizes["rounds"], **entry})
        runs.append(run)

    for seed in sizes["seeds"]:
        add(f"centralized_s{seed}", {"kind": "centralized", "seed": seed},
            Run(f"centralized_s{seed}", "centralized", None, None, seed, "lora"))
        for clients in CLIENTS:
            for alpha in ALPHAS:
                name = f"fedavg_c{clients}_a{_alpha(alpha)}_s{seed}"
                add(name, {"clients": clients, "partition": {"alpha": alpha}, "seed": seed},
                    Run(name, "fedavg", clients, alpha, seed, "lora"))
        for method, entry in STRATEGIES.items():
            name = f"{method}_c{HETEROGENEOUS['clients']}_a{_alpha(HETEROGENEOUS['alpha'])}_s{seed}"
            add(name, {**copy.deepcopy(entry), "clients": HETEROGENEOUS["clients"],
                       "partition": {"alpha": HETEROGENEOUS["alpha"]}, "seed": seed},
                Run(name, method, HETEROGENEOUS["clients"], HETEROGENEOUS["alpha"], seed, "lora"))
    for seed in sizes["full_seeds"]:
        add(f"full_centralized_s{seed}", {"kind": "centralized", "tuning": {"mode": "full"}, "seed": seed},
            Run(f"full_centralized_s{seed}", "centralized", None, None, seed, "full"))
        for method, entry in FULL.items():
            name = f"full_{method}_c4_a0p5_s{seed}"
            add(name, {**copy.deepcopy(entry), "clients": 4, "partition": {"alpha": 0.5}, "tuning": {"mode": "full"},
                       "seed": seed},
                Run(name, method, 4, 0.5, seed, "full"))
        if seed == sizes["full_seeds"][0]:
            # the LoRA twin of full FedAvg: same clients, α and seed
            name = f"lora_fedavg_c4_a0p5_s{seed}"
            add(name, {"clients": 4, "partition": {"alpha": 0.5}, "seed": seed},
                Run(name, "fedavg", 4, 0.5, seed, "lora"))
    return experiments, runs


def write_config(workdir: Path, scale: str) -> list[Run]:
    """The default config with the grid's experiments (and the default unified pair for Table 2),
    written to ``workdir/config/config.yaml``, where the workflow reads it."""
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text(encoding="utf-8"))
    experiments, runs = grid(scale, demo=config["experiments"]["fedavg"])
    unified = {name: config["experiments"][name] for name in ("unified", "unified_centralized")}
    config["experiments"] = {**experiments, **unified}
    config["defaults"]["eval"]["every"] = 1  # every round, so that validation can select any of them
    if SCALES[scale]["splits"]:
        config["datasets"]["shapes"]["splits"] = SCALES[scale]["splits"]
    path = workdir / "config" / "config.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return runs


# ----------------------------------------------------------------------------- directions


@dataclass(frozen=True)
class Direction:
    """A statement of a paper and what this run measured for it."""

    statement: str
    source: str
    difference: Estimate | None  # in percentage points; the paper's direction is difference > 0
    detail: str

    @property
    def verdict(self) -> str:
        if self.difference is None:
            return "not measured"
        held = "held" if self.difference.mean > 0 else "not held"
        return held + (" (within the spread)" if replicates.within_spread(self.difference) else "")


def _scores(runs: Sequence[Run], scores: Mapping[str, float], **where) -> Estimate | None:
    """The estimate over seeds of the runs matching ``where`` (field=value), in percent."""
    values = [100 * scores[run.name] for run in runs
              if run.name in scores and all(getattr(run, key) == value for key, value in where.items())]
    return replicates.estimate(values)


def _format(estimate: Estimate | None, signed: bool = True) -> str:
    """"+1.0 ± 0.2 (n=2)" for a difference, "61.1 ± 0.1 (n=2)" for a score (signed=False)."""
    if estimate is None:
        return "n/a"
    spread = "" if estimate.sd is None else f" ± {estimate.sd:.1f}"
    return f"{estimate.mean:{'+' if signed else ''}.1f}{spread} (n={estimate.n})"


def directions(runs: Sequence[Run], scores: Mapping[str, float]) -> list[Direction]:
    """The papers' directions, each as a difference that is positive when the paper's statement
    holds: FedUMM Table 1 (federated below centralized, lower with more clients, lower with
    smaller α), FedUMM Tables 3/4 (LoRA close to full fine-tuning: |difference| within 2 points),
    Fed-CMP Table 1 (Fed-CMP ≥ FedAvg under strong heterogeneity) and FedVLMBench (FedProx or
    SCAFFOLD ≥ FedAvg at α = 0.1)."""
    central = _scores(runs, scores, method="centralized", tuning="lora")
    found = []
    below = [replicates.difference(central, _scores(runs, scores, method="fedavg", clients=c, alpha=a, tuning="lora"))
             for c in CLIENTS for a in ALPHAS]
    found.append(Direction(
        "federated below centralized (every clients × α cell)", "FedUMM Table 1",
        min(below, key=lambda d: d.mean if d else float("inf"), default=None),
        "smallest margin centralized − FedAvg over the cells: " + ", ".join(
            f"c{c}/α{a:g} {_format(d)}" for (c, a), d in zip([(c, a) for c in CLIENTS for a in ALPHAS], below))))
    for alpha in ALPHAS:
        fewer = _scores(runs, scores, method="fedavg", clients=CLIENTS[0], alpha=alpha, tuning="lora")
        more = _scores(runs, scores, method="fedavg", clients=CLIENTS[-1], alpha=alpha, tuning="lora")
        found.append(Direction(f"lower with more clients (α={alpha:g}: {CLIENTS[0]} vs {CLIENTS[-1]} clients)",
                               "FedUMM Table 1", replicates.difference(fewer, more),
                               f"{CLIENTS[0]} clients {_format(fewer, False)}, {CLIENTS[-1]} clients {_format(more, False)} (% accuracy)"))
    for clients in CLIENTS:
        iid = _scores(runs, scores, method="fedavg", clients=clients, alpha=ALPHAS[-1], tuning="lora")
        skewed = _scores(runs, scores, method="fedavg", clients=clients, alpha=ALPHAS[0], tuning="lora")
        found.append(Direction(f"lower with smaller α ({clients} clients: α={ALPHAS[-1]:g} vs α={ALPHAS[0]:g})",
                               "FedUMM Table 1", replicates.difference(iid, skewed),
                               f"α={ALPHAS[-1]:g} {_format(iid, False)}, α={ALPHAS[0]:g} {_format(skewed, False)} (% accuracy)"))
    lora = _scores(runs, scores, method="fedavg", clients=4, alpha=0.5, tuning="lora")
    full = _scores(runs, scores, method="fedavg", clients=4, alpha=0.5, tuning="full")
    gap = replicates.difference(lora, full)
    closeness = None if gap is None else Estimate(2.0 - abs(gap.mean), gap.sd, gap.n)
    found.append(Direction("LoRA within 2 points of full fine-tuning (FedAvg, 4 clients, α=0.5)", "FedUMM Tables 3, 4",
                           closeness, f"LoRA − full = {_format(gap)}; the difference column is 2 minus its size"))
    fedavg = _scores(runs, scores, method="fedavg", tuning="lora", **HETEROGENEOUS)
    setting = f"{HETEROGENEOUS['clients']} clients, α={HETEROGENEOUS['alpha']:g}"
    fedcmp = _scores(runs, scores, method="fedcmp", tuning="lora", **HETEROGENEOUS)
    found.append(Direction(f"Fed-CMP ≥ FedAvg under strong heterogeneity ({setting})", "Fed-CMP Table 1",
                           replicates.difference(fedcmp, fedavg), f"Fed-CMP − FedAvg = {_format(replicates.difference(fedcmp, fedavg))}"))
    corrections = {method: replicates.difference(_scores(runs, scores, method=method, tuning="lora", **HETEROGENEOUS), fedavg)
                   for method in ("fedprox", "scaffold")}
    best = max((d for d in corrections.values() if d is not None), key=lambda d: d.mean, default=None)
    found.append(Direction(f"FedProx or SCAFFOLD ≥ FedAvg ({setting})", "FedVLMBench",
                           best, ", ".join(f"{method} − FedAvg = {_format(d)}" for method, d in corrections.items())))
    return found


def directions_table(found: Sequence[Direction]) -> str:
    lines = ["| Direction | Paper | Difference (points, mean ± sd over seeds) | Verdict |", "|---|---|---|---|"]
    lines += [f"| {d.statement} | {d.source} | {_format(d.difference)} | {d.verdict} |" for d in found]
    lines.append("")
    lines += [f"- {d.statement}: {d.detail}" for d in found]
    return "\n".join(lines) + "\n"


def read_scores(summary_csv: Path) -> dict[str, float]:
    """Each experiment's reported score (the validation-selected one where it exists) from summary.csv."""
    with summary_csv.open(newline="", encoding="utf-8") as handle:
        return {row["name"]: float(row["selected_score"] or row["final_score"]) for row in csv.DictReader(handle)}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fedumm.reproduce", description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", choices=sorted(SCALES), default="cpu")
    parser.add_argument("--workdir", type=Path, default=REPO / "reproduce")
    parser.add_argument("--cores", default="all")
    parser.add_argument("--report-only", action="store_true", help="print the tables and directions of a finished run")
    args = parser.parse_args(argv)
    runs = write_config(args.workdir, args.scale)
    if not args.report_only:
        command = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "--directory",
                   str(args.workdir), "--profile", str(REPO / "profiles" / "local"), "--cores", str(args.cores)]
        print("running:", " ".join(command), flush=True)
        subprocess.run(command, check=True, env={**os.environ})
    results = args.workdir / "results"
    for table in ("table1", "table2", "table3", "table4"):
        print((results / "tables" / f"{table}.md").read_text(encoding="utf-8"))
    found = directions(runs, read_scores(results / "summary.csv"))
    text = "## Directions of the papers in this run\n\n" + directions_table(found)
    (results / "directions.md").write_text(text, encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
