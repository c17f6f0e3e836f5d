"""Server optimizers (FedAvgM, FedAdam, FedYogi, FedAdagrad) and FedUMM-Fusion on tiny tensors.

Expected values are worked out by hand from the equations of Flower 1.42.0
(``flwr/serverapp/strategy/fedadam.py`` etc.) over a three-round scenario in which two
clients with n = (1, 3) examples (p = (0.25, 0.75)) upload the global adapter plus fixed deltas,
so the pseudo-gradient of "a" is Δ_1 = (1, −1), Δ_2 = (0.25, 2), Δ_3 = (0, 0.5), and "b" never moves.
"""

from __future__ import annotations

import json
import math

import pytest
import safetensors.torch
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fedumm.federated.strategies import build, fedavg, fedopt
from fedumm.federated.strategies.base import ClientUpdate, Weights
from fedumm.federated.strategies.robust import ROBUST_RULES

ADAPTIVE = ("fedadam", "fedyogi", "fedadagrad")
ALL = (*ADAPTIVE, "fedavgm", "fedumm_fusion")

GLOBAL = {"a": torch.tensor([0.0, 1.0]), "b": torch.tensor([[3.0]])}
# Per round: the deltas of client 0 (n = 1) and client 1 (n = 3) on "a"; Δ = 0.25 d0 + 0.75 d1.
CLIENT_DELTAS = [
    ([-2.0, 2.0], [2.0, -2.0]),  # Δ_1 = (1, −1); the unweighted mean would be (0, 0)
    ([1.0, 2.0], [0.0, 2.0]),  # Δ_2 = (0.25, 2)
    ([0.0, 2.0], [0.0, 0.0]),  # Δ_3 = (0, 0.5)
]


def updates_for(weights: Weights, deltas, num_samples=(1, 3), scores=(0.5, 0.5)) -> list[ClientUpdate]:
    return [
        ClientUpdate(
            client=k,
            weights={"a": weights["a"] + torch.tensor(d), "b": weights["b"].clone()},
            num_samples=n,
            metrics={"val_vqa_accuracy": s},
        )
        for k, (d, n, s) in enumerate(zip(deltas, num_samples, scores))
    ]


def run(strategy, weights: Weights, state: Weights, rounds: range, **kwargs):
    """Aggregate the scenario's rounds; return the final weights and state and every round's result."""
    results = []
    for r in rounds:
        result = strategy.aggregate(weights, updates_for(weights, CLIENT_DELTAS[r - 1], **kwargs), state, r)
        weights, state = result.weights, result.server_state
        results.append(result)
    return weights, state, results


def assert_a(results, expected_rounds) -> None:
    for r, (result, expected) in enumerate(zip(results, expected_rounds), start=1):
        torch.testing.assert_close(result.weights["a"], torch.tensor(expected), rtol=0, atol=2e-7, msg=f"round {r}")
        assert torch.equal(result.weights["b"], GLOBAL["b"]), f"round {r}: b has zero deltas and must not move"


# --- hand-computed three-round trajectories --------------------------------------------------------


def test_fedadam_three_rounds():
    # β1 = 0.5, β2 = 0.75, η = 0.1, τ = 0.5.
    # a[0]: m = 0.5, 0.375, 0.1875       v = 0.25, 0.203125, 0.15234375
    # a[1]: m = −0.5, 0.75, 0.625        v = 0.25, 1.1875, 0.953125
    # η_t = η √(1 − β2^(t+1)) / (1 − β1^(t+1))  (Flower's exponent server_round + 1)
    e1 = 0.1 * math.sqrt(1 - 0.75**2) / (1 - 0.5**2)
    e2 = 0.1 * math.sqrt(1 - 0.75**3) / (1 - 0.5**3)
    e3 = 0.1 * math.sqrt(1 - 0.75**4) / (1 - 0.5**4)
    w1 = [e1 * 0.5 / (0.5 + 0.5), 1 + e1 * -0.5 / (0.5 + 0.5)]
    w2 = [w1[0] + e2 * 0.375 / (math.sqrt(0.203125) + 0.5), w1[1] + e2 * 0.75 / (math.sqrt(1.1875) + 0.5)]
    w3 = [w2[0] + e3 * 0.1875 / (math.sqrt(0.15234375) + 0.5), w2[1] + e3 * 0.625 / (math.sqrt(0.953125) + 0.5)]
    strategy = build({"name": "fedadam", "eta": 0.1, "beta_1": 0.5, "beta_2": 0.75, "tau": 0.5})
    _, state, results = run(strategy, GLOBAL, {}, range(1, 4))
    assert_a(results, [w1, w2, w3])
    # Pin the +1 in the bias correction: with β^t round 1 would move a[0] by 0.05.
    assert w1[0] == pytest.approx(0.0440958551844098)
    assert sorted(state) == ["m/a", "m/b", "t", "v/a", "v/b"]
    assert state["t"].dtype == torch.int64 and state["t"].item() == 3
    torch.testing.assert_close(state["m/a"], torch.tensor([0.1875, 0.625]))
    torch.testing.assert_close(state["v/a"], torch.tensor([0.15234375, 0.953125]))
    assert results[0].metrics == {"client_weights": {"0": 0.25, "1": 0.75}, "server_step": 1, "server_lr": e1}
    json.dumps(results[0].metrics)


def test_fedyogi_three_rounds():
    # β1 = 0.5, β2 = 0.75, η = 0.1, τ = 0.5; v_t = v − 0.25 Δ² sign(v − Δ²), m as in FedAdam.
    # a[0]: v = 0.25, 0.25 − 0.25·0.0625 = 0.234375 (v > Δ²: v shrinks), 0.234375 (Δ = 0)
    # a[1]: v = 0.25, 0.25 + 0.25·4 = 1.25, 1.25 − 0.25·0.25 = 1.1875
    w1 = [0.1 * 0.5 / 1.0, 1 - 0.1 * 0.5 / 1.0]
    w2 = [w1[0] + 0.1 * 0.375 / (math.sqrt(0.234375) + 0.5), w1[1] + 0.1 * 0.75 / (math.sqrt(1.25) + 0.5)]
    w3 = [w2[0] + 0.1 * 0.1875 / (math.sqrt(0.234375) + 0.5), w2[1] + 0.1 * 0.625 / (math.sqrt(1.1875) + 0.5)]
    strategy = build({"name": "fedyogi", "eta": 0.1, "beta_1": 0.5, "beta_2": 0.75, "tau": 0.5})
    _, state, results = run(strategy, GLOBAL, {}, range(1, 4))
    assert_a(results, [w1, w2, w3])
    torch.testing.assert_close(state["v/a"], torch.tensor([0.234375, 1.1875]))
    assert results[2].metrics["server_lr"] == 0.1


def test_fedadagrad_three_rounds():
    # η = 0.1, τ = 0.5; m_t = Δ_t (Flower fixes β1 = 0), v_t = v + Δ².
    # a[0]: v = 1, 1.0625, 1.0625    a[1]: v = 1, 5, 5.25
    w1 = [0.1 * 1 / (1 + 0.5), 1 + 0.1 * -1 / (1 + 0.5)]
    w2 = [w1[0] + 0.1 * 0.25 / (math.sqrt(1.0625) + 0.5), w1[1] + 0.1 * 2 / (math.sqrt(5) + 0.5)]
    w3 = [w2[0], w2[1] + 0.1 * 0.5 / (math.sqrt(5.25) + 0.5)]
    strategy = build({"name": "fedadagrad", "eta": 0.1, "tau": 0.5})
    _, state, results = run(strategy, GLOBAL, {}, range(1, 4))
    assert_a(results, [w1, w2, w3])
    assert sorted(state) == ["t", "v/a", "v/b"]
    torch.testing.assert_close(state["v/a"], torch.tensor([1.0625, 5.25]))


def test_fedavgm_three_rounds_exactly():
    # η_s = 0.5, μ = 0.5; g = −Δ, b_1 = g_1, b_t = μ b + g, w ← w − η_s b. All values are dyadic: exact.
    # a[0]: g = −1, −0.25, 0  b = −1, −0.75, −0.375  w = 0.5, 0.875, 1.0625
    # a[1]: g = 1, −2, −0.5   b = 1, −1.5, −1.25     w = 0.5, 1.25, 1.875
    strategy = build({"name": "fedavgm", "server_learning_rate": 0.5, "server_momentum": 0.5})
    _, state, results = run(strategy, GLOBAL, {}, range(1, 4))
    for result, expected in zip(results, [[0.5, 0.5], [0.875, 1.25], [1.0625, 1.875]]):
        assert torch.equal(result.weights["a"], torch.tensor(expected))
        assert torch.equal(result.weights["b"], GLOBAL["b"])
    assert sorted(state) == ["m/a", "m/b", "t"]
    assert torch.equal(state["m/a"], torch.tensor([-0.375, -1.25]))


def test_fedavgm_without_momentum_keeps_only_the_step_count():
    _, state, results = run(build({"name": "fedavgm", "server_learning_rate": 0.5}), GLOBAL, {}, range(1, 3))
    assert sorted(state) == ["t"] and state["t"].item() == 2
    # w ← w + 0.5 Δ: a = (0.5, 0.5), then (0.625, 1.5)
    assert torch.equal(results[1].weights["a"], torch.tensor([0.625, 1.5]))


def test_defaults_are_flowers():
    assert fedopt.FedAdam() == fedopt.FedAdam(eta=0.1, beta_1=0.9, beta_2=0.99, tau=1e-3)
    assert fedopt.FedYogi() == fedopt.FedYogi(eta=0.01, beta_1=0.9, beta_2=0.99, tau=1e-3)
    assert fedopt.FedAdagrad() == fedopt.FedAdagrad(eta=0.1, tau=1e-3)
    assert fedopt.FedAvgM() == fedopt.FedAvgM(server_learning_rate=1.0, server_momentum=0.0)


# --- example weights, fixed points, FedAvg equivalence ------------------------------------------------


def test_example_weights_are_respected():
    # Swapping the sample counts to (3, 1) flips Δ_1 to (−1, 1), so FedAdam's first step flips sign.
    strategy = build({"name": "fedadam", "eta": 0.1, "beta_1": 0.5, "beta_2": 0.75, "tau": 0.5})
    e1 = 0.1 * math.sqrt(1 - 0.75**2) / (1 - 0.5**2)
    _, _, results = run(strategy, GLOBAL, {}, range(1, 2), num_samples=(3, 1))
    torch.testing.assert_close(results[0].weights["a"], torch.tensor([-e1 * 0.5, 1 + e1 * 0.5]))
    assert results[0].metrics["client_weights"] == {"0": 0.75, "1": 0.25}
    # FedAvgM with η_s = 1, μ = 0 is the example-weighted mean: 0.25·(−2, 3) + 0.75·(2, −1) = (1, 0).
    _, _, results = run(build({"name": "fedavgm"}), GLOBAL, {}, range(1, 2))
    assert torch.equal(results[0].weights["a"], torch.tensor([1.0, 0.0]))


finite = st.floats(min_value=-10, max_value=10, allow_nan=False, width=32)


@settings(max_examples=25, deadline=None)
@given(name=st.sampled_from(ALL), values=st.lists(finite, min_size=3, max_size=3), n=st.integers(1, 50))
def test_identical_updates_equal_to_the_global_weights_are_a_fixed_point(name, values, n):
    weights = {"a": torch.tensor(values[:2]), "b": torch.tensor([[values[2]]])}
    strategy, state = build({"name": name}), {}
    for r in (1, 2, 3):
        updates = [
            ClientUpdate(client=k, weights={key: t.clone() for key, t in weights.items()}, num_samples=n + k,
                         metrics={"val_vqa_accuracy": 0.1 * k})
            for k in range(3)
        ]
        result = strategy.aggregate(weights, updates, state, r)
        for key in weights:
            assert torch.equal(result.weights[key], weights[key]), (name, r, key)
        state = result.server_state


@settings(max_examples=25, deadline=None)
@given(
    clients=st.lists(st.tuples(st.lists(finite, min_size=4, max_size=4), st.integers(1, 100)), min_size=1, max_size=4),
    start=st.lists(finite, min_size=4, max_size=4),
)
def test_fedavgm_with_unit_rate_and_no_momentum_is_fedavg_bitwise(clients, start):
    weights = {"w": torch.tensor(start).reshape(2, 2)}
    avgm, avg, state = build({"name": "fedavgm", "server_learning_rate": 1, "server_momentum": 0}), fedavg.FedAvg(), {}
    for r in (1, 2, 3):
        updates = [
            ClientUpdate(client=k, weights={"w": weights["w"] + r * torch.tensor(d).reshape(2, 2)}, num_samples=n)
            for k, (d, n) in enumerate(clients)
        ]
        expected = avg.aggregate(weights, updates, {}, r)
        result = avgm.aggregate(weights, updates, state, r)
        assert torch.equal(result.weights["w"], expected.weights["w"])
        assert result.metrics["client_weights"] == {str(k): p for k, p in expected.metrics["client_weights"].items()}
        weights, state = result.weights, result.server_state


# --- state: safetensors round trip, determinism, mismatches -----------------------------------------

CONFIGS = [
    {"name": "fedadam", "eta": 0.1, "beta_1": 0.5, "beta_2": 0.75, "tau": 0.5},
    {"name": "fedyogi"},
    {"name": "fedadagrad"},
    {"name": "fedavgm", "server_learning_rate": 0.7, "server_momentum": 0.9},
    {"name": "fedumm_fusion"},
]


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: c["name"])
def test_state_round_trips_through_safetensors_and_continuing_is_bitwise_identical(config):
    strategy = build(config)
    w1, s1, _ = run(strategy, GLOBAL, {}, range(1, 2))
    in_memory = run(strategy, w1, s1, range(2, 4))
    reloaded = run(
        build(config),
        safetensors.torch.load(safetensors.torch.save(w1)),
        safetensors.torch.load(safetensors.torch.save(s1)),
        range(2, 4),
    )
    for mine, theirs in zip(in_memory[:2], reloaded[:2]):
        assert sorted(mine) == sorted(theirs)
        for key in mine:
            assert mine[key].dtype == theirs[key].dtype and torch.equal(mine[key], theirs[key]), key
    assert [r.metrics for r in in_memory[2]] == [r.metrics for r in reloaded[2]]


def test_state_of_another_strategy_or_adapter_is_refused():
    _, avgm_state, _ = run(build({"name": "fedavgm", "server_momentum": 0.5}), GLOBAL, {}, range(1, 2))
    with pytest.raises(ValueError, match="server_state does not match"):
        run(build({"name": "fedadam"}), GLOBAL, avgm_state, range(2, 3))
    _, adam_state, _ = run(build({"name": "fedadam"}), GLOBAL, {}, range(1, 2))
    wrong_shape = {**adam_state, "m/b": torch.zeros(2)}
    with pytest.raises(ValueError, match="m/b has shape"):
        run(build({"name": "fedadam"}), GLOBAL, wrong_shape, range(2, 3))


# --- parameters -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "param", "value"),
    [
        ("fedadam", "eta", 0),
        ("fedadam", "tau", 0.0),
        ("fedadam", "beta_1", 1.0),
        ("fedadam", "beta_2", -0.1),
        ("fedyogi", "beta_2", 1),
        ("fedyogi", "eta", float("nan")),
        ("fedadagrad", "tau", "1e-3"),
        ("fedadagrad", "eta", True),
        ("fedavgm", "server_learning_rate", 0),
        ("fedavgm", "server_momentum", 1.0),
        ("fedavgm", "server_momentum", -0.5),
        ("fedumm_fusion", "mapping", "exp"),
        ("fedumm_fusion", "temperature", 0),
        ("fedumm_fusion", "power", -1.0),
        ("fedumm_fusion", "min_quality", -0.01),
        ("fedumm_fusion", "metric", ""),
    ],
)
def test_invalid_parameters_are_named(name, param, value):
    with pytest.raises(ValueError, match=param):
        build({"name": name, param: value})


@pytest.mark.parametrize("name", ALL)
def test_unknown_robust_rule_is_refused_at_build_time(name):
    with pytest.raises(ValueError, match="robust rule 'nope'"):
        build({"name": name, "robust": {"name": "nope"}})


def test_fedadagrad_has_no_beta_1():
    with pytest.raises(ValueError, match="beta_1"):
        build({"name": "fedadagrad", "beta_1": 0.9})


@pytest.mark.parametrize("name", ALL)
def test_robust_rules_compose(name, monkeypatch):
    """A rule that keeps client 0's delta makes every strategy behave as if client 0 were alone."""
    seen = []

    def first_client(deltas, weights, scale=1.0):
        seen.append(list(weights))
        return {key: scale * tensor for key, tensor in deltas[0].items()}

    monkeypatch.setitem(ROBUST_RULES, "first_client", first_client)
    robust = build({"name": name, "robust": {"name": "first_client", "scale": 1.0}})
    plain = build({"name": name})
    weights, state_r, state_p = GLOBAL, {}, {}
    for r in (1, 2, 3):
        updates = updates_for(weights, CLIENT_DELTAS[r - 1], scores=(0.8, 0.2))
        result = robust.aggregate(weights, updates, state_r, r)
        alone = plain.aggregate(weights, updates[:1], state_p, r)
        for key in weights:
            assert torch.equal(result.weights[key], alone.weights[key]), (r, key)
        weights, state_r, state_p = result.weights, result.server_state, alone.server_state
    # The rule receives the strategy's client weights: examples, or n_k q_k for fusion.
    expected = [0.8 / (0.8 + 3 * 0.2), 3 * 0.2 / (0.8 + 3 * 0.2)] if name == "fedumm_fusion" else [0.25, 0.75]
    assert seen[0] == pytest.approx(expected)


# --- FedUMM-Fusion ----------------------------------------------------------------------------------

SCORES = (0.5, 0.25, 0.0)
SAMPLES = (2, 4, 1)
OFFSETS = (1.0, 2.0, 4.0)


def fusion_round(config: dict, scores=SCORES):
    updates = [
        ClientUpdate(
            client=client,
            weights={"w": torch.tensor([10.0 + offset])},
            num_samples=n,
            metrics={"val_vqa_accuracy": s, "train_loss": 1.0},
        )
        for client, offset, n, s in zip((3, 5, 7), OFFSETS, SAMPLES, scores)
    ]
    return build({"name": "fedumm_fusion", **config}).aggregate({"w": torch.tensor([10.0])}, updates, {}, 1)


def expected_weights(*products: float) -> dict[str, float]:
    total = sum(products)
    return {client: p / total for client, p in zip(("3", "5", "7"), products)}


@pytest.mark.parametrize(
    ("config", "products"),
    [
        # linear: q = max(s, 0.125) = (0.5, 0.25, 0.125); n q = (1, 1, 0.125) → (8, 8, 1)/17
        ({"mapping": "linear", "min_quality": 0.125}, (1.0, 1.0, 0.125)),
        # default floor 0.01 keeps the client with score 0: n q = (1, 1, 0.01)
        ({}, (1.0, 1.0, 0.01)),
        # min_quality = 0 drops it: n q = (1, 1, 0)
        ({"min_quality": 0}, (1.0, 1.0, 0.0)),
        # power 2: s² = (0.25, 0.0625, 0) → q = (0.25, 0.125, 0.125); n q = (0.5, 0.5, 0.125) → (4, 4, 1)/9
        ({"mapping": "power", "power": 2, "min_quality": 0.125}, (0.5, 0.5, 0.125)),
        # softmax, T = 0.25: q = exp((s − 0.5)/0.25) = (1, e⁻¹, e⁻²); n q = (2, 4e⁻¹, e⁻²)
        ({"mapping": "softmax", "temperature": 0.25, "min_quality": 0}, (2.0, 4 * math.exp(-1), math.exp(-2))),
        # softmax with floor 0.5: q = (1, 0.5, 0.5); n q = (2, 2, 0.5) → (4, 4, 1)/9
        ({"mapping": "softmax", "temperature": 0.25, "min_quality": 0.5}, (2.0, 2.0, 0.5)),
    ],
)
def test_fusion_weights_are_proportional_to_samples_times_quality(config, products):
    result = fusion_round(config)
    expected = expected_weights(*products)
    assert result.metrics["client_weights"] == pytest.approx(expected, rel=1e-12)
    mean_offset = sum(expected[c] * o for c, o in zip(("3", "5", "7"), OFFSETS))
    torch.testing.assert_close(result.weights["w"], torch.tensor([10.0 + mean_offset]))
    assert result.server_state == {}
    json.dumps(result.metrics)


def test_fusion_reports_hand_computed_weights_and_qualities():
    result = fusion_round({"mapping": "linear", "min_quality": 0.125})
    assert result.metrics["client_weights"] == pytest.approx({"3": 8 / 17, "5": 8 / 17, "7": 1 / 17}, rel=1e-12)
    assert result.metrics["client_quality"] == {"3": 0.5, "5": 0.25, "7": 0.125}


def test_fusion_with_equal_scores_is_fedavg():
    result = fusion_round({}, scores=(0.3, 0.3, 0.3))
    assert result.metrics["client_weights"] == pytest.approx({"3": 2 / 7, "5": 4 / 7, "7": 1 / 7}, rel=1e-12)


def test_fusion_metric_key_is_configurable():
    updates = [ClientUpdate(client=k, weights={"w": torch.tensor([float(k)])}, num_samples=1,
                            metrics={"val_score": s}) for k, s in ((0, 0.25), (1, 0.75))]
    result = build({"name": "fedumm_fusion", "metric": "val_score"}).aggregate({"w": torch.zeros(1)}, updates, {}, 1)
    assert result.metrics["client_weights"] == {"0": 0.25, "1": 0.75}


@pytest.mark.parametrize(
    ("scores", "config", "match"),
    [
        ((0.5, 0.25, None), {}, r"client 7: metrics have no 'val_vqa_accuracy'"),
        ((0.5, "high", 0.1), {}, r"client 5: val_vqa_accuracy = 'high' is not a finite number"),
        ((0.5, float("nan"), 0.1), {}, r"client 5: val_vqa_accuracy = nan"),
        ((0.5, True, 0.1), {}, r"client 5"),
        ((0.5, -0.25, 0.1), {"mapping": "power"}, r"power quality mapping needs scores >= 0"),
        ((0.0, 0.0, 0.0), {"min_quality": 0}, r"every client has quality 0"),
    ],
)
def test_fusion_refuses_missing_or_invalid_scores(scores, config, match):
    with pytest.raises(ValueError, match=match):
        fusion_round(config, scores=scores)


def test_fusion_softmax_accepts_negative_scores():
    result = fusion_round({"mapping": "softmax", "temperature": 0.25, "min_quality": 0}, scores=(-0.5, -0.75, -1.0))
    assert result.metrics["client_weights"] == pytest.approx(
        expected_weights(2.0, 4 * math.exp(-1), math.exp(-2)), rel=1e-12
    )
