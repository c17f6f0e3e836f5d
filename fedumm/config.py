"""Configuration: schema validation, experiment resolution and semantic checks.

The workflow calls :func:`load_experiments` once at parse time, so every mistake in
``config.yaml`` is reported, naming its key, before a single job runs.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from fedumm.artifacts import ADAPTER_CONFIG, ADAPTER_WEIGHTS
from fedumm.federated import attacks, strategies
from fedumm.models.architectures import ARCHITECTURES
from fedumm.partition.schemes import cluster_size_cap

EXPERIMENT_KINDS = ("federated", "centralized", "local")
ANSWER_LABELS = ("answer", "question_type", "answer_type")
"""Partition labels that only question records have (``fedumm.partition.schemes.LABEL_FIELDS``)."""
CLIENT_METRICS = (
    "num_samples", "steps", "train_loss", "train_loss_last", "val_vqa_accuracy", "val_score", "val_samples",
    "bytes_uploaded", "seconds",
)
"""The numeric keys of every client's metrics.json (``fedumm.federated.client.train_client``), which
``fedumm_fusion``'s ``metric`` may name; ``trained_groups``, ``bytes_uploaded_by_group`` and
``num_samples_by_modality`` are not numbers."""


class ConfigError(ValueError):
    """A configuration mistake; the message names the offending key."""


class _StrictLoader(yaml.SafeLoader):
    """PyYAML's safe loader that refuses a key given twice in one mapping (PyYAML keeps the last)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        first_line: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *anchor` merges, which may be overridden
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                seen = key in first_line
            except TypeError:  # an unhashable key: the base class reports it
                continue
            if seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} (first given at line {first_line[key]}); keep one of them",
                    key_node.start_mark,
                )
            first_line[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep)


def load_yaml(path: str | Path) -> Any:
    """A YAML file, read strictly: a syntax error or a duplicate key is a ConfigError naming the file and line."""
    with open(path) as handle:
        try:
            return yaml.load(handle, Loader=_StrictLoader)
        except yaml.MarkedYAMLError as error:
            mark = error.problem_mark or error.context_mark
            where = f"config file {path}" + (f", line {mark.line + 1}, column {mark.column + 1}" if mark else "")
            problem = error.problem if isinstance(error, yaml.constructor.ConstructorError) else (
                f"YAML syntax error: {error.problem}"
                + (f" ({error.context} at line {error.context_mark.line + 1})" if error.context and error.context_mark else "")
            )
            raise ConfigError(f"{where}: {problem}") from None


def check_yaml_files(paths: Iterable[str | Path]) -> None:
    """Read each existing config file strictly (:func:`load_yaml`), for the mistakes Snakemake's own
    loader hides: it names neither file nor line of a syntax error, and keeps the last of two equal keys.

    Like Snakemake, a file is read as JSON first (JSON may hold tabs that YAML refuses)."""
    for path in paths:
        if Path(path).is_file():
            read_config_file(path)


def read_config_file(path: str | Path) -> Any:
    """A config file as Snakemake reads it (JSON first, JSON may hold tabs that YAML refuses), strictly."""
    try:
        return json.loads(Path(path).read_text(), object_pairs_hook=lambda pairs: _unique_json_keys(path, pairs))
    except json.JSONDecodeError:
        return load_yaml(path)


# The keys that say which experiments run: a user's config file replaces the default file's values of
# these instead of merging into them, so that it names exactly the experiments that run.
EXPERIMENT_KEYS = ("experiments", "sweep")


def replace_default_experiments(config: dict, user_files: Iterable[str | Path], overrides: Mapping | None = None) -> None:
    """Make ``config``'s experiments those of the user's config files alone, in place.

    Snakemake merges each ``--configfile`` over ``config/config.yaml`` key by key, so the default
    file's demo experiments would run next to the user's. When any user file sets ``experiments`` or
    ``sweep``, both come from the user files only (merged in their order); ``--config`` values
    (``overrides``) for them still apply on top. Datasets, models, defaults and resources merge as before.
    """
    user_configs = [read_config_file(path) or {} for path in user_files]
    if not any(key in user_config for user_config in user_configs for key in EXPERIMENT_KEYS):
        return
    experiments: dict = {}
    sweep = None
    for user_config in user_configs:
        experiments = deep_merge(experiments, user_config.get("experiments") or {})
        sweep = user_config.get("sweep", sweep)
    overrides = overrides or {}
    config["experiments"] = deep_merge(experiments, overrides.get("experiments") or {})
    config["sweep"] = overrides.get("sweep", sweep)


def _unique_json_keys(path: str | Path, pairs: list[tuple[str, Any]]) -> dict:
    keys = [key for key, _ in pairs]
    duplicate = next((key for key in keys if keys.count(key) > 1), None)
    if duplicate is not None:
        raise ConfigError(f"config file {path}: duplicate key {duplicate!r} in one object; keep one of them")
    return dict(pairs)


def _string_leaves(value: Any, path: tuple = ()) -> Iterator[tuple]:
    if isinstance(value, Mapping):
        for key, item in value.items():
            yield from _string_leaves(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _string_leaves(item, (*path, index))
    elif isinstance(value, str):
        yield path


def _errors_at(validator: jsonschema.protocols.Validator, config: dict, path: tuple) -> bool:
    """Whether the schema finds a mistake located exactly at ``path`` (nested anyOf/oneOf branches included)."""
    pending = list(validator.iter_errors(config))
    while pending:
        error = pending.pop()
        if tuple(error.absolute_path) == path:
            return True
        pending.extend(error.context or ())
    return False


def read_overrides(config: dict, overrides: Mapping, schema: dict) -> None:
    """Give ``snakemake --config`` values their YAML types, in ``config`` itself.

    Snakemake reads a nested ``--config`` value with YAML's BaseLoader, so ``defaults={rounds: 5}``
    arrives as the string '5' (a top-level value gets int, float or True/False at most). Each string
    of ``overrides`` (Snakemake's --config mapping) that YAML reads as a number, boolean or null is
    replaced by that value, as if the key had been written in a config file, unless the schema
    then finds a mistake at that key that the string did not have (a dataset named 2020 stays '2020').
    """
    validator = jsonschema.Draft202012Validator(schema)
    for path in _string_leaves(overrides):
        parent = config
        try:
            for part in path[:-1]:
                parent = parent[part]
            text = parent[path[-1]]
        except (KeyError, IndexError, TypeError):
            continue
        if not isinstance(text, str):
            continue
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError:
            continue
        if isinstance(value, str) or not (value is None or isinstance(value, (bool, int, float))):
            continue
        parent[path[-1]] = value
        if _errors_at(validator, config, path):
            parent[path[-1]] = text
            if not _errors_at(validator, config, path):
                continue
            parent[path[-1]] = value  # wrong either way: report the typed value (e.g. a minimum, not a type)


def _key_path(parts: list[Any]) -> str:
    return ".".join(str(part) for part in parts) or "<top level>"


def _schema_error_message(error: jsonschema.ValidationError) -> str:
    where = _key_path(list(error.absolute_path))
    if error.validator == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        unknown = sorted(set(error.instance) - set(allowed))
        hint = f" (allowed: {', '.join(allowed)})" if allowed else ""
        return f"config key '{where}': unknown key {', '.join(repr(u) for u in unknown)}{hint}"
    return f"config key '{where}': {error.message}"


def validate_schema(config: dict, schema: dict) -> None:
    """Raise ConfigError for the most relevant JSON-schema violation, naming its key."""
    validator = jsonschema.Draft202012Validator(schema)
    error = jsonschema.exceptions.best_match(validator.iter_errors(config))
    if error is not None:
        raise ConfigError(_schema_error_message(error))


def deep_merge(base: dict, override: dict) -> dict:
    """Return a copy of ``base`` with ``override`` merged in, recursively for nested dicts."""
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict) and key != "strategy":
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _format_alpha(alpha: float) -> str:
    return f"{alpha:g}"


def expand_sweep(defaults: dict, sweep: dict) -> dict[str, dict]:
    """Expand a clients × alpha × strategy × seed sweep into named experiments.

    Strategy parameters come from ``defaults.strategy`` when its name matches, so a sweep
    over names keeps hand-tuned parameters of the default strategy.
    """
    base = deep_merge(defaults, sweep.get("base", {}))
    axes = {
        "clients": sweep.get("clients", [base["clients"]]),
        "alpha": sweep.get("alpha", [base["partition"].get("alpha", 1.0)]),
        "strategy": sweep.get("strategy", [base["strategy"]["name"]]),
        "seed": sweep.get("seed", [base["seed"]]),
    }
    expanded = {}
    for clients, alpha, strategy, seed in itertools.product(*axes.values()):
        name = f"sweep_c{clients}_a{_format_alpha(alpha)}_{strategy}_s{seed}"
        experiment = copy.deepcopy(base)
        experiment["clients"] = clients
        experiment["partition"]["alpha"] = alpha
        experiment["seed"] = seed
        if strategy != base["strategy"]["name"]:
            experiment["strategy"] = {"name": strategy}
        expanded[name] = experiment
    return expanded


def num_clients(experiment: dict) -> int:
    """Clients that hold data: the centralized baseline pools everything at one site."""
    return 1 if experiment["kind"] == "centralized" else experiment["clients"]


def clients_per_round(experiment: dict) -> int:
    """Number of clients sampled each round, from a fraction (float) or a count (int)."""
    total = num_clients(experiment)
    if experiment["kind"] != "federated":
        return total
    per_round = experiment["clients_per_round"]
    if isinstance(per_round, float):
        return max(1, round(per_round * total))
    return per_round


def fill_derived_parameters(experiment: dict) -> None:
    """Strategy parameters that follow from the experiment itself, unless set explicitly.

    DP-FedAvg's accountant needs the client sampling rate q = clients per round / clients;
    SCAFFOLD's server update of c needs the number of clients N; FLoRA's stacking
    (``lora_fedavg`` mode ``stack``) checks uploads against the clients' LoRA rank.
    """
    strategy = experiment["strategy"]
    if strategy["name"] == "dp_fedavg" and "sampling_rate" not in strategy:
        strategy["sampling_rate"] = clients_per_round(experiment) / num_clients(experiment)
    if strategy["name"] == "scaffold" and "num_clients" not in strategy:
        strategy["num_clients"] = num_clients(experiment)
    if strategy["name"] == "lora_fedavg" and strategy.get("mode") == "stack" and "client_rank" not in strategy:
        strategy["client_rank"] = experiment["lora"]["r"]


def _check_experiment(name: str, experiment: dict, config: dict) -> None:
    where = f"experiments.{name}"
    for key in ("dataset", "model"):
        known = config[f"{key}s"]
        if experiment[key] not in known:
            raise ConfigError(
                f"config key '{where}.{key}': unknown {key} {experiment[key]!r} "
                f"(defined: {', '.join(sorted(known))})"
            )
    try:
        strategy = strategies.build(experiment["strategy"])
    except (KeyError, TypeError, ValueError) as error:
        raise ConfigError(f"config key '{where}.strategy': {error}") from None
    lora = experiment["lora"]
    both = sorted(set(lora["modules_to_save"]) & set(lora["target_modules"]))
    if both:
        raise ConfigError(f"config key '{where}.lora.modules_to_save': {both} also get LoRA (lora.target_modules); "
                          "a module is either trained in full or through LoRA")
    model = config["models"].get(experiment["model"], {})
    if (model.get("family") == "hf" and experiment["strategy"]["name"] == "fedcmp"
            and strategy.reliability and strategy.lam > 0):
        raise ConfigError(
            f"config key '{where}.strategy': fedcmp's reliability weights need the cross-modal alignment "
            "error, which fedumm measures on the llava_recipe family only; set reliability: false (or lam: 0)"
        )
    if experiment["strategy"]["name"] == "fedumm_fusion" and strategy.metric not in CLIENT_METRICS:
        raise ConfigError(
            f"config key '{where}.strategy.metric': clients write no numeric metric {strategy.metric!r} "
            f"to metrics.json; use one of {', '.join(CLIENT_METRICS)} (e.g. val_score)"
        )
    if model.get("generation") and strategy.modality_refusal:
        raise ConfigError(
            f"config key '{where}.strategy': model {experiment['model']!r} generates images, so its understanding "
            f"and generation adapters are aggregated separately, which {experiment['strategy']['name']!r} does not "
            f"support: {strategy.modality_refusal}"
        )
    if experiment["tuning"]["mode"] == "full":
        if strategy.full_refusal:
            raise ConfigError(f"config key '{where}.tuning.mode': full fine-tuning cannot run with strategy "
                              f"{experiment['strategy']['name']!r}: {strategy.full_refusal}")
        if model.get("generation") or model.get("family") == "hf":
            raise ConfigError(f"config key '{where}.tuning.mode': full fine-tuning runs on the llava_recipe family "
                              f"(its connector and language model); model {experiment['model']!r} trains adapters")
    _check_robust_clients(where, experiment)
    _check_exclude(where, experiment)
    _check_attack(where, experiment)
    if experiment["kind"] == "local" and strategy.client_needs_server_state:
        raise ConfigError(
            f"config key '{where}.strategy': the clients of {experiment['strategy']['name']!r} read the "
            "server's state, and the local kind has no server"
        )

    train_size = config["datasets"][experiment["dataset"]]["splits"]["train"]
    if experiment["clients"] > train_size:
        raise ConfigError(
            f"config key '{where}.clients': {experiment['clients']} clients but dataset "
            f"{experiment['dataset']!r} has only {train_size} training samples; every client needs one, "
            f"so use at most {train_size} clients or a larger train split"
        )
    per_round = experiment["clients_per_round"]
    if isinstance(per_round, int) and per_round > experiment["clients"]:
        raise ConfigError(
            f"config key '{where}.clients_per_round': {per_round} exceeds clients={experiment['clients']}"
        )
    partition = experiment["partition"]
    if partition["scheme"] == "dirichlet":
        if "alpha" not in partition:
            raise ConfigError(f"config key '{where}.partition.alpha': required by the dirichlet scheme")
    _check_partition(where, experiment, config, train_size)
    tuning = experiment["tuning"]
    if tuning["mode"] == "two_stage" and tuning["connector_rounds"] >= experiment["rounds"]:
        raise ConfigError(
            f"config key '{where}.tuning.connector_rounds': two_stage needs connector_rounds "
            f"({tuning['connector_rounds']}) < rounds ({experiment['rounds']})"
        )
    if experiment["eval"]["split"] == "val" and config["datasets"][experiment["dataset"]]["splits"]["val"] == 0:
        raise ConfigError(f"config key '{where}.eval.split': dataset {experiment['dataset']!r} has no val split")
    if experiment["eval"].get("select_split") == experiment["eval"]["split"]:
        raise ConfigError(f"config key '{where}.eval.select_split': choosing the round on the split it reports "
                          f"({experiment['eval']['split']}) would overstate the score; use another split or null")


def _check_baselines(experiments: dict[str, dict]) -> None:
    """A ``baseline`` names a centralized experiment of the same config with the same dataset."""
    for name, experiment in experiments.items():
        baseline = experiment.get("baseline")
        if not baseline:
            continue
        where = f"config key 'experiments.{name}.baseline'"
        centralized = sorted(other for other, spec in experiments.items() if spec["kind"] == "centralized")
        if baseline not in experiments:
            raise ConfigError(f"{where}: no experiment {baseline!r} (centralized experiments: {', '.join(centralized) or 'none'})")
        if experiments[baseline]["kind"] != "centralized":
            raise ConfigError(f"{where}: {baseline!r} is a {experiments[baseline]['kind']} experiment; "
                              f"Table 1 compares with a centralized one ({', '.join(centralized) or 'none defined'})")
        if experiments[baseline]["dataset"] != experiment["dataset"]:
            raise ConfigError(f"{where}: {baseline!r} trains on dataset {experiments[baseline]['dataset']!r}, "
                              f"{name!r} on {experiment['dataset']!r}; their scores are not comparable")


def warm_start(experiment: dict) -> tuple[str, int] | str | None:
    """An experiment's warm start: (experiment, round) of this config, an adapter directory, or None."""
    init = experiment.get("init") or {}
    if init.get("experiment"):
        return init["experiment"], init["round"]
    return init.get("from")


def _check_warm_start(name: str, experiment: dict, experiments: dict[str, dict]) -> None:
    """The adapter a warm start names exists, and its LoRA rank and alpha are the experiment's
    (the init_adapter job checks every tensor's shape against the model)."""
    init = experiment.get("init") or {}
    where = f"experiments.{name}.init"
    if init.get("from") and init.get("experiment"):
        raise ConfigError(f"config key '{where}': give either from (an adapter directory) or experiment (and round), not both")
    if init.get("experiment"):
        source = init["experiment"]
        if source == name or source not in experiments:
            others = sorted(set(experiments) - {name})
            raise ConfigError(f"config key '{where}.experiment': no other experiment {source!r} (defined: {', '.join(others)})")
        other = experiments[source]
        if other["kind"] != "federated":
            raise ConfigError(f"config key '{where}.experiment': {source!r} is {other['kind']}; it has no global adapter to start from")
        init.setdefault("round", other["rounds"])
        if init["round"] > other["rounds"]:
            raise ConfigError(f"config key '{where}.round': {source!r} runs {other['rounds']} rounds, not {init['round']}")
        for key in ("model", "lora"):
            if other[key] != experiment[key]:
                raise ConfigError(f"config key '{where}.experiment': {source!r} has another {key} ({other[key]!r}, "
                                  f"here {experiment[key]!r}); its adapter does not fit this experiment")
        if other.get("init", {}).get("experiment") == name:
            raise ConfigError(f"config key '{where}.experiment': {source!r} starts from {name!r} in turn")
    elif init.get("from"):
        adapter = Path(init["from"])
        missing = [f for f in (ADAPTER_CONFIG, ADAPTER_WEIGHTS) if not (adapter / f).is_file()]
        if missing:
            raise ConfigError(f"config key '{where}.from': {adapter} is not an adapter directory (no {', '.join(missing)})")
        saved = json.loads((adapter / ADAPTER_CONFIG).read_text())
        for saved_key, key in (("r", "r"), ("lora_alpha", "alpha")):
            if saved.get(saved_key) != experiment["lora"][key]:
                raise ConfigError(f"config key '{where}.from': {adapter} has LoRA {saved_key}={saved.get(saved_key)}, the experiment "
                                  f"lora.{key}={experiment['lora'][key]}; set lora.{key} to match or start from another adapter")


def _check_robust_clients(where: str, experiment: dict) -> None:
    """Krum and Multi-Krum need n > 2f + 2 and m <= n, n the clients aggregated per round:
    known from the config, so refused here rather than in the first aggregate job."""
    robust = experiment["strategy"].get("robust")
    if experiment["kind"] == "local" or not robust or robust.get("name") not in ("krum", "multi_krum"):
        return
    name, f = robust["name"], robust["f"]
    excluded = max((len(entry["clients"]) for entry in experiment["exclude"]), default=0)
    n = min(clients_per_round(experiment), num_clients(experiment)) - excluded
    if experiment["kind"] == "centralized":
        aggregated = "the centralized kind aggregates its 1 client per round"
        fix = f"give {where} a strategy without {name}, e.g. strategy: {{name: fedavg}}"
    else:
        aggregated = f"clients_per_round gives {n + excluded} of the {experiment['clients']} clients" + (
            f", {n} after the {excluded} excluded from a round" if excluded else "")
        fix = f"use {f'f <= {(n - 3) // 2}, or ' if n >= 3 else ''}at least {2 * f + 3} clients per round, or another robust rule"
    if n <= 2 * f + 2:
        raise ConfigError(
            f"config key '{where}.strategy.robust.f': {name} with f={f} needs more than 2f + 2 = {2 * f + 2} "
            f"clients aggregated per round, and {aggregated}; {fix}"
        )
    m = robust.get("m")
    if name == "multi_krum" and m is not None and m > n:
        raise ConfigError(
            f"config key '{where}.strategy.robust.m': multi_krum selects m={m} clients, but {aggregated}; "
            f"use m <= {n}"
        )


def _check_exclude(where: str, experiment: dict) -> None:
    """``exclude`` names rounds and clients that exist, in a federation. (That a round keeps at least
    one client depends on the sampling: ``fedumm.federated.planning.check_exclusions``.)"""
    if not experiment["exclude"]:
        return
    if experiment["kind"] != "federated":
        raise ConfigError(
            f"config key '{where}.exclude': the {experiment['kind']} kind has no federation to exclude a client from"
        )
    for i, entry in enumerate(experiment["exclude"]):
        if entry["round"] > experiment["rounds"]:
            raise ConfigError(
                f"config key '{where}.exclude[{i}].round': round {entry['round']} is past the last "
                f"round ({experiment['rounds']})"
            )
        unknown = [k for k in entry["clients"] if k >= num_clients(experiment)]
        if unknown:
            raise ConfigError(
                f"config key '{where}.exclude[{i}].clients': no client {unknown[0]} "
                f"(clients are 0..{num_clients(experiment) - 1})"
            )


def _check_attack(where: str, experiment: dict) -> None:
    """An attack needs clients that exist, among others that stay honest, and only its kind's parameters."""
    attack = experiment["attack"]
    if not attack:
        return
    if experiment["kind"] != "federated":
        raise ConfigError(
            f"config key '{where}.attack': attacks simulate byzantine clients of a federation; "
            f"the {experiment['kind']} kind has no server that could be attacked"
        )
    total = num_clients(experiment)
    clients = attack.get("clients", [])
    if any(k >= total for k in clients):
        raise ConfigError(f"config key '{where}.attack.clients': no client {max(clients)} (clients are 0..{total - 1})")
    count = len(clients) if clients else attacks.attacker_count(attack["fraction"], total)
    if count >= total:
        raise ConfigError(f"config key '{where}.attack': all {total} clients would attack; leave some honest")
    own = set(attacks.DEFAULT_PARAMS[attack["kind"]])
    extra = sorted(set(attack) - set(attacks.SELECTION_KEYS) - own)
    if extra:
        allowed = ", ".join(sorted(own)) or "none"
        raise ConfigError(
            f"config key '{where}.attack.{extra[0]}': not a parameter of the {attack['kind']} attack (its parameters: {allowed})"
        )
    if attack.get("from_round", 1) > experiment["rounds"]:
        raise ConfigError(f"config key '{where}.attack.from_round': past the last round ({experiment['rounds']})")


def _check_partition(where: str, experiment: dict, config: dict, train_size: int) -> None:
    """Partition checks that need more than the schema: names, and sizes against the dataset."""
    partition = experiment["partition"]
    embedder = partition.get("embedder")
    known = config.get("embedders") or {}
    if embedder is not None and embedder not in known:
        raise ConfigError(
            f"config key '{where}.partition.embedder': unknown embedder {embedder!r} "
            f"(defined: {', '.join(sorted(known)) or 'none; add an embedders: entry'})"
        )
    # Every scheme gives every client at least min_size training samples (or stops), so this many must exist.
    if experiment["clients"] * partition["min_size"] > train_size:
        raise ConfigError(
            f"config key '{where}.partition.min_size': {experiment['clients']} clients × "
            f"min_size {partition['min_size']} exceeds the {train_size} training samples; "
            "lower min_size or use fewer clients"
        )
    dataset = config["datasets"][experiment["dataset"]]
    if dataset.get("generate_fraction", 0) > 0 and partition["label"] in ANSWER_LABELS:
        raise ConfigError(
            f"config key '{where}.partition.label': {partition['label']!r} is a field of question records, but dataset "
            f"{experiment['dataset']!r} also holds text-to-image records (generate_fraction); partition by a field "
            "every record has: task (clients with different modalities), label or domain"
        )
    cap = None
    if partition["scheme"] == "cluster":
        try:
            cap = cluster_size_cap(partition.get("max_cluster_size"), train_size)
        except ValueError as error:
            raise ConfigError(f"config key '{where}.partition.max_cluster_size': {error}") from None
        if cap is not None and cap < partition["min_size"]:
            raise ConfigError(
                f"config key '{where}.partition.max_cluster_size': caps clusters at {cap} training "
                f"samples, below min_size {partition['min_size']}"
            )
    one_pass = partition.get("one_pass")
    # The smallest client holds at most the mean share (and at most a cluster's cap); each part needs a sample.
    share = min(train_size // experiment["clients"], cap if cap is not None else train_size)
    if one_pass is not None and one_pass > share:
        raise ConfigError(
            f"config key '{where}.partition.one_pass': {one_pass} parts per client, but some client holds at most "
            f"{share} training samples ({train_size} over {experiment['clients']} clients"
            + (f", clusters capped at {cap}" if cap is not None else "")
            + f"); use one_pass <= {share}, or fewer clients"
        )


def used_datasets(config: dict, experiments: dict[str, dict]) -> set[str]:
    """The datasets the experiments read: their own, their models' pretraining sets, and mixtures' parts."""
    used = {e["dataset"] for e in experiments.values()}
    for model in {e["model"] for e in experiments.values()}:
        pretrain = config["models"][model].get("pretrain")
        if pretrain:
            used.add(pretrain["dataset"])
    datasets = config["datasets"]
    return used | {part for name in used if datasets[name]["kind"] == "mixture" for part in datasets[name]["parts"]}


def _check_folder(name: str, spec: dict) -> None:
    """A ``folder`` dataset is read in place: its folder must exist now (relative to the working directory)."""
    folder = Path(spec["path"])
    where = f"config key 'datasets.{name}.path'"
    if not folder.is_dir():
        raise ConfigError(
            f"{where}: folder {spec['path']!r} does not exist (looked in {folder.resolve()}); set path to "
            "a folder in the normalized format (card.json + shards)"
        )
    if not (folder / "card.json").is_file():
        raise ConfigError(
            f"{where}: folder {spec['path']!r} has no card.json; point path at a folder in the normalized "
            "format (card.json listing the shards of each split)"
        )


def _check_mixture(name: str, spec: dict, datasets: dict) -> None:
    """A mixture's parts must be other, non-mixture datasets of the config that have its splits."""
    where = f"config key 'datasets.{name}.parts'"
    for part in spec["parts"]:
        if part not in datasets:
            raise ConfigError(f"{where}: unknown dataset {part!r} (defined: {', '.join(sorted(datasets))})")
        # Mixtures of mixtures are refused: it rules out cycles, and `dataset` names one source.
        if datasets[part]["kind"] == "mixture":
            raise ConfigError(f"{where}: {part!r} is itself a mixture; list its parts instead")
        lacking = [s for s, n in spec["splits"].items() if n > 0 and s not in datasets[part].get("splits", {})]
        if lacking:
            raise ConfigError(f"{where}: part {part!r} has no {lacking[0]!r} split")


def _check_hf_model(name: str, model: dict) -> None:
    where = f"config key 'models.{name}"
    if ("id" in model) == ("config" in model):
        raise ConfigError(f"{where}': give either `id` (a hub id or local directory) or `config` (an inline "
                          "config for a random-init model), not both and not neither")
    if "config" in model and "pretrain" not in model:
        raise ConfigError(f"{where}.pretrain': an inline config needs `pretrain` (its tokenizer is built from the "
                          "vocabulary of that dataset; `steps: 0` builds it without training)")
    if "id" in model and "pretrain" in model:
        raise ConfigError(f"{where}.pretrain': a checkpoint from `id` is used as it is; pretraining is for inline configs")
    model_type = model.get("config", {}).get("model_type")
    if "generation" in model and model_type is not None and not ARCHITECTURES[model_type].generation:
        generating = sorted(name for name, architecture in ARCHITECTURES.items() if architecture.generation)
        raise ConfigError(f"{where}.generation': {model_type} does not generate images (models that do: "
                          f"{', '.join(generating)})")
    if "generate" in (model.get("pretrain") or {}).get("tasks", ()) and "generation" not in model:
        raise ConfigError(f"{where}.pretrain.tasks': `generate` trains the generation path, which needs the "
                          "model's `generation` block")


def _check_model(name: str, model: dict, config: dict) -> None:
    if model.get("family") == "hf":
        _check_hf_model(name, model)
    pretrain = model.get("pretrain")
    if pretrain and pretrain["dataset"] not in config["datasets"]:
        raise ConfigError(
            f"config key 'models.{name}.pretrain.dataset': unknown dataset {pretrain['dataset']!r}"
        )
    if model.get("family") != "hf" and model["tokenizer"].get("wordlevel") and "config" not in model["language"]:
        raise ConfigError(
            f"config key 'models.{name}.tokenizer': a word-level tokenizer needs an inline "
            "language config (a pretrained LM comes with its own tokenizer id)"
        )


def load_experiments(config: dict, schema: dict, overrides: Mapping | None = None) -> dict[str, dict]:
    """Validate ``config`` and return every experiment, fully resolved, by name.

    ``overrides``: Snakemake's ``--config`` values, whose strings are first given their YAML types in
    ``config`` (:func:`read_overrides`), so that the rules see the same values.
    """
    if overrides:
        read_overrides(config, overrides, schema)
    validate_schema(config, schema)
    for name, spec in config["datasets"].items():
        if spec["kind"] == "mixture":
            _check_mixture(name, spec, config["datasets"])
    for name, model in config["models"].items():
        _check_model(name, model, config)
    experiments = {
        name: deep_merge(config["defaults"], overrides)
        for name, overrides in config["experiments"].items()
    }
    if config.get("sweep"):
        swept = expand_sweep(config["defaults"], config["sweep"])
        clash = set(swept) & set(experiments)
        if clash:
            raise ConfigError(f"config key 'sweep': names {sorted(clash)} clash with 'experiments'")
        experiments.update(swept)
    if not experiments:
        raise ConfigError("config key 'experiments': no experiment defined (and no sweep)")
    resolved_schema = {"$defs": schema["$defs"], "$ref": "#/$defs/resolved_experiment"}
    for name, experiment in experiments.items():
        try:
            validate_schema(experiment, resolved_schema)
        except ConfigError as error:
            raise ConfigError(f"experiment {name!r} (defaults merged with its overrides): {error}") from None
        fill_derived_parameters(experiment)
        _check_experiment(name, experiment, config)
        if config["datasets"][experiment["dataset"]]["splits"].get(experiment["eval"].get("select_split"), 1) == 0:
            # A dataset without a val split reports its last round; the tables' notes name such experiments.
            experiment["eval"]["select_split"] = None
    _check_baselines(experiments)
    for name, experiment in experiments.items():
        _check_warm_start(name, experiment, experiments)
    for name in sorted(used_datasets(config, experiments)):
        if config["datasets"][name]["kind"] == "folder":
            _check_folder(name, config["datasets"][name])
    return experiments


def defaults_experiment(config: dict, schema: dict) -> dict:
    """The config's ``defaults`` resolved and checked as an experiment of its own: the settings
    every experiment starts from, without any experiment's overrides."""
    return load_experiments({**config, "experiments": {"defaults": {}}, "sweep": None}, schema)["defaults"]


def config_hash(experiment: dict) -> str:
    """Short sha256 of the resolved experiment, recorded in lineage.jsonl."""
    canonical = json.dumps(experiment, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]
