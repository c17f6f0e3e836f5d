# Config validation and input functions shared by every rule file.

import inspect
import json
import sys
from pathlib import Path
from types import SimpleNamespace

from fedumm import artifacts
from fedumm import config as fedumm_config
from fedumm.federated import planning
from fedumm.federated import strategies
from fedumm.models import checks as model_checks
from fedumm.reports import identity


EXPERIMENTS = fedumm_config.load_experiments(
    config,
    fedumm_config.load_yaml(workflow.source_path("../schemas/config.schema.yaml")),
    overrides=workflow.config_settings.config,  # --config: nested values arrive as strings
)
for name, experiment in EXPERIMENTS.items():
    planning.check_exclusions(name, experiment)
# model_type and LoRA target names, on meta-device models; remembered once passed (transformers costs seconds)
model_checks.check_models(config["models"], EXPERIMENTS, model_checks.default_cache_dir())
# Snakemake resolves a round's inputs recursively, about two frames per round: room for long chains.
sys.setrecursionlimit(max(sys.getrecursionlimit(), 1000 + 4 * max(e["rounds"] for e in EXPERIMENTS.values())))


wildcard_constraints:
    exp="|".join(sorted(EXPERIMENTS)),
    r=r"\d{3}|[1-9]\d\d\d+",  # round_{r:03d}: 000..999, then 1000, 1001, ... (never a padded 0001)
    k=r"\d+",
    split=r"public|train|val|test",
    dataset=r"[A-Za-z0-9_.-]+",
    model=r"[A-Za-z0-9_.-]+",


localrules:
    partition,
    experiment_tables,
    summary,


# ---------------------------------------------------------------- resources


# Keys of config.resources passed to the rules as snakemake-executor-plugin-slurm's resources of the same name.
SLURM_RESOURCE_KEYS = ("slurm_partition", "slurm_account", "gpu", "gpu_model", "constraint", "qos", "slurm_extra", "tasks", "nodes")


def rule_resources(rule_name):
    """Cluster resources of a rule: config.resources.default overlaid with the rule's entry; the
    SLURM keys only where set (0, null and absent ask for nothing)."""
    merged = {**config["resources"]["default"], **config["resources"].get(rule_name, {})}
    resources = {"mem_mb": merged["mem_mb"], "runtime": merged["runtime"]}
    resources.update({key: merged[key] for key in SLURM_RESOURCE_KEYS if merged.get(key)})
    return resources


def rule_threads(rule_name):
    return {**config["resources"]["default"], **config["resources"].get(rule_name, {})}["cpus"]


# ---------------------------------------------------------------- paths


# Wildcard patterns for the paths of rule outputs; round 0 comes from init_adapter, not aggregate.
EXP, ROUND, CLIENT = "{exp}", "{r}", "{k}"
AGGREGATED_ROUND = r"{r,(?!000)\d{3}|[1-9]\d\d\d+}"


def round_dir(exp, r):
    """Round r's directory of experiment exp; both may be wildcard patterns ("{exp}", "{r}")."""
    return artifacts.round_dir("results", exp, r)


def global_dir(exp, r):
    return f"{round_dir(exp, r)}/{artifacts.GLOBAL_DIR}"


def client_dir(exp, r, k):
    return f"{round_dir(exp, r)}/{artifacts.CLIENTS_DIR}/{k}"


def dataset_dir(dataset):
    """A dataset: webdataset shards of every split and card.json, written by the data rule."""
    return f"results/data/{dataset}"


def base_model_dir(model):
    return f"results/models/{model}/base"


def model_generates(e):
    """Whether an experiment's model generates images (its entry has a ``generation`` block)."""
    return bool(config["models"][e["model"]].get("generation"))


def init_adapter_inputs(wildcards):
    """The base model, and a warm start's adapter file (another experiment's round is a DAG edge)."""
    e = EXPERIMENTS[wildcards.exp]
    inputs = {"base": base_model_dir(e["model"])}
    start = fedumm_config.warm_start(e)
    if isinstance(start, tuple):
        inputs["warm_start"] = f"{global_dir(*start)}/{artifacts.ADAPTER_WEIGHTS}"
    elif start:
        inputs["warm_start"] = f"{start}/{artifacts.ADAPTER_WEIGHTS}"
    return inputs


def feature_file(exp, split):
    e = EXPERIMENTS[exp]
    return f"results/features/{e['model']}/{e['dataset']}/{split}.safetensors"


def uses_features(exp):
    e = EXPERIMENTS[exp]
    return planning.uses_feature_cache(e, config["models"][e["model"]])


# ---------------------------------------------------------------- partitions and embeddings (issue 4)

import re

from fedumm.partition import schemes


def names_regex(names):
    """A wildcard regex that matches exactly ``names`` (and nothing when there are none)."""
    return "|".join(re.escape(name) for name in sorted(names)) or "(?!)"


def embedding_file(embedder, dataset, split):
    return f"results/embeddings/{embedder}/{dataset}/{split}.safetensors"


def partition_embedder(exp):
    """The embedder whose embeddings an experiment's partition reads (clusters, projection), or None."""
    return EXPERIMENTS[exp]["partition"].get("embedder")


def partition_experiments(projected):
    """Regex of the experiments whose partition does (projected=True) or does not read embeddings."""
    return names_regex([exp for exp in EXPERIMENTS if bool(partition_embedder(exp)) == projected])


def partition_inputs(wildcards):
    e = EXPERIMENTS[wildcards.exp]
    inputs = {"data": dataset_dir(e["dataset"])}
    embedder = partition_embedder(wildcards.exp)
    if embedder:
        for split in schemes.SPLITS:
            inputs[f"{split}_embeddings"] = embedding_file(embedder, e["dataset"], split)
    return inputs


# ---------------------------------------------------------------- per-job functions
#
# Snakemake calls a rule's input and params functions once per job (tens of thousands in a
# sweep, on every `snakemake` invocation), so they only look up what PLANS computed once per
# experiment, and each is a named `dag_function`.


def dag_function(function):
    """Mark an input or params function: Snakemake reads its signature on every call (to see which
    arguments it takes), and a stored ``__signature__`` is what inspect.signature returns first."""
    function.__signature__ = inspect.signature(function)
    return function


def experiment_plan(exp):
    """What the per-job functions need of an experiment, computed once."""
    e = EXPERIMENTS[exp]
    client_files = {
        "base": base_model_dir(e["model"]),
        "partition": f"results/{exp}/partition/clients",
        "data": dataset_dir(e["dataset"]),
    }
    if uses_features(exp):
        client_files.update(train_features=feature_file(exp, "train"), val_features=feature_file(exp, "val"))
    return SimpleNamespace(
        experiment=e,
        local=e["kind"] == "local",
        client_files=client_files,
        needs=client_needs(exp),
        train=planning.local_training(e),
    )


def pretrain_shards(wildcards):
    pretrain = config["models"][wildcards.model].get("pretrain")
    return dataset_dir(pretrain["dataset"]) if pretrain else []


def start_adapter_dir(exp, r, k):
    """Where client k starts round r: the previous global adapter, or its own (local kind)."""
    r = int(r)
    if PLANS[exp].local and r > 1:
        return client_dir(exp, r - 1, k)
    return global_dir(exp, r - 1)


def client_needs(exp):
    """What the clients of an experiment's strategy read besides the round's start adapter."""
    cls = strategies.strategy_class(EXPERIMENTS[exp]["strategy"]["name"])
    return {"server_state": cls.client_needs_server_state, "previous_round": cls.client_needs_previous_round}


PLANS = {exp: experiment_plan(exp) for exp in EXPERIMENTS}


@dag_function
def client_train_inputs(wildcards):
    """The files a client job reads, declared once per producing job.

    The start adapter is declared by its weights (its adapter_config.json comes from the same
    job). The base model, partition, dataset and feature files are declared by the clients of
    round 1 only: every later client depends on a round-1 client through its start adapter
    (the global adapter of round r-1 is aggregated from round r-1's clients; a local client
    starts from its own adapter of round r-1), so Snakemake orders, reruns and resumes them
    exactly as if each declared these files, while the DAG holds one edge per experiment for
    them instead of five per job. A client reads their paths from params (``files``).
    """
    exp, r, k = wildcards.exp, int(wildcards.r), int(wildcards.k)
    plan = PLANS[exp]
    inputs = {"start_weights": f"{start_adapter_dir(exp, r, k)}/{artifacts.ADAPTER_WEIGHTS}"}
    if r == 1:
        inputs.update(plan.client_files)
    if plan.needs["server_state"]:
        inputs["server_state"] = f"{round_dir(exp, r - 1)}/{artifacts.SERVER_STATE}"
    previous = planning.last_participation(plan.experiment, k, r) if plan.needs["previous_round"] else None
    if previous is not None:
        inputs["previous_client_state"] = f"{client_dir(exp, previous, k)}/{artifacts.CLIENT_STATE}"
        inputs["previous_client_weights"] = f"{client_dir(exp, previous, k)}/{artifacts.ADAPTER_WEIGHTS}"
    return inputs


@dag_function
def client_train_params(wildcards):
    """Everything a client job depends on besides its input files, as one params entry; ``files``:
    the paths of the base model, partition, dataset (and features) that round 1 declares as inputs."""
    plan = PLANS[wildcards.exp]
    r, k = int(wildcards.r), int(wildcards.k)
    e = plan.experiment
    params = {
        "train": plan.train,
        "groups": planning.trained_groups(e, r, generates=model_generates(e)),
        "eval": e["eval"],
        "strategy": e["strategy"],
        "seed": planning.derive_seed(e["seed"], "client", r, k),
        "files": plan.client_files,
    }
    attack = planning.client_attack(e, k, r)
    if attack:  # an attacker's params only: an attack never changes (or reruns) an honest client
        params["attack"] = {**attack, "seed": planning.derive_seed(e["seed"], "attack", r, k),
                            "round_seed": planning.derive_seed(e["seed"], "attack", r)}
    return params


def client_outputs(exp, r):
    return [
        f"{client_dir(exp, r, k)}/{artifacts.METRICS}"
        for k in planning.sampled_clients(EXPERIMENTS[exp], int(r))
    ]


@dag_function
def aggregate_params(wildcards):
    """The strategy, the upload checks, the clients excluded from this round (a new exclusion changes
    these params, so the round is aggregated again) and the partition the server counts examples in."""
    plan = PLANS[wildcards.exp]
    return {
        "strategy": plan.experiment["strategy"],
        "uploads": plan.experiment["uploads"],
        "excluded": sorted(planning.excluded_clients(plan.experiment, int(wildcards.r))),
        "partition": plan.client_files["partition"],
    }


@dag_function
def aggregate_inputs(wildcards):
    """The previous global adapter (by its weights) and server state, and each sampled client's
    metrics.json: the server also reads the client's adapter and client state, which the same
    client job writes, so declaring one file per client job orders and reruns it all the same."""
    exp, r = wildcards.exp, int(wildcards.r)
    previous = round_dir(exp, r - 1)
    clients = [client_dir(exp, r, k) for k in planning.sampled_clients(PLANS[exp].experiment, r)]
    return {
        "previous": f"{global_dir(exp, r - 1)}/{artifacts.ADAPTER_WEIGHTS}",
        "previous_state": f"{previous}/{artifacts.SERVER_STATE}",
        "metrics": [f"{directory}/{artifacts.METRICS}" for directory in clients],
    }


def evaluated_adapter_dirs(exp, r):
    """The models scored at round r: the global one, or every client's own (local kind)."""
    e = EXPERIMENTS[exp]
    if e["kind"] == "local" and int(r) > 0:
        return {f"client_{k}": client_dir(exp, r, k) for k in range(e["clients"])}
    return {"global": global_dir(exp, r)}


@dag_function
def evaluate_eval_params(wildcards):
    return PLANS[wildcards.exp].experiment["eval"]


@dag_function
def evaluate_adapter_params(wildcards):
    return evaluated_adapter_dirs(wildcards.exp, wildcards.r)


@dag_function
def evaluate_inputs(wildcards):
    e = EXPERIMENTS[wildcards.exp]
    split = e["eval"]["split"]
    inputs = {
        "base": base_model_dir(e["model"]),
        "data": dataset_dir(e["dataset"]),
        # Each client's own evaluation ids, for the personalized scores.
        "partition": f"results/{wildcards.exp}/partition/clients",
        "adapters": [
            f"{directory}/{artifacts.ADAPTER_WEIGHTS}"
            for directory in evaluated_adapter_dirs(wildcards.exp, wildcards.r).values()
        ],
    }
    if "train_features" in PLANS[wildcards.exp].client_files:
        inputs["features"] = feature_file(wildcards.exp, split)
        if e["eval"].get("select_split"):
            inputs["select_features"] = feature_file(wildcards.exp, e["eval"]["select_split"])
    if model_generates(e):
        inputs["geneval"] = f"{round_dir(wildcards.exp, wildcards.r)}/{artifacts.GENEVAL_SCORES}"
    return inputs


@dag_function
def evaluate_generation_inputs(wildcards):
    e = EXPERIMENTS[wildcards.exp]
    return {
        "base": base_model_dir(e["model"]),
        "data": dataset_dir(e["dataset"]),
        "partition": f"results/{wildcards.exp}/partition/clients",
        "adapters": [
            f"{directory}/{artifacts.ADAPTER_WEIGHTS}"
            for directory in evaluated_adapter_dirs(wildcards.exp, wildcards.r).values()
        ],
    }


def global_adapters(exp):
    """Every round's adapter files that the lineage records."""
    e = EXPERIMENTS[exp]
    return [
        f"{directory}/{artifacts.ADAPTER_WEIGHTS}"
        for r in range(e["rounds"] + 1)
        for directory in (evaluated_adapter_dirs(exp, r).values() if e["kind"] == "local" else [global_dir(exp, r)])
    ]


def experiment_eval_files(exp):
    return [f"{round_dir(exp, r)}/{artifacts.EVAL}" for r in planning.eval_rounds(EXPERIMENTS[exp])]


def round_summaries(exp):
    """Per-round upload accounting: aggregate.json, or the clients' metrics (local kind)."""
    e = EXPERIMENTS[exp]
    if e["kind"] == "local":
        return [m for r in range(1, e["rounds"] + 1) for m in client_outputs(exp, r)]
    return [f"{round_dir(exp, r)}/{artifacts.AGGREGATE_SUMMARY}" for r in range(1, e["rounds"] + 1)]


# ---------------------------------------------------------------- paper tables (rule paper_tables)

PAPER_TABLE_TITLES = {"table1": "Table 1", "table2": "Table 2", "table3": "Table 3", "table4": "Table 4"}
"""FedUMM's tables that rule paper_tables writes, as results/tables/{name}.{format}."""
PAPER_TABLE_FORMATS = ("csv", "md", "tex")


def rule_gpus(rule_name):
    """GPUs per job of a rule (config.resources.default overlaid with the rule's entry); 0 for none."""
    return {**config["resources"]["default"], **config["resources"].get(rule_name, {})}.get("gpu") or 0


def benchmark_files(exp):
    """Benchmark TSVs of an experiment's client_train and aggregate jobs by round (paths as in federated.smk)."""
    rounds = range(1, EXPERIMENTS[exp]["rounds"] + 1)
    return {
        "client_train": {
            r: [
                f"benchmarks/client_train/{exp}/round_{r:03d}_client_{k}.tsv"
                for k in planning.sampled_clients(EXPERIMENTS[exp], r)
            ]
            for r in rounds
        },
        "aggregate": {r: [f"benchmarks/aggregate/{exp}/round_{r:03d}.tsv"] for r in rounds},
    }


def paper_table_base_models():
    """Base model directory of each model a federated experiment uses (its size is Table 4's full fine-tuning)."""
    models = {e["model"] for e in EXPERIMENTS.values() if e["kind"] == "federated"}
    return {model: base_model_dir(model) for model in sorted(models)}


def paper_table_outputs():
    return [
        *(f"results/tables/{table}.{ext}" for table in PAPER_TABLE_TITLES for ext in PAPER_TABLE_FORMATS),
        "results/accuracy_vs_bytes.png",
    ]


# ---------------------------------------------------------------- end of paper tables


def all_outputs():
    return [
        *(f"results/{exp}/metrics.csv" for exp in EXPERIMENTS),
        *(f"results/{exp}/lineage.jsonl" for exp in EXPERIMENTS),
        *(f"results/{exp}/{artifacts.RESOLVED_CONFIG}" for exp in EXPERIMENTS),
        *(f"results/{exp}/partition/heatmap.png" for exp in EXPERIMENTS),
        "results/summary.csv",
        "results/summary.md",
        "results/score_vs_round.png",
        *paper_table_outputs(),
    ]
