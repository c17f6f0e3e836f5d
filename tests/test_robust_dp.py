"""Robust aggregation rules (fedumm.federated.strategies.robust) and DP-FedAvg (fedumm.federated.strategies.dp)."""

from __future__ import annotations

import json
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fedumm.federated.strategies import build
from fedumm.federated.strategies.base import ClientUpdate
from fedumm.federated.strategies.dp import RDP_ORDERS, dp_epsilon
from fedumm.federated.strategies.robust import (
    check_robust_params,
    clip_delta,
    combine_deltas,
    global_norm,
    krum,
    krum_scores,
    median,
    multi_krum,
    norm_clip,
    trimmed_mean,
)

SHAPES = {
    "base_model.model.language_model.model.layers.0.self_attn.q_proj.lora_A.weight": (4, 8),
    "base_model.model.language_model.model.layers.0.self_attn.q_proj.lora_B.weight": (8, 4),
    "base_model.model.connector.0.bias": (8,),
}

Delta = dict[str, torch.Tensor]


def scalar_deltas(*values: float) -> list[Delta]:
    """One-coordinate deltas, for hand-computed cases."""
    return [{"w": torch.tensor([value], dtype=torch.float64)} for value in values]


def plane_deltas(*points: tuple[float, float]) -> list[Delta]:
    """Two-coordinate deltas with x and y in different tensors, so distances must combine keys."""
    return [
        {"x": torch.tensor([x], dtype=torch.float64), "y": torch.tensor([[y]], dtype=torch.float64)} for x, y in points
    ]


def distance(a: Delta, b: Delta) -> float:
    return global_norm({name: a[name].double() - b[name].double() for name in a})


# ---------------------------------------------------------------------------------------
# Robust rules against 2 attackers among 9 clients


def attack_scenario(attack: str) -> tuple[list[Delta], list[Delta], float]:
    """7 honest deltas near a common vector v, then 2 attackers; returns (honest, all, ‖v‖)."""
    generator = torch.Generator().manual_seed(0)
    v = {name: torch.randn(shape, generator=generator) for name, shape in SHAPES.items()}

    def near_v() -> Delta:
        return {name: v[name] + 0.02 * torch.randn(v[name].shape, generator=generator) for name in v}

    honest = [near_v() for _ in range(7)]
    factor = {"sign_flip": -10.0, "scaled": 100.0}[attack]
    attackers = [{name: factor * tensor for name, tensor in near_v().items()} for _ in range(2)]
    return honest, honest + attackers, global_norm(v)


def honest_mean(honest: list[Delta]) -> Delta:
    return {name: torch.stack([delta[name] for delta in honest]).mean(dim=0) for name in honest[0]}


@pytest.mark.parametrize("attack", ["sign_flip", "scaled"])
@pytest.mark.parametrize(
    "robust",
    [
        {"name": "krum", "f": 2},
        {"name": "multi_krum", "f": 2},
        {"name": "median"},
        {"name": "trimmed_mean", "beta": 0.25},
    ],
    ids=lambda robust: robust["name"],
)
def test_rule_keeps_the_honest_mean_under_attack(attack: str, robust: dict) -> None:
    honest, deltas, v_norm = attack_scenario(attack)
    weights = [1 / 9] * 9
    target = honest_mean(honest)
    assert distance(combine_deltas(deltas, weights, robust), target) < 0.05 * v_norm
    assert distance(combine_deltas(deltas, weights), target) > 2 * v_norm


@pytest.mark.parametrize("attack", ["sign_flip", "scaled"])
def test_multi_krum_selects_exactly_the_honest_clients(attack: str) -> None:
    honest, deltas, _ = attack_scenario(attack)
    result = multi_krum(deltas, [1 / 9] * 9, f=2)
    for name, tensor in honest_mean(honest).items():
        torch.testing.assert_close(result[name], tensor)


@pytest.mark.parametrize("attack", ["sign_flip", "scaled"])
def test_krum_returns_an_honest_clients_delta(attack: str) -> None:
    honest, deltas, _ = attack_scenario(attack)
    chosen = krum(deltas, [1 / 9] * 9, f=2)
    assert any(all(torch.equal(chosen[name], delta[name]) for name in chosen) for delta in honest)


@pytest.mark.parametrize("attack", ["sign_flip", "scaled"])
def test_norm_clip_bounds_the_attackers_influence(attack: str) -> None:
    # With the honest deltas unclipped, agg − mean_h = Σ_attackers p_k (clip(Δ_k) − mean_h),
    # so ‖agg − mean_h‖ ≤ 2 M Σ_attackers p_k = 2 M · 2/9.
    honest, deltas, _ = attack_scenario(attack)
    max_norm = max(global_norm(delta) for delta in honest)
    bound = 2 * max_norm * 2 / 9
    target = honest_mean(honest)
    robust = {"name": "norm_clip", "max_norm": max_norm}
    assert distance(combine_deltas(deltas, [1 / 9] * 9, robust), target) <= bound * (1 + 1e-6)
    assert distance(combine_deltas(deltas, [1 / 9] * 9), target) > 4 * bound


# ---------------------------------------------------------------------------------------
# Hand-computed cases


def test_krum_scores_on_a_line() -> None:
    # f = 0, n = 4: each score sums the 2 smallest squared distances to the others.
    # 0: {1, 9, 100} → 10;  1: {1, 4, 81} → 5;  3: {9, 4, 49} → 13;  10: {100, 81, 49} → 130.
    deltas = scalar_deltas(0, 1, 3, 10)
    assert krum_scores(deltas, f=0).tolist() == [10, 5, 13, 130]
    assert krum(deltas, [0.25] * 4, f=0)["w"].tolist() == [1]


def test_krum_scores_combine_all_tensors() -> None:
    # Points (0,0), (3,4), (0,1), (1,0). Squared distances 01: 25, 02: 1, 03: 1, 12: 18,
    # 13: 20, 23: 2 → scores 1+1, 18+20, 1+2, 1+2.
    deltas = plane_deltas((0, 0), (3, 4), (0, 1), (1, 0))
    assert krum_scores(deltas, f=0).tolist() == [2, 38, 3, 3]
    chosen = krum(deltas, [0.25] * 4, f=0)
    assert (chosen["x"].item(), chosen["y"].item()) == (0, 0)


def test_krum_neighbour_count_shrinks_with_f() -> None:
    # n = 5, f = 1: 2 nearest neighbours. Values 0, 1, 2, 3, 50:
    # 0: {1, 4} → 5;  1: {1, 1} → 2;  2: {1, 1} → 2;  3: {1, 4} → 5;  50: {2209, 2304} → 4513.
    deltas = scalar_deltas(0, 1, 2, 3, 50)
    assert krum_scores(deltas, f=1).tolist() == [5, 2, 2, 5, 4513]
    # Tie between clients 1 and 2: the first listed wins.
    assert krum(deltas, [0.2] * 5, f=1)["w"].tolist() == [1]


def test_multi_krum_renormalises_the_example_weights() -> None:
    deltas = plane_deltas((0, 0), (3, 4), (0, 1), (1, 0))
    weights = [0.1, 0.2, 0.3, 0.4]
    # m = 3 keeps scores 2, 3, 3 (clients 0, 2, 3) with weights 0.1, 0.3, 0.4 over 0.8:
    # x = 0.4 / 0.8 = 0.5, y = 0.3 / 0.8 = 0.375.
    result = multi_krum(deltas, weights, f=0, m=3)
    assert result["x"].item() == pytest.approx(0.5)
    assert result["y"].item() == pytest.approx(0.375)
    # m = 2: the tie between clients 2 and 3 (score 3) goes to client 2: y = 0.3 / 0.4.
    result = multi_krum(deltas, weights, f=0, m=2)
    assert (result["x"].item(), result["y"].item()) == (0, pytest.approx(0.75))


def test_multi_krum_defaults_to_n_minus_f() -> None:
    # n = 5, f = 1 → m = 4: drops only the outlier 50 (scores above); unweighted mean of 0..3.
    assert multi_krum(scalar_deltas(0, 1, 2, 3, 50), [0.2] * 5, f=1)["w"].item() == pytest.approx(1.5)


def test_median_odd_and_even() -> None:
    odd = [{"w": torch.tensor([3.0, -1.0])}, {"w": torch.tensor([1.0, 5.0])}, {"w": torch.tensor([2.0, 0.0])}]
    assert median(odd, [1 / 3] * 3)["w"].tolist() == [2, 0]
    # Even n: mean of the two middle values (torch.median would give 2, the lower one).
    even = scalar_deltas(4, 1, 3, 2)
    assert median(even, [0.25] * 4)["w"].tolist() == [2.5]


def test_median_ignores_example_weights_and_keeps_dtype() -> None:
    deltas = [{"w": torch.tensor([value], dtype=torch.bfloat16)} for value in (1.0, 2.0, 100.0)]
    result = median(deltas, [0.98, 0.01, 0.01])["w"]
    assert result.dtype == torch.bfloat16 and result.item() == 2


@pytest.mark.parametrize(
    ("beta", "expected"),
    [
        (0.0, 6 / 5),  # plain unweighted mean of -100, 1, 2, 3, 100
        (0.2, 2.0),  # ⌊0.2·5⌋ = 1 from each end: mean(1, 2, 3)
        (0.39, 2.0),  # ⌊1.95⌋ = 1
        (0.4, 2.0),  # ⌊2⌋ = 2 from each end: the median
    ],
)
def test_trimmed_mean_hand_computed(beta: float, expected: float) -> None:
    deltas = scalar_deltas(3, -100, 100, 1, 2)
    assert trimmed_mean(deltas, [0.2] * 5, beta=beta)["w"].item() == pytest.approx(expected)


def test_trimmed_mean_floors_beta_n_as_written() -> None:
    # 0.29 × 100 = 28.999999999999996 in floating point; 29 values go from each end.
    deltas = scalar_deltas(*(float(i * i) for i in range(100)))
    expected = sum(i * i for i in range(29, 71)) / 42
    assert trimmed_mean(deltas, [0.01] * 100, beta=0.29)["w"].item() == pytest.approx(expected, rel=1e-12)


def test_norm_clip_hand_computed() -> None:
    # (3, 4) has norm 5 → (1.5, 2) at max_norm 2.5; (0, 1) stays. Mean with weights ½, ½.
    deltas = plane_deltas((3, 4), (0, 1))
    result = norm_clip(deltas, [0.5, 0.5], max_norm=2.5)
    assert (result["x"].item(), result["y"].item()) == (pytest.approx(0.75), pytest.approx(1.5))


def test_clip_delta_scales_to_exactly_max_norm() -> None:
    generator = torch.Generator().manual_seed(1)
    delta = {name: torch.randn(shape, generator=generator) for name, shape in SHAPES.items()}
    max_norm = global_norm(delta) / 10
    assert global_norm(clip_delta(delta, max_norm)) == pytest.approx(max_norm, rel=1e-6)
    assert clip_delta(delta, 2 * global_norm(delta)) == delta


# ---------------------------------------------------------------------------------------
# Properties

values = st.floats(min_value=-1e3, max_value=1e3, allow_nan=False, width=32)


@settings(max_examples=25, deadline=None)
@given(st.lists(st.lists(values, min_size=3, max_size=3), min_size=1, max_size=9), st.randoms())
def test_coordinatewise_rules_are_permutation_invariant_and_within_range(rows: list[list[float]], rng) -> None:
    deltas = [{"w": torch.tensor(row, dtype=torch.float64)} for row in rows]
    shuffled = list(deltas)
    rng.shuffle(shuffled)
    weights = [1 / len(rows)] * len(rows)
    stacked = torch.stack([delta["w"] for delta in deltas])
    for rule in (median, lambda d, w: trimmed_mean(d, w, beta=0.3)):
        result = rule(deltas, weights)["w"]
        assert torch.equal(result, rule(shuffled, weights)["w"])
        assert bool((stacked.min(dim=0).values <= result).all() and (result <= stacked.max(dim=0).values).all())


@settings(max_examples=30, deadline=None)
@given(st.lists(st.lists(values, min_size=2, max_size=2), min_size=3, max_size=7), st.data())
def test_multi_krum_with_all_clients_is_the_weighted_mean(rows: list[list[float]], data) -> None:
    deltas = [{"w": torch.tensor(row, dtype=torch.float64)} for row in rows]
    counts = data.draw(st.lists(st.integers(1, 100), min_size=len(rows), max_size=len(rows)))
    weights = [count / sum(counts) for count in counts]
    torch.testing.assert_close(multi_krum(deltas, weights, f=0, m=len(rows))["w"], combine_deltas(deltas, weights)["w"])


# ---------------------------------------------------------------------------------------
# Parameter validation


@pytest.mark.parametrize(
    ("robust", "message"),
    [
        ({"name": "krum"}, "needs parameter.*f"),
        ({"name": "krum", "f": -1}, "parameter f"),
        ({"name": "krum", "f": 1.5}, "parameter f"),
        ({"name": "krum", "f": True}, "parameter f"),
        ({"name": "krum", "f": 1, "beta": 0.1}, "unknown parameter.*beta"),
        ({"name": "multi_krum", "f": 1, "m": 0}, "parameter m"),
        ({"name": "median", "f": 1}, "unknown parameter.*f"),
        ({"name": "trimmed_mean", "beta": 0.5}, "parameter beta"),
        ({"name": "trimmed_mean", "beta": -0.1}, "parameter beta"),
        ({"name": "trimmed_mean", "beta": "0.1"}, "parameter beta"),
        ({"name": "norm_clip", "max_norm": 0}, "parameter max_norm"),
        ({"name": "norm_clip", "max_norm": math.inf}, "parameter max_norm"),
        ({"name": "norm_clip", "max_norm": math.nan}, "parameter max_norm"),
        ({"name": "bulyan"}, "unknown robust rule 'bulyan'"),
    ],
)
def test_check_robust_params_names_the_problem(robust: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        check_robust_params(robust)


@pytest.mark.parametrize(
    "robust",
    [
        {"name": "krum", "f": 3},
        {"name": "multi_krum", "f": 0, "m": None},
        {"name": "median"},
        {"name": "trimmed_mean", "beta": 0},
        {"name": "norm_clip", "max_norm": 1},
    ],
)
def test_check_robust_params_accepts_valid_configs(robust: dict) -> None:
    check_robust_params(robust)


def test_rules_check_the_number_of_clients() -> None:
    deltas = scalar_deltas(*range(7))
    with pytest.raises(ValueError, match=r"krum: parameter f=3 needs n > 2f \+ 2 = 8 clients, got n=7"):
        krum(deltas, [1 / 7] * 7, f=3)
    with pytest.raises(ValueError, match=r"multi_krum: parameter f=3 .* n=7"):
        multi_krum(deltas, [1 / 7] * 7, f=3)
    with pytest.raises(ValueError, match=r"multi_krum: parameter m=8 exceeds the number of clients n=7"):
        multi_krum(deltas, [1 / 7] * 7, f=1, m=8)
    with pytest.raises(ValueError, match="trimmed_mean: parameter beta"):
        trimmed_mean(deltas, [1 / 7] * 7, beta=0.6)


def test_fedavg_uses_a_registered_rule() -> None:
    strategy = build({"name": "fedavg", "robust": {"name": "median"}})
    global_weights = {"w": torch.zeros(1)}
    updates = [
        ClientUpdate(client=k, weights={"w": torch.tensor([value])}, num_samples=10)
        for k, value in enumerate((1.0, 2.0, 90.0))
    ]
    assert strategy.aggregate(global_weights, updates, {}, 1).weights["w"].tolist() == [2]


# ---------------------------------------------------------------------------------------
# DP-FedAvg

DP = {"name": "dp_fedavg", "clip_norm": 0.5, "noise_multiplier": 1.3, "delta": 1e-5, "sampling_rate": 0.1, "seed": 7}


def dp_round(config: dict, updates: list[ClientUpdate], global_weights: Delta, round_index: int = 1):
    return build(config).aggregate(global_weights, updates, {}, round_index)


def noise_setup(size: int) -> tuple[Delta, list[ClientUpdate]]:
    """4 clients over 2·size coordinates in two tensors; clients 1 and 3 exceed the clip norm 0.5."""
    generator = torch.Generator().manual_seed(3)
    global_weights = {
        "a.lora_A.weight": torch.randn(400, size // 400, generator=generator),
        "b.bias": torch.randn(size, generator=generator),
    }
    updates = []
    for client, norm in enumerate((0.2, 3.0, 0.49, 50.0)):
        direction = {name: torch.randn(t.shape, generator=generator) for name, t in global_weights.items()}
        scale = norm / global_norm(direction)
        weights = {name: global_weights[name] + scale * direction[name] for name in direction}
        updates.append(ClientUpdate(client=client, weights=weights, num_samples=client + 1))
    return global_weights, updates


def clipped_mean(global_weights: Delta, updates: list[ClientUpdate], clip_norm: float) -> Delta:
    """(1/m) Σ_k Δ_k min(1, C/‖Δ_k‖), computed independently in float64."""
    total = {name: torch.zeros(t.shape, dtype=torch.float64) for name, t in global_weights.items()}
    for update in updates:
        delta = {name: update.weights[name].double() - global_weights[name].double() for name in global_weights}
        norm = math.sqrt(sum(float((t * t).sum()) for t in delta.values()))
        for name in total:
            total[name] += delta[name] * min(1.0, clip_norm / norm) / len(updates)
    return total


def test_dp_noise_has_std_z_c_over_m() -> None:
    global_weights, updates = noise_setup(100_000)
    result = dp_round(DP, updates, global_weights)
    mean = clipped_mean(global_weights, updates, DP["clip_norm"])
    noise = torch.cat(
        [
            (result.weights[name].double() - global_weights[name].double() - mean[name]).reshape(-1)
            for name in global_weights
        ]
    )
    expected = 1.3 * 0.5 / 4
    assert noise.numel() == 200_000
    assert float(noise.std()) == pytest.approx(expected, rel=0.01)
    assert abs(float(noise.mean())) < 4 * expected / math.sqrt(noise.numel())
    assert result.metrics["dp_noise_std"] == pytest.approx(expected)
    assert result.metrics["clipped_clients"] == [1, 3]
    assert result.server_state == {}


# z = 1e-9 spends an enormous ε, whose optimal Rényi order is the smallest on the grid.
@pytest.mark.filterwarnings("ignore:Optimal order is the smallest alpha")
def test_dp_clips_a_large_client_to_norm_c() -> None:
    # One client with norm 10·C and negligible noise: the step is its clipped delta.
    global_weights = {"w": torch.zeros(3, 4), "b": torch.zeros(5)}
    generator = torch.Generator().manual_seed(5)
    raw = {name: torch.randn(t.shape, generator=generator) for name, t in global_weights.items()}
    weights = {name: t * (10 * 0.5 / global_norm(raw)) for name, t in raw.items()}
    config = DP | {"noise_multiplier": 1e-9, "sampling_rate": 1.0}
    result = dp_round(config, [ClientUpdate(client=4, weights=weights, num_samples=3)], global_weights)
    assert global_norm(result.weights) == pytest.approx(0.5, rel=1e-6)
    assert result.metrics["clipped_clients"] == [4]


def test_dp_noise_is_deterministic_per_seed_and_round() -> None:
    global_weights, updates = noise_setup(2_000)
    first = dp_round(DP, updates, global_weights, round_index=2).weights
    again = dp_round(DP, updates, global_weights, round_index=2).weights
    later = dp_round(DP, updates, global_weights, round_index=3).weights
    reseeded = dp_round(DP | {"seed": 8}, updates, global_weights, round_index=2).weights
    assert all(torch.equal(first[name], again[name]) for name in first)
    assert not any(torch.equal(first[name], later[name]) for name in first)
    assert not any(torch.equal(first[name], reseeded[name]) for name in first)


def test_dp_metrics_report_the_accountants_epsilon() -> None:
    global_weights = {"w": torch.zeros(2)}
    updates = [ClientUpdate(client=0, weights={"w": torch.ones(2)}, num_samples=1)]
    result = dp_round(DP, updates, global_weights, round_index=20)
    assert result.metrics["dp_epsilon"] == dp_epsilon(1.3, 0.1, 1e-5, 20)
    assert result.metrics["dp_delta"] == 1e-5
    json.dumps(result.metrics)


def balle_conversion(rdp: float, order: float, delta: float) -> float:
    """(ε, δ) from RDP at one order (Balle et al., 2020, Thm. 21)."""
    return rdp - (math.log(delta) + math.log(order)) / (order - 1) + math.log((order - 1) / order)


def sampled_gaussian_rdp(q: float, z: float, order: int) -> float:
    """RDP of one Poisson-sampled Gaussian step at integer order α (Mironov et al., 2019, Sec. 3.3):
    log(Σ_k C(α,k) (1−q)^(α−k) q^k exp((k²−k)/(2z²))) / (α−1)."""
    terms = [
        math.lgamma(order + 1) - math.lgamma(k + 1) - math.lgamma(order - k + 1)
        + (order - k) * math.log1p(-q) + k * math.log(q) + (k * k - k) / (2 * z * z)
        for k in range(order + 1)
    ]
    top = max(terms)
    return (top + math.log(sum(math.exp(t - top) for t in terms))) / (order - 1)


@pytest.mark.parametrize(
    ("z", "q", "delta", "rounds"), [(1.1, 0.01, 1e-5, 100), (0.8, 0.1, 1e-6, 10), (2.0, 0.05, 1e-5, 1)]
)
def test_epsilon_matches_an_independent_sampled_gaussian(z: float, q: float, delta: float, rounds: int) -> None:
    orders = tuple(range(2, 65))
    expected = min(balle_conversion(rounds * sampled_gaussian_rdp(q, z, a), a, delta) for a in orders)
    assert dp_epsilon(z, q, delta, rounds, orders=orders) == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize(("z", "delta", "rounds"), [(1.0, 1e-5, 1), (3.0, 1e-6, 50)])
def test_epsilon_without_subsampling_is_the_gaussian_closed_form(z: float, delta: float, rounds: int) -> None:
    # q = 1: RDP of the Gaussian mechanism is α/(2z²) per round (Mironov, 2017, Prop. 7).
    expected = min(balle_conversion(rounds * a / (2 * z * z), a, delta) for a in RDP_ORDERS)
    assert dp_epsilon(z, 1.0, delta, rounds) == pytest.approx(expected, rel=1e-12)


def test_epsilon_equals_opacus_accountant_stepped_round_by_round() -> None:
    from opacus.accountants import RDPAccountant

    accountant = RDPAccountant()
    for rounds in range(1, 31):
        accountant.step(noise_multiplier=1.1, sample_rate=0.05)
        if rounds in (1, 30):
            assert dp_epsilon(1.1, 0.05, 1e-5, rounds) == pytest.approx(
                accountant.get_epsilon(delta=1e-5, alphas=list(RDP_ORDERS)), rel=1e-12
            )


def test_epsilon_grows_with_rounds_and_shrinks_with_noise() -> None:
    by_rounds = [dp_epsilon(1.1, 0.1, 1e-5, t) for t in (1, 2, 10, 100)]
    assert by_rounds == sorted(by_rounds) and len(set(by_rounds)) == len(by_rounds)
    by_noise = [dp_epsilon(z, 0.1, 1e-5, 10) for z in (0.7, 1.0, 4.0)]
    assert by_noise == sorted(by_noise, reverse=True) and len(set(by_noise)) == len(by_noise)


@pytest.mark.parametrize(
    ("override", "parameter"),
    [
        ({"clip_norm": 0}, "clip_norm"),
        ({"clip_norm": math.inf}, "clip_norm"),
        ({"noise_multiplier": 0.0}, "noise_multiplier"),
        ({"noise_multiplier": "1"}, "noise_multiplier"),
        ({"delta": 0}, "delta"),
        ({"delta": 1.0}, "delta"),
        ({"sampling_rate": 0}, "sampling_rate"),
        ({"sampling_rate": 1.5}, "sampling_rate"),
        ({"seed": -1}, "seed"),
        ({"seed": 1.0}, "seed"),
    ],
)
def test_dp_parameter_validation_names_the_parameter(override: dict, parameter: str) -> None:
    with pytest.raises(ValueError, match=f"dp_fedavg: parameter {parameter} "):
        build(DP | override)

