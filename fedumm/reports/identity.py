"""What a run is: its label in tables and figures, and its resolved config on disk.

Two experiments that share a strategy name can be different methods (FedAvg with a proximal term is
FedProx; FedAvg with a robust rule is a different aggregator; a strategy's parameters change what it
does), so results are labelled by the strategy *with* what distinguishes it, and each experiment
keeps the config it ran with in ``results/{exp}/config.yaml``, a file that reruns it alone
(``snakemake --configfile results/{exp}/config.yaml``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from fedumm.config import used_datasets
from fedumm.io import atomic_write_text

# Keys of a resolved experiment that are table axes (clients, α) or replicate it (seed), not part
# of what a method is.
_AXIS_KEYS = ("seed", "clients", "partition.alpha")


def _format_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True, separators=(",", ":"))
    return str(value)


def _parameters(params: Mapping[str, Any]) -> str:
    return ", ".join(f"{key}={_format_value(value)}" for key, value in params.items())


def strategy_label(experiment: Mapping[str, Any]) -> str | None:
    """A federated experiment's method: the strategy name with its parameters, a robust rule after "+".

    FedAvg with ``train.prox_mu`` > 0 is FedProx (Li et al., 2020): "fedprox (μ=0.01)"; another
    strategy with a proximal term shows it as a parameter ("fedadam (μ=0.01, eta=0.01)").
    None for centralized and local experiments, which aggregate nothing.
    """
    if experiment["kind"] != "federated":
        return None
    strategy = dict(experiment["strategy"])
    name = strategy.pop("name")
    robust = strategy.pop("robust", None)
    mu = experiment["train"]["prox_mu"]
    params = ({"μ": mu} if mu else {}) | strategy
    if mu and name == "fedavg":
        name = "fedprox"
    label = name + (f" ({_parameters(params)})" if params else "")
    if robust:
        robust = dict(robust)
        label += " + " + robust.pop("name") + (f" ({_parameters(robust)})" if robust else "")
    return label


def flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested keys as dotted paths ("train.lr"); lists and strategies stay whole values."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping) and key != "strategy":
            flat.update(flatten(value, path + "."))
        else:
            flat[path] = value
    return flat


def distinguishing_parameters(experiments: Sequence[Mapping[str, Any]]) -> list[str]:
    """The dotted keys whose values differ between ``experiments`` (resolved), seed and table axes
    (clients, α) left out: what separates runs that a table would otherwise put in one cell."""
    flats = [flatten(experiment) for experiment in experiments]
    keys = dict.fromkeys(key for flat in flats for key in flat)
    return [
        key for key in keys
        if key not in _AXIS_KEYS
        and len({_format_value(flat.get(key)) for flat in flats}) > 1
    ]


def parameters_label(experiment: Mapping[str, Any], keys: Sequence[str]) -> str:
    """``key=value`` of an experiment for the given dotted keys ("train.lr=0.001, lora.r=4")."""
    flat = flatten(experiment)
    return _parameters({key: flat.get(key) for key in keys})


def resolved_config(name: str, experiment: dict, config: Mapping[str, Any]) -> dict:
    """The config that reruns ``name`` alone: the resolved experiment (defaults merged, derived
    parameters filled) with the datasets, model and embedder entries it uses."""
    embedder = experiment["partition"].get("embedder")
    return {
        "datasets": {dataset: config["datasets"][dataset] for dataset in sorted(used_datasets(config, {name: experiment}))},
        "models": {experiment["model"]: config["models"][experiment["model"]]},
        **({"embedders": {embedder: config["embedders"][embedder]}} if embedder else {}),
        "experiments": {name: experiment},
    }


def write_resolved_config(path: Path | str, resolved: Mapping[str, Any]) -> None:
    """``resolved`` as YAML, keys in their config order, atomically."""
    header = "# The resolved config of this experiment; `snakemake --configfile <this file>` reruns it alone.\n"
    atomic_write_text(path, header + yaml.safe_dump(dict(resolved), sort_keys=False, allow_unicode=True))
