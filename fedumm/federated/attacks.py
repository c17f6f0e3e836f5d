"""Simulated byzantine clients, for testing robust rules (an experiment's ``attack:`` block).

An attacking client trains like an honest one and then changes what it uploads, or trains on
flipped labels. Everything happens inside that client's own job: honest clients' jobs never see
an attack, and the attacker's ``metrics.json`` records what it did (``attack``).

With Δ the attacker's honest update (its trained adapter minus the adapter it started from),
taken over the tensors it trained (those that changed), the upload's update Δ' is

    sign_flip   Δ' = −s·Δ                           (Fang et al., 2020; s = ``scale``, default 1)
    scale       Δ' = s·Δ                            (model-replacement boosting, Bagdasaryan et al., 2020)
    gaussian    Δ' ~ N(0, σ²) per coordinate        (Blanchard et al., 2017's Gaussian byzantine; σ = ``std``)
    constant    Δ' = c in every coordinate          (c = ``value``)
    collude     Δ' = s·‖Δ‖·u                        every colluder pushes the same unit direction u, drawn
                                                    from the round's attack seed: one value, at each
                                                    colluder's own norm (exact copies would be refused as
                                                    duplicate uploads, as a deployment refuses them)
    label_flip  trains on its data with each answer replaced by another answer of its data (a seeded
                derangement of its answer vocabulary), then uploads honestly

Which clients attack: ``clients`` (ids) or ``fraction`` (⌈fraction·N⌉ clients, drawn from the
experiment's seed), from round ``from_round`` on.
"""

from __future__ import annotations

import math

import numpy as np

from fedumm.artifacts import Weights
from fedumm.federated.strategies.robust import global_norm
from fedumm.lazy import LazyModule

torch = LazyModule("torch")  # loaded by the client jobs that attack, not by the DAG build (fedumm.lazy)

UPDATE_ATTACKS = ("sign_flip", "scale", "gaussian", "constant", "collude")
DATA_ATTACKS = ("label_flip",)
ATTACKS = UPDATE_ATTACKS + DATA_ATTACKS
DEFAULT_PARAMS = {"sign_flip": {"scale": 1.0}, "scale": {"scale": 10.0}, "gaussian": {"std": 0.01},
                  "constant": {"value": 1.0}, "collude": {"scale": 1.0}, "label_flip": {}}
SELECTION_KEYS = ("kind", "clients", "fraction", "from_round")


def attacker_count(fraction: float, num_clients: int) -> int:
    """⌈fraction·N⌉ (1e-9 absorbs float error such as 0.3 × 10 = 3.0000000000000004)."""
    return math.ceil(fraction * num_clients - 1e-9)


def attacking_clients(attack: dict, num_clients: int, seed: int) -> list[int]:
    """The attackers: ``attack['clients']``, or ⌈fraction·N⌉ clients drawn with ``seed``."""
    if "clients" in attack:
        return sorted(attack["clients"])
    rng = np.random.default_rng(seed)
    count = attacker_count(attack["fraction"], num_clients)
    return sorted(int(k) for k in rng.choice(num_clients, size=count, replace=False))


def client_attack(attack: dict | None, attackers: list[int], client: int, round_index: int) -> dict | None:
    """What ``client`` does in ``round_index``: the attack's kind and parameters, or None if honest."""
    if not attack or client not in attackers or round_index < attack.get("from_round", 1):
        return None
    kind = attack["kind"]
    params = {key: value for key, value in attack.items() if key not in SELECTION_KEYS}
    return {"kind": kind, **DEFAULT_PARAMS[kind], **params}


def attacked_update(start: Weights, trained: Weights, attack: dict, seed: int, round_seed: int) -> Weights:
    """The adapter an attacker uploads: ``start`` + Δ' over the tensors that changed in training.

    ``seed`` draws the attacker's own noise (gaussian), ``round_seed`` the direction every
    colluder shares in a round (collude).
    """
    changed = sorted(name for name in trained if not torch.equal(trained[name], start[name]))
    deltas = {name: trained[name].to(torch.float64) - start[name].to(torch.float64) for name in changed}
    kind = attack["kind"]
    if kind in ("sign_flip", "scale"):
        factor = -attack["scale"] if kind == "sign_flip" else attack["scale"]
        new = {name: factor * delta for name, delta in deltas.items()}
    elif kind == "gaussian":
        generator = torch.Generator().manual_seed(seed)
        new = {name: attack["std"] * torch.randn(delta.shape, generator=generator, dtype=torch.float64)
               for name, delta in deltas.items()}
    elif kind == "constant":
        new = {name: torch.full_like(delta, float(attack["value"])) for name, delta in deltas.items()}
    elif kind == "collude":
        generator = torch.Generator().manual_seed(round_seed)
        direction = {name: torch.randn(delta.shape, generator=generator, dtype=torch.float64)
                     for name, delta in deltas.items()}
        scale = attack["scale"] * global_norm(deltas) / (global_norm(direction) or 1.0)
        new = {name: scale * d for name, d in direction.items()}
    else:
        raise ValueError(f"{kind!r} is not an attack on the update (one of {', '.join(UPDATE_ATTACKS)})")
    return {name: (start[name].to(torch.float64) + new[name]).to(trained[name].dtype) if name in new
            else trained[name] for name in trained}


def flipped_labels(records: list[dict], seed: int) -> list[dict]:
    """``records`` with each ``multiple_choice_answer`` replaced through a seeded derangement of the
    answers they contain (every answer becomes another one; a single answer cannot be flipped)."""
    missing = [record["id"] for record in records if "multiple_choice_answer" not in record]
    if missing:
        raise ValueError(f"label_flip needs question records with an answer; {missing[0]} has none")
    vocabulary = sorted({record["multiple_choice_answer"] for record in records})
    if len(vocabulary) < 2:
        raise ValueError(f"label_flip needs at least two distinct answers, the client has {vocabulary}")
    order = [vocabulary[i] for i in np.random.default_rng(seed).permutation(len(vocabulary))]
    flipped = {answer: order[(i + 1) % len(order)] for i, answer in enumerate(order)}
    return [{**record, "multiple_choice_answer": flipped[record["multiple_choice_answer"]]} for record in records]
