"""The ``dag`` benchmark (``python -m fedumm.bench dag``): how long Snakemake takes to build
fedumm's DAG for a sweep, against a bare workflow of the same shape, and how long each rule's
script takes to import.

Grids: FedUMM's Table 1 (clients 2, 4, ..., 16 × Dirichlet α 0.1, 0.5, 1.0 with FedAvg, plus the
default config's fedavg, centralized and local experiments; evaluation every 10 rounds) at 30
and 100 rounds, and the default experiments with 16 clients over ``LONG_ROUNDS`` rounds.

Each grid is written into a temporary directory twice: as fedumm's config, and as a bare
Snakefile whose DAG has the same shape (per experiment: init, then per round one job per
sampled client and one aggregate, and an evaluation on fedumm's evaluation rounds; every rule
has one input (the aggregate one per client), one ``touch`` output and no action). Both are
dry-run (``snakemake -n``, output to a file) in turn, ``--runs`` times each, in fresh
processes. Columns: the job counts of fedumm and of the bare workflow; the median wall time
of each and fedumm's ratio; the median peak memory (maximum resident set size of the snakemake
process, from ``wait4``) of each and fedumm's ratio. A ratio is what fedumm's rules cost on top
of Snakemake's own work for that many jobs; the line below gives every run and the ratio of
CPU times, which a busy machine disturbs less than wall time.

The import times come from ``python -X importtime`` on the top-level imports of each script in
``scripts/``: what a job pays before it does any work, besides starting Python and Snakemake's
script preamble; next to it, the cumulative import time of each of torch, transformers, peft
and matplotlib that the script loads (nested: peft's includes the part of transformers it loads).
"""

from __future__ import annotations

import ast
import copy
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]

TABLE1_CLIENTS = [2, 4, 6, 8, 10, 12, 14, 16]
TABLE1_ALPHAS = [0.1, 0.5, 1.0]
EVAL_EVERY = 10
LONG_ROUNDS = 1000  # the "1,000 rounds × 16 clients"
LONG_CLIENTS = 16

HEAVY_PACKAGES = ("torch", "transformers", "peft", "matplotlib")

BARE_SNAKEFILE = r'''
# A bare workflow of the DAG shape of fedumm's federated rounds (written by fedumm.dag_bench).
configfile: "config.yaml"


EXPERIMENTS = config["experiments"]


wildcard_constraints:
    exp="|".join(sorted(EXPERIMENTS)),
    r=r"\d+",
    k=r"\d+",


rule all:
    input:
        [f"results/{exp}/round_{r:03d}/eval.txt" for exp, e in EXPERIMENTS.items() for r in e["eval_rounds"]],


rule init:
    output:
        touch("results/{exp}/round_000/global.txt"),


rule client:
    input:
        lambda wildcards: f"results/{wildcards.exp}/round_{int(wildcards.r) - 1:03d}/global.txt",
    output:
        touch("results/{exp}/round_{r}/client_{k}.txt"),


rule aggregate:
    input:
        lambda wildcards: [
            f"results/{wildcards.exp}/round_{wildcards.r}/client_{k}.txt"
            for k in range(EXPERIMENTS[wildcards.exp]["clients"])
        ],
    output:
        touch("results/{exp}/round_{r,(?!000)\d+}/global.txt"),


rule evaluate:
    input:
        "results/{exp}/round_{r}/global.txt",
    output:
        touch("results/{exp}/round_{r}/eval.txt"),
'''


# The same shape with the per-job directives that fedumm's rules keep (--directives): four
# outputs per client and aggregate job (three for init), a log and a benchmark file, one params
# function, threads, two resources, a conda environment and a script. What Snakemake spends on
# these is the floor of fedumm's per-job cost, whatever its rules compute. The outputs marked
# EXTRA are left out of ONE_OUTPUT_SNAKEFILE (each job declares only the file its reader
# declares): the difference between the two is what Snakemake charges for declaring each file
# a job writes.
DIRECTIVES_SNAKEFILE = r'''
# The bare workflow plus fedumm's per-job directives (written by fedumm.dag_bench).
configfile: "config.yaml"


EXPERIMENTS = config["experiments"]


wildcard_constraints:
    exp="|".join(sorted(EXPERIMENTS)),
    r=r"\d+",
    k=r"\d+",


def job_params(wildcards):
    return dict(wildcards.items())


rule all:
    input:
        [f"results/{exp}/round_{r:03d}/eval.json" for exp, e in EXPERIMENTS.items() for r in e["eval_rounds"]],


rule init:
    output:
        weights=touch("results/{exp}/round_000/global/weights"),
        config=touch("results/{exp}/round_000/global/config"),  # EXTRA
        state=touch("results/{exp}/round_000/state"),  # EXTRA
    log:
        "logs/init/{exp}.log",
    benchmark:
        "benchmarks/init/{exp}.tsv"
    params:
        job=job_params,
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    conda:
        "env.yaml"
    script:
        "job.py"


rule client:
    input:
        lambda wildcards: f"results/{wildcards.exp}/round_{int(wildcards.r) - 1:03d}/global/weights",
    output:
        weights=touch("results/{exp}/round_{r}/clients/{k}/weights"),  # EXTRA
        config=touch("results/{exp}/round_{r}/clients/{k}/config"),  # EXTRA
        metrics=touch("results/{exp}/round_{r}/clients/{k}/metrics"),
        state=touch("results/{exp}/round_{r}/clients/{k}/state"),  # EXTRA
    log:
        "logs/client/{exp}/round_{r}_client_{k}.log",
    benchmark:
        "benchmarks/client/{exp}/round_{r}_client_{k}.tsv"
    params:
        job=job_params,
    threads: 1
    resources:
        mem_mb=8000,
        runtime=120,
    conda:
        "env.yaml"
    script:
        "job.py"


rule aggregate:
    input:
        lambda wildcards: [
            f"results/{wildcards.exp}/round_{wildcards.r}/clients/{k}/metrics"
            for k in range(EXPERIMENTS[wildcards.exp]["clients"])
        ],
    output:
        weights=touch("results/{exp}/round_{r,(?!000)\d+}/global/weights"),
        config=touch("results/{exp}/round_{r}/global/config"),  # EXTRA
        state=touch("results/{exp}/round_{r}/state"),  # EXTRA
        summary=touch("results/{exp}/round_{r}/summary"),  # EXTRA
    log:
        "logs/aggregate/{exp}/round_{r}.log",
    benchmark:
        "benchmarks/aggregate/{exp}/round_{r}.tsv"
    params:
        job=job_params,
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    conda:
        "env.yaml"
    script:
        "job.py"


rule evaluate:
    input:
        "results/{exp}/round_{r}/global/weights",
    output:
        touch("results/{exp}/round_{r}/eval.json"),
    log:
        "logs/evaluate/{exp}/round_{r}.log",
    benchmark:
        "benchmarks/evaluate/{exp}/round_{r}.tsv"
    params:
        job=job_params,
    threads: 1
    resources:
        mem_mb=8000,
        runtime=60,
    conda:
        "env.yaml"
    script:
        "job.py"
'''

ONE_OUTPUT_SNAKEFILE = "\n".join(
    line for line in DIRECTIVES_SNAKEFILE.splitlines() if not line.endswith("# EXTRA")
).replace("fedumm's per-job directives", "fedumm's per-job directives, one output per job")


# ---------------------------------------------------------------- grids


def base_config(repo: Path) -> dict:
    """The default config with its understanding experiments only: the unified ones have their own
    rounds and an extra evaluation rule that the bare workflow does not model, and Table 1 is
    the grid of understanding runs."""
    config = yaml.safe_load((repo / "config" / "config.yaml").read_text())
    models = config["models"]
    config["experiments"] = {
        name: experiment for name, experiment in config["experiments"].items()
        if not models[experiment.get("model", config["defaults"]["model"])].get("generation")
    }
    return config


def table1_config(repo: Path, rounds: int) -> dict:
    """FedUMM's Table 1 grid: 8 client counts × 3 α with FedAvg, plus the default experiments."""
    config = base_config(repo)
    config["defaults"]["rounds"] = rounds
    config["defaults"]["eval"]["every"] = EVAL_EVERY
    config["sweep"] = {"clients": TABLE1_CLIENTS, "alpha": TABLE1_ALPHAS, "strategy": ["fedavg"], "seed": [0]}
    return config


def long_config(repo: Path, rounds: int, clients: int = LONG_CLIENTS) -> dict:
    """The default experiments (FedAvg, centralized, local) with ``clients`` clients over ``rounds`` rounds."""
    config = base_config(repo)
    config["defaults"]["rounds"] = rounds
    config["defaults"]["clients"] = clients
    config["defaults"]["eval"]["every"] = EVAL_EVERY
    config["sweep"] = None
    return config


def bare_experiments(config: dict) -> dict:
    """The DAG shape of each experiment of a fedumm config: clients per round, rounds, evaluated rounds."""
    from fedumm import config as fedumm_config
    from fedumm.federated import planning

    schema = fedumm_config.load_yaml(REPO / "workflow" / "schemas" / "config.schema.yaml")
    experiments = fedumm_config.load_experiments(copy.deepcopy(config), schema)
    return {
        name: {
            "clients": fedumm_config.clients_per_round(e),
            "rounds": e["rounds"],
            "eval_rounds": planning.eval_rounds(e),
        }
        for name, e in experiments.items()
    }


# ---------------------------------------------------------------- measuring


@dataclass
class Run:
    seconds: float
    cpu_seconds: float
    max_rss_bytes: int
    jobs: int


def job_total(output: str) -> int:
    """The total of the 'Job stats' table of a dry run."""
    match = re.search(r"^total\s+(\d+)\s*$", output, re.MULTILINE)
    if not match:
        raise RuntimeError(f"no job stats in the dry run's output:\n{output[-3000:]}")
    return int(match.group(1))


def dry_run(snakefile: Path, workdir: Path, env: dict) -> Run:
    """``snakemake -n`` in ``workdir``; wall time and the process's peak resident memory."""
    log = workdir / "dry-run.log"
    command = [sys.executable, "-m", "snakemake", "--snakefile", str(snakefile), "--directory", str(workdir),
               "--cores", "1", "-n"]
    with open(log, "w") as out:
        start = time.perf_counter()
        process = subprocess.Popen(command, cwd=workdir, stdout=out, stderr=subprocess.STDOUT, env=env)
        try:
            _, status, usage = os.wait4(process.pid, 0)
        except BaseException:  # interrupted: do not leave the dry run behind
            process.kill()
            process.wait()
            raise
        seconds = time.perf_counter() - start
        process.returncode = os.waitstatus_to_exitcode(status)
    output = log.read_text()
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({process.returncode}):\n{output[-3000:]}")
    return Run(seconds, usage.ru_utime + usage.ru_stime, usage.ru_maxrss * 1024, job_total(output))


def prepare(grid: dict, root: Path, directives: bool) -> dict[str, tuple[Path, Path]]:
    """Write fedumm's config and the bare workflow(s) of a grid; {name: (snakefile, workdir)}."""
    fedumm_dir = root / "fedumm"
    (fedumm_dir / "config").mkdir(parents=True)
    (fedumm_dir / "config" / "config.yaml").write_text(yaml.safe_dump(grid["config"], sort_keys=False))
    shape = json.dumps({"experiments": bare_experiments(grid["config"])})
    targets = {"fedumm": (grid["repo"] / "Snakefile", fedumm_dir)}
    bare = [("bare", "bare", BARE_SNAKEFILE)]
    if directives:
        bare += [("bare + directives", "bare_directives", DIRECTIVES_SNAKEFILE),
                 ("bare + directives, 1 output", "bare_directives_1_output", ONE_OUTPUT_SNAKEFILE)]
    for name, dirname, snakefile in bare:
        workdir = root / dirname
        workdir.mkdir()
        (workdir / "Snakefile").write_text(snakefile)
        (workdir / "config.yaml").write_text(shape)
        if snakefile is not BARE_SNAKEFILE:
            (workdir / "env.yaml").write_text("channels: [conda-forge]\ndependencies: [python]\n")
            (workdir / "job.py").write_text("raise SystemExit('a dry run never runs this')\n")
        targets[name] = (workdir / "Snakefile", workdir)
    return targets


def clean(workdir: Path) -> None:
    """Forget what a previous dry run left (.snakemake holds only locks and metadata for a dry run).
    fedumm's passed model checks stay remembered in the user's cache, as for a user's second run."""
    subprocess.run(["rm", "-rf", str(workdir / ".snakemake")], check=True)


def measure_grid(grid: dict, runs: int, env: dict, directives: bool = False) -> dict[str, list[Run]]:
    with tempfile.TemporaryDirectory(prefix="fedumm-dag-") as tmp:
        targets = prepare(grid, Path(tmp), directives)
        results: dict[str, list[Run]] = {name: [] for name in targets}
        for _ in range(runs):
            for name, (snakefile, workdir) in targets.items():
                clean(workdir)
                results[name].append(dry_run(snakefile, workdir, env))
    return results


HEADER = f"{'grid, workflow':<34}{'jobs':>7}{'wall s':>9}{'ratio':>8}{'peak GB':>10}{'ratio':>8}{'CPU ratio':>11}"


def report_grid(label: str, results: dict[str, list[Run]]) -> None:
    """One line per workflow: median wall time and peak memory, and their ratios to the bare workflow."""

    def median(runs: list[Run], field: str) -> float:
        return statistics.median(getattr(run, field) for run in runs)

    bare = results["bare"]
    print(label)
    for name, runs in results.items():
        seconds, memory = median(runs, "seconds"), median(runs, "max_rss_bytes") / 1e9
        line = f"  {name:<32}{runs[0].jobs:>7}{seconds:>9.1f}"
        if name == "bare":
            line += f"{'':>8}{memory:>10.2f}"
        else:
            line += (f"{seconds / median(bare, 'seconds'):>7.2f}x{memory:>10.2f}"
                     f"{memory * 1e9 / median(bare, 'max_rss_bytes'):>7.2f}x"
                     f"{median(runs, 'cpu_seconds') / median(bare, 'cpu_seconds'):>10.2f}x")
        print(line)
    print(f"  {'each run, wall s:':<32}" + " | ".join(
        f"{name} " + " ".join(f"{run.seconds:.1f}" for run in runs) for name, runs in results.items()))


# ---------------------------------------------------------------- import times


def rule_scripts(repo: Path) -> dict[str, list[str]]:
    """{script file name: [rules that run it]} from workflow/rules/*.smk (``use rule`` inherits the script)."""
    script_of: dict[str, str] = {}
    derived: list[tuple[str, str]] = []
    for smk in sorted((repo / "workflow" / "rules").glob("*.smk")):
        rule = None
        for line in smk.read_text().splitlines():
            if match := re.match(r"rule (\w+):", line):
                rule = match.group(1)
            elif match := re.match(r"use rule (\w+) as (\w+)", line):
                rule = match.group(2)
                derived.append((match.group(1), rule))
            elif (match := re.match(r'\s+"\.\./\.\./scripts/(\w+\.py)"', line)) and rule:
                script_of[rule] = match.group(1)
    for parent, rule in derived:
        script_of.setdefault(rule, script_of.get(parent))
    scripts: dict[str, list[str]] = {}
    for rule, script in script_of.items():
        if script:
            scripts.setdefault(script, []).append(rule)
    return scripts


def top_level_imports(script: Path) -> str:
    """The import statements at the top level of a script (the rest needs Snakemake's ``snakemake`` object)."""
    tree = ast.parse(script.read_text())
    return "\n".join(ast.unparse(node) for node in tree.body if isinstance(node, (ast.Import, ast.ImportFrom)))


def import_times(code: str, env: dict) -> tuple[float, dict[str, float]]:
    """Seconds to run ``code`` under ``python -X importtime`` (all its imports) and each heavy package's share."""
    result = subprocess.run([sys.executable, "-X", "importtime", "-c", code], capture_output=True, text=True,
                            env=env, check=True)
    total, packages = 0.0, {}
    for line in result.stderr.splitlines():
        match = re.match(r"import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)", line)
        if not match:
            continue
        cumulative, indent, module = int(match.group(2)) / 1e6, len(match.group(3)), match.group(4)
        if indent == 1:  # a module imported at top level (not by another module)
            total += cumulative
        if module in HEAVY_PACKAGES:
            packages[module] = cumulative
    return total, packages


def run_import_times(repo: Path, env: dict, runs: int) -> None:
    print(f"script imports (python -X importtime, median of {runs}); heavy packages loaded and their share")
    print(f"{'script':<24}{'import s':>9}  {'rules':<32}heavy packages")
    for script, rules in sorted(rule_scripts(repo).items()):
        code = top_level_imports(repo / "scripts" / script)
        measured = [import_times(code, env) for _ in range(runs)]
        total = statistics.median(seconds for seconds, _ in measured)
        packages = measured[-1][1]
        heavy = ", ".join(f"{name} {packages[name]:.2f}" for name in HEAVY_PACKAGES if name in packages) or "-"
        print(f"{script:<24}{total:>9.2f}  {', '.join(rules):<32}{heavy}")


# ---------------------------------------------------------------- entry point


def grids(repo: Path, selected: list[str], long_rounds: int) -> list[tuple[str, dict]]:
    known = {
        "table1-30": ("Table 1 grid, 30 rounds", lambda: table1_config(repo, 30)),
        "table1-100": ("Table 1 grid, 100 rounds", lambda: table1_config(repo, 100)),
        "long": (f"{LONG_CLIENTS} clients, {long_rounds:,} rounds", lambda: long_config(repo, long_rounds)),
    }
    unknown = sorted(set(selected) - set(known))
    if unknown:
        raise SystemExit(f"--grids: unknown grid(s) {', '.join(unknown)} (known: {', '.join(known)})")
    return [(known[name][0], {"config": known[name][1](), "repo": repo}) for name in selected]


def run_dag(args) -> None:
    repo = args.repo.resolve()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(repo), os.environ.get("PYTHONPATH")]))}
    if args.grids:
        from snakemake import __version__ as snakemake_version

        print(f"snakemake {snakemake_version} -n of fedumm ({repo}) and of a bare workflow of the same DAG shape, "
              f"in turn, {args.runs} run(s) each; medians; load average {os.getloadavg()[0]:.2f} at the start")
        print(HEADER)
        for label, grid in grids(repo, args.grids, args.long_rounds):
            report_grid(label, measure_grid(grid, args.runs, env, args.directives))
        print(f"load average {os.getloadavg()[0]:.2f} at the end")
    if args.import_runs:
        print()
        run_import_times(repo, env, args.import_runs)


def add_parser(benchmarks) -> None:
    dag = benchmarks.add_parser("dag", help="snakemake -n of fedumm vs a bare workflow of the same DAG; script imports")
    dag.add_argument("--runs", type=int, default=3, help="dry runs of each workflow per grid (median reported)")
    dag.add_argument("--grids", type=lambda value: [item for item in value.split(",") if item],
                     default=["table1-30", "table1-100", "long"],
                     help="comma-separated: table1-30, table1-100, long ('' for none)")
    dag.add_argument("--long-rounds", type=int, default=LONG_ROUNDS, help="rounds of the long grid")
    dag.add_argument("--directives", action="store_true",
                     help="also dry-run the bare workflow with fedumm's per-job directives (the floor of its cost), "
                          "and with them but one output per job")
    dag.add_argument("--import-runs", type=int, default=3, help="python -X importtime runs per script (0: skip)")
    dag.add_argument("--repo", type=Path, default=REPO,
                     help="the fedumm checkout whose Snakefile and config are measured (default: this one)")
    dag.set_defaults(run=run_dag)
