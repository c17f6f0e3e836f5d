"""Round planning: which clients train in which round, what they train, when to evaluate.

Pure functions of the experiment config. The workflow calls them while it builds the DAG,
so client sampling is visible in ``snakemake -n`` and identical on every rerun. Each round
draws from its own seed, so adding rounds never changes the earlier ones.
"""

from __future__ import annotations

import functools
import hashlib
import json

import numpy as np

from fedumm.config import ConfigError, clients_per_round, num_clients
from fedumm.federated import attacks
from fedumm.models.groups import GROUPS


def derive_seed(*parts: object) -> int:
    """A 31-bit seed from the experiment seed and a path of names, e.g. (seed, "client", 3, 7)."""
    digest = hashlib.sha256(repr(parts).encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def sampled_clients(experiment: dict, round_index: int) -> list[int]:
    """Clients taking part in ``round_index`` (1-based): a seeded draw without replacement, less the
    clients the experiment's ``exclude`` drops from that round (after the draw, so excluding a
    client changes no other client's round)."""
    sampled = _sampled(num_clients(experiment), clients_per_round(experiment), experiment["seed"], round_index)
    excluded = excluded_clients(experiment, round_index)
    return [k for k in sampled if k not in excluded] if excluded else list(sampled)


def excluded_clients(experiment: dict, round_index: int) -> set[int]:
    """Clients dropped from ``round_index`` by ``exclude: [{round: r, clients: [...]}, ...]`` (recovery
    from a bad upload: the round is aggregated again without them, and every later round after it)."""
    return {k for entry in experiment.get("exclude") or () if entry["round"] == round_index for k in entry["clients"]}


def check_exclusions(name: str, experiment: dict) -> None:
    """Every round named by ``exclude`` keeps at least one sampled client."""
    for i, entry in enumerate(experiment.get("exclude") or ()):
        if not sampled_clients(experiment, entry["round"]):
            sampled = list(_sampled(num_clients(experiment), clients_per_round(experiment), experiment["seed"], entry["round"]))
            raise ConfigError(
                f"config key 'experiments.{name}.exclude[{i}]': round {entry['round']} samples clients "
                f"{sampled}, and excluding them all leaves nothing to aggregate"
            )


def client_attack(experiment: dict, client: int, round_index: int) -> dict | None:
    """The simulated attack ``client`` carries out in ``round_index`` (``fedumm.federated.attacks``), or None."""
    attack = experiment.get("attack")
    if not attack:
        return None
    attackers = _attackers(json.dumps(attack, sort_keys=True), num_clients(experiment), experiment["seed"])
    return attacks.client_attack(attack, list(attackers), client, round_index)


@functools.cache
def _attackers(attack_json: str, total: int, seed: int) -> tuple[int, ...]:
    return tuple(attacks.attacking_clients(json.loads(attack_json), total, derive_seed(seed, "attackers")))


@functools.cache
def _sampled(total: int, count: int, seed: int, round_index: int) -> tuple[int, ...]:
    # Cached: the DAG asks for every round's sample many times (e.g. for last_participation).
    if count >= total:
        return tuple(range(total))
    rng = np.random.default_rng(derive_seed(seed, "sample", round_index))
    return tuple(sorted(int(k) for k in rng.choice(total, size=count, replace=False)))


def last_participation(experiment: dict, client: int, round_index: int) -> int | None:
    """The latest round before ``round_index`` in which ``client`` trained, or None.

    Client-side algorithms (SCAFFOLD's control variate, MOON's previous local model)
    continue from the state a client wrote the last time it was sampled.
    """
    for earlier in range(round_index - 1, 0, -1):
        if client in sampled_clients(experiment, earlier):
            return earlier
    return None


def eval_rounds(experiment: dict) -> list[int]:
    """Round 0 (the starting point, unless ``eval.initial`` is false), every ``eval.every`` rounds, the last."""
    rounds = experiment["rounds"]
    every = experiment["eval"]["every"]
    initial = {0} if experiment["eval"]["initial"] else set()
    return sorted({*initial, rounds, *range(every, rounds + 1, every)})


def trained_groups(experiment: dict, round_index: int, generates: bool = False) -> list[str]:
    """Parameter groups a client trains in a round, per FedVLMBench's tuning modes.

    ``connector``: the connector only; ``lora``: the LoRA adapters (language, plus vision
    when vision targets are configured); ``joint``: both; ``two_stage``: the connector for
    the first ``connector_rounds`` rounds, then the LoRA adapters; ``full``: every weight of the
    connector and the language model (full fine-tuning, `fedumm.models.dense`). A model that ``generates``
    (its entry has a ``generation`` block) also trains its generation adapter in every round.
    """
    lora_groups = ["language"] + (["vision"] if experiment["lora"]["vision_target_modules"] else [])
    mode = experiment["tuning"]["mode"]
    if mode == "two_stage":
        mode = "connector" if round_index <= experiment["tuning"]["connector_rounds"] else "lora"
    groups = {"connector": ["connector"], "lora": lora_groups, "joint": ["connector", *lora_groups],
              "full": ["connector", "language"]}[mode]
    groups = [*groups, "generation"] if generates else groups
    return [group for group in GROUPS if group in groups]


def uses_feature_cache(experiment: dict, model_spec: dict) -> bool:
    """A frozen vision encoder lets clients read cached features instead of images; only the
    LLaVA recipe's encoder is reachable for that (``fedumm.models.families``)."""
    family = model_spec.get("family", "llava_recipe")
    return family == "llava_recipe" and not experiment["lora"]["vision_target_modules"]


def local_training(experiment: dict) -> dict:
    """The training config of one client job.

    The centralized baseline pools all data at one site and must take as many optimizer
    steps per round as all sampled federated clients together: its epochs (or steps) are
    scaled by the number (or fraction) of clients a federated round would sample.
    """
    train = dict(experiment["train"])
    if experiment["kind"] == "centralized":
        federated = {**experiment, "kind": "federated"}
        sampled = clients_per_round(federated)
        if train["local_steps"] is not None:
            train["local_steps"] *= sampled
        else:
            train["local_epochs"] *= sampled / experiment["clients"]
    return train
