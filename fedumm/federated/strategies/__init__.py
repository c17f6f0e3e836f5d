"""Aggregation strategies, selectable by name from the config (``strategy.name``).

``STRATEGIES`` lists every strategy class; adding a strategy is a new module in this package
(its server half, and its client half if it has one) plus its line here. The rules never change.
Importing this package loads neither torch (each module names it through ``fedumm.lazy``, so
it loads on first use) nor peft nor transformers: the DAG build and the aggregation jobs import it.
"""

from __future__ import annotations

import dataclasses

from fedumm.federated.strategies import (
    dp,
    fedavg,
    fedcmp,
    fedopt,
    fusion,
    lora,
    merging,
    moon,
    scaffold,
)
from fedumm.federated.strategies.base import Strategy

STRATEGIES: dict[str, type[Strategy]] = {
    cls.name: cls
    for cls in (
        fedavg.FedAvg,
        fedopt.FedAvgM,
        fedopt.FedAdam,
        fedopt.FedYogi,
        fedopt.FedAdagrad,
        fusion.FedUMMFusion,
        fedcmp.FedCMP,
        lora.LoraFedAvg,
        merging.Merge,
        dp.DPFedAvg,
        moon.Moon,
        scaffold.Scaffold,
    )
}


def strategy_class(name: str) -> type[Strategy]:
    if name not in STRATEGIES:
        raise ValueError(f"unknown strategy {name!r} (known: {', '.join(sorted(STRATEGIES))})")
    return STRATEGIES[name]


def build(config: dict) -> Strategy:
    """Instantiate the strategy named by ``config['name']`` with the remaining keys as parameters."""
    cls = strategy_class(config.get("name"))
    params = {key: value for key, value in config.items() if key != "name"}
    allowed = {f.name for f in dataclasses.fields(cls)}
    if "robust" in params and "robust" not in allowed:
        raise ValueError(f"strategy {cls.name!r} does not compose with a robust rule: {cls.robust_refusal}")
    unknown = sorted(set(params) - allowed)
    if unknown:
        raise ValueError(
            f"unknown parameter(s) {', '.join(unknown)} for strategy {cls.name!r} "
            f"(allowed: {', '.join(sorted(allowed)) or 'none'})"
        )
    return cls(**params)
