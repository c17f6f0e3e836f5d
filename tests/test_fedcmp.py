"""Fed-CMP (fedumm.federated.strategies.fedcmp) and the client-side alignment error (fedumm.models.alignment)."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file, save_file

from fedumm.federated.strategies import build, fedcmp
from fedumm.federated.strategies.base import ClientUpdate
from fedumm.federated.strategies.fedavg import FedAvg
from fedumm.federated.strategies.fedcmp import (
    BASIS,
    SIGMA,
    FedCMP,
    align_signs,
    canonical_decomposition,
    column_dissimilarity,
    momentum_coefficient,
    opm_step,
    polar,
)
from fedumm.models.adapters import adapter_config, attach_adapter
from fedumm.models.alignment import (
    alignment_error,
    mean_alignment_error,
    sample_alignment_errors,
)
from fedumm.models.vlm import build_vlm, unwrap

OFF = {"canonical": False, "reliability": False, "opm": False}
LORA_A = "base_model.model.language_model.model.layers.0.self_attn.q_proj.lora_A.weight"
LORA_B = "base_model.model.language_model.model.layers.0.self_attn.q_proj.lora_B.weight"
CONNECTOR_W = "base_model.model.connector.0.weight"
CONNECTOR_B = "base_model.model.connector.0.bias"


def adapter(seed: int, scale: float = 1.0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    shapes = {LORA_A: (4, 12), LORA_B: (10, 4), CONNECTOR_W: (10, 6), CONNECTOR_B: (10,)}
    return {name: scale * torch.randn(shape, generator=g) for name, shape in shapes.items()}


def updates_around(global_weights, seeds, errors=None, samples=None, scale=0.1):
    out = []
    for index, seed in enumerate(seeds):
        noise = adapter(seed, scale)
        metrics = {} if errors is None else {"alignment_error": errors[index]}
        out.append(ClientUpdate(
            client=seed, weights={n: t + noise[n] for n, t in global_weights.items()},
            num_samples=10 + seed if samples is None else samples[index], metrics=metrics))
    return out


def orthonormal(matrix: torch.Tensor, atol: float = 1e-12) -> bool:
    eye = torch.eye(matrix.shape[1], dtype=matrix.dtype)
    return torch.allclose(matrix.T @ matrix, eye, atol=atol)


def rotation(theta: float) -> torch.Tensor:
    c, s = math.cos(theta), math.sin(theta)
    return torch.tensor([[c, -s], [s, c]], dtype=torch.float64)


# ----------------------------------------------------------------------------- reduction to FedAvg


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), clients=st.integers(1, 5))
def test_all_switches_off_is_fedavg_bit_for_bit(seed, clients):
    global_weights = adapter(seed)
    updates = updates_around(global_weights, range(seed, seed + clients))
    expected = FedAvg().aggregate(global_weights, updates, {}, 1)
    result = FedCMP(**OFF).aggregate(global_weights, updates, {}, 1)
    assert all(torch.equal(result.weights[n], expected.weights[n]) for n in global_weights)
    assert result.server_state == {}
    assert result.metrics["client_weights"] == {str(k): v for k, v in expected.metrics["client_weights"].items()}


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000), clients=st.integers(1, 5))
def test_canonical_space_alone_is_the_weighted_mean(seed, clients):
    # W_k = Ũ diag(σ̃) C_k^T exactly, so a linear fusion of the C_k is the same fusion of the W_k.
    global_weights = adapter(seed)
    updates = updates_around(global_weights, range(seed, seed + clients), errors=[0.1 * k for k in range(clients)])
    for reliability in (False, True):
        raw = FedCMP(canonical=False, reliability=reliability, opm=False).aggregate(global_weights, updates, {}, 1)
        canonical = FedCMP(canonical=True, reliability=reliability, opm=False).aggregate(global_weights, updates, {}, 1)
        for name in global_weights:
            assert torch.allclose(canonical.weights[name], raw.weights[name], atol=1e-6, rtol=0), name
        assert canonical.server_state == {}


def test_canonical_decomposition_reconstructs_every_client_and_fixes_signs():
    matrices = [adapter(k)[CONNECTOR_W] for k in range(3)]
    basis, sigma, coefficients = canonical_decomposition(matrices)
    assert basis.shape == (10, 10) and sigma.shape == (10,) and coefficients[0].shape == (6, 10)
    assert orthonormal(basis)
    for matrix, coefficient in zip(matrices, coefficients):
        assert torch.allclose((basis * sigma) @ coefficient.T, matrix.double(), atol=1e-12)
    # the largest-magnitude entry of every basis column is positive, whatever LAPACK returned
    picked = basis.gather(0, basis.abs().argmax(dim=0, keepdim=True))
    assert bool((picked > 0).all())
    # identical clients: σ̃ are the client's own singular values (the K^{-1/2} normalisation)
    same = canonical_decomposition([matrices[0]] * 4)[1]
    assert torch.allclose(same[:6], torch.linalg.svdvals(matrices[0].double()), atol=1e-12)


# ----------------------------------------------------------------------------- reliability (Eq. 4)


def test_reliability_weights_on_a_hand_made_case():
    global_weights = {CONNECTOR_B: torch.zeros(2)}
    updates = [
        ClientUpdate(3, {CONNECTOR_B: torch.tensor([1.0, 0.0])}, 100, {"alignment_error": 0.5}),  # m = 1
        ClientUpdate(7, {CONNECTOR_B: torch.tensor([0.0, 2.0])}, 1, {"alignment_error": 1.0}),  # m = 4
    ]
    result = FedCMP(opm=False, lam=1.0).aggregate(global_weights, updates, {}, 1)
    first = math.exp(-0.5) / (math.exp(-0.5) + 4 * math.exp(-1.0))
    assert result.metrics["client_weights"] == pytest.approx({"3": first, "7": 1 - first}, rel=1e-12)
    assert result.metrics["update_norm_sq"] == {"3": 1.0, "7": 4.0}
    assert result.metrics["alignment_error"] == {"3": 0.5, "7": 1.0}
    assert torch.allclose(result.weights[CONNECTOR_B], torch.tensor([first, 2 * (1 - first)]))
    # RWF-Mag (λ = 0): m_k / Σ m_j, and the alignment error is not needed
    no_errors = [ClientUpdate(u.client, u.weights, u.num_samples, {}) for u in updates]
    magnitude = FedCMP(opm=False, lam=0.0).aggregate(global_weights, no_errors, {}, 1)
    assert magnitude.metrics["client_weights"] == pytest.approx({"3": 0.2, "7": 0.8})
    # RWF-Qua: exp(−λ e_k) / Σ_j exp(−λ e_j), with λ = 2
    quality = FedCMP(opm=False, lam=2.0, magnitude=False).aggregate(global_weights, updates, {}, 1)
    expected = math.exp(-1.0) / (math.exp(-1.0) + math.exp(-2.0))
    assert quality.metrics["client_weights"] == pytest.approx({"3": expected, "7": 1 - expected}, rel=1e-12)


def test_reliability_weights_survive_large_errors_and_zero_updates():
    global_weights = {CONNECTOR_B: torch.zeros(2)}
    updates = [ClientUpdate(0, {CONNECTOR_B: torch.tensor([1.0, 0.0])}, 1, {"alignment_error": 1000.0}),
               ClientUpdate(1, {CONNECTOR_B: torch.tensor([0.0, 1.0])}, 3, {"alignment_error": 1001.0})]
    weights = FedCMP(opm=False).aggregate(global_weights, updates, {}, 1).metrics["client_weights"]
    assert weights == pytest.approx({"0": 1 / (1 + math.exp(-1)), "1": math.exp(-1) / (1 + math.exp(-1))})
    # nobody moved: any weights give the global adapter; the example weights are reported
    still = [ClientUpdate(u.client, global_weights, u.num_samples, u.metrics) for u in updates]
    result = FedCMP().aggregate(global_weights, still, {}, 1)
    assert result.metrics["client_weights"] == {"0": 0.25, "1": 0.75}
    assert torch.equal(result.weights[CONNECTOR_B], global_weights[CONNECTOR_B])


@pytest.mark.parametrize("bad", [{}, {"alignment_error": None}, {"alignment_error": float("nan")}])
def test_missing_alignment_error_names_the_client(bad):
    global_weights = adapter(0)
    updates = updates_around(global_weights, [1, 2], errors=[0.1, 0.2])
    updates[1] = ClientUpdate(updates[1].client, updates[1].weights, updates[1].num_samples, bad)
    with pytest.raises(ValueError, match="client 2 reported alignment_error"):
        FedCMP().aggregate(global_weights, updates, {}, 1)
    FedCMP(reliability=False).aggregate(global_weights, updates, {}, 1)  # not needed without reliability


@pytest.mark.parametrize(
    ("params", "match"),
    [({"lam": -1.0}, "lam"), ({"gamma": float("inf")}, "gamma"), ({"beta_min": -0.1}, "beta_min"),
     ({"beta_max": 1.0}, "beta_max"), ({"beta_min": 0.8, "beta_max": 0.5}, "beta_min"),
     ({"opm": "yes"}, "opm"), ({"lam": True}, "lam"), ({"reliability": False, "magnitude": False}, "magnitude")],
)
def test_parameters_are_validated_at_build_time(params, match):
    with pytest.raises(ValueError, match=match):
        build({"name": "fedcmp", **params})


def test_registered_with_defaults():
    strategy = build({"name": "fedcmp"})
    assert strategy == FedCMP(canonical=True, reliability=True, opm=True, lam=1.0, magnitude=True,
                              beta_min=0.1, beta_max=0.4, gamma=1.0)
    assert fedcmp.FedCMP is type(strategy)


# ----------------------------------------------------------------------------- OPM (Eqs. 6-8)


def test_sign_alignment_flips_columns_that_point_away():
    previous = torch.eye(3, dtype=torch.float64)
    current = torch.eye(3, dtype=torch.float64) * torch.tensor([1.0, -1.0, 1.0], dtype=torch.float64)
    current[:, 2] = torch.tensor([0.6, 0.0, -0.8], dtype=torch.float64)  # angle > 90° to e_3
    assert align_signs(current, previous).tolist() == [1.0, -1.0, -1.0]
    # columns beyond the previous basis keep their sign
    assert align_signs(-torch.eye(3, dtype=torch.float64), previous[:, :2]).tolist() == [-1.0, -1.0, 1.0]
    # a flipped copy of the previous basis is no change at all: d = 0, β = β_min, U_t = U_{t−1}
    basis, sigma, signs, beta, d = opm_step(previous, torch.ones(3, dtype=torch.float64), -previous,
                                            torch.ones(3, dtype=torch.float64), 0.3, 0.9, 5.0)
    assert signs.tolist() == [-1.0] * 3 and d == 0.0 and beta == 0.3
    assert torch.allclose(basis, previous, atol=1e-15)


def test_opm_step_matches_a_hand_computation():
    # U_{t−1} = I, Ũ = R(θ): every column is at angle θ, so d = 1 − cos θ; M = βI + (1−β)R(θ) is a
    # scaled rotation by φ = atan2((1−β) sin θ, β + (1−β) cos θ), whose polar factor is R(φ).
    theta, beta_min, beta_max, gamma = 0.5, 0.2, 0.9, 2.0
    basis, sigma, signs, beta, d = opm_step(
        torch.eye(2, dtype=torch.float64), torch.tensor([3.0, 1.0], dtype=torch.float64),
        rotation(theta), torch.tensor([5.0, 2.0], dtype=torch.float64), beta_min, beta_max, gamma)
    assert d == pytest.approx(1 - math.cos(theta), abs=1e-15)
    assert beta == pytest.approx(beta_min + gamma * (1 - math.cos(theta)), abs=1e-15)  # 0.4448..., inside bounds
    phi = math.atan2((1 - beta) * math.sin(theta), beta + (1 - beta) * math.cos(theta))
    assert torch.allclose(basis, rotation(phi), atol=1e-14)
    assert torch.allclose(sigma, beta * torch.tensor([3.0, 1.0], dtype=torch.float64)
                          + (1 - beta) * torch.tensor([5.0, 2.0], dtype=torch.float64), atol=1e-14)
    assert signs.tolist() == [1.0, 1.0]


@settings(max_examples=40, deadline=None)
@given(d=st.floats(0.0, 2.0), low=st.floats(0.0, 0.98), width=st.floats(0.0, 1.0), gamma=st.floats(0.0, 100.0))
def test_momentum_coefficient_stays_within_bounds(d, low, width, gamma):
    high = low + width * (0.99 - low)
    beta = momentum_coefficient(d, low, high, gamma)
    assert low <= beta <= high
    assert beta == min(high, low + gamma * d)


def test_polar_is_the_closest_orthonormal_matrix():
    matrix = torch.randn(7, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    projected = polar(matrix)
    assert orthonormal(projected)
    # Procrustes optimality (App. A.2): no rotation of the polar factor gets closer
    distance = (matrix - projected).norm()
    for seed in range(20):
        q, _ = torch.linalg.qr(torch.randn(3, 3, generator=torch.Generator().manual_seed(seed), dtype=torch.float64))
        assert (matrix - projected @ q).norm() >= distance - 1e-12


def test_opm_keeps_every_basis_orthonormal_with_a_varying_number_of_clients():
    strategy = FedCMP()
    weights, state = adapter(0), {}
    for round_index, seeds in enumerate([[1, 2], [3, 4, 5, 6], [7], [8, 9, 10]], start=1):
        updates = updates_around(weights, seeds, errors=[0.05 * s for s in seeds])
        result = strategy.aggregate(weights, updates, state, round_index)
        weights, state = result.weights, result.server_state
        assert sorted(state) == sorted(p + n for p in (BASIS, SIGMA) for n in (CONNECTOR_W, LORA_A, LORA_B))
        for name in (CONNECTOR_W, LORA_A, LORA_B):
            basis = state[BASIS + name]
            # q = min(out, K·in): LoRA B (10 × 4) has 8, 10, 4, 10 columns in these rounds
            assert basis.dtype == torch.float64 and orthonormal(basis), (round_index, name)
            assert state[SIGMA + name].shape == (basis.shape[1],)
        if round_index > 1:
            for name in (CONNECTOR_W, LORA_A, LORA_B):
                record = result.metrics["momentum"][name]
                assert 0.1 <= record["beta"] <= 0.4
        assert all(torch.isfinite(t).all() for t in weights.values())
    assert state[BASIS + LORA_B].shape[1] == 10


def test_raw_parameter_momentum_when_the_canonical_space_is_off():
    global_weights = {"w": torch.tensor([[1.0, 0.0], [0.0, 2.0]]), "b": torch.tensor([0.0, 0.0])}
    updates = [ClientUpdate(0, {"w": torch.tensor([[0.0, 0.0], [1.0, 2.0]]), "b": torch.tensor([1.0, 1.0])}, 1),
               ClientUpdate(1, {"w": torch.tensor([[0.0, 0.0], [1.0, 2.0]]), "b": torch.tensor([3.0, 1.0])}, 1)]
    result = FedCMP(canonical=False, reliability=False, opm=True, beta_min=0.1, beta_max=0.8, gamma=0.5) \
        .aggregate(global_weights, updates, {}, 1)
    # columns: (1,0)→(0,1) is 90° (1 − cos = 1), (0,2)→(0,2) is 0°: d = 0.5, β = 0.1 + 0.5·0.5 = 0.35
    assert result.metrics["momentum"]["w"] == pytest.approx({"beta": 0.35, "dissimilarity": 0.5})
    assert torch.allclose(result.weights["w"], 0.35 * global_weights["w"] + 0.65 * updates[0].weights["w"])
    # the zero global bias has no direction: d = 0 and β = β_min
    assert result.metrics["momentum"]["b"] == {"beta": 0.1, "dissimilarity": 0.0}
    assert torch.allclose(result.weights["b"], 0.9 * torch.tensor([2.0, 1.0]))
    assert result.server_state == {}
    assert column_dissimilarity(torch.zeros(2, 1), torch.ones(2, 1)) == 0.0


# ----------------------------------------------------------------------------- fixed points


@pytest.mark.parametrize("reliability", [False, True])
def test_identical_client_uploads_are_a_fixed_point_without_opm(reliability):
    global_weights = adapter(0)
    target = adapter(1)
    updates = [ClientUpdate(k, target, 5 * k + 1, {"alignment_error": 0.1 * k}) for k in range(3)]
    result = FedCMP(canonical=True, reliability=reliability, opm=False).aggregate(global_weights, updates, {}, 1)
    for name in target:
        assert torch.allclose(result.weights[name], target[name], atol=1e-6, rtol=0), name


def test_with_opm_identical_uploads_every_round_are_a_fixed_point_and_attract():
    target = adapter(1)
    strategy = FedCMP()
    # every round the same upload W from every client: the global is W from round 1 on
    weights, state = adapter(0), {}
    for round_index in range(1, 4):
        updates = [ClientUpdate(k, target, 10, {"alignment_error": 0.2}) for k in range(3)]
        result = strategy.aggregate(weights, updates, state, round_index)
        weights, state = result.weights, result.server_state
        for name in target:
            assert torch.allclose(weights[name], target[name], atol=1e-5, rtol=0), (round_index, name)
    # after heterogeneous rounds the basis momentum lags, but identical uploads pull the global to W
    weights, state = adapter(0), {}
    for round_index in range(1, 4):
        updates = updates_around(weights, [1, 2, 3], [0.1, 0.2, 0.3], scale=0.5)
        result = strategy.aggregate(weights, updates, state, round_index)
        weights, state = result.weights, result.server_state
    gaps = []
    for round_index in range(4, 16):
        updates = [ClientUpdate(k, target, 10, {"alignment_error": 0.2}) for k in range(3)]
        result = strategy.aggregate(weights, updates, state, round_index)
        weights, state = result.weights, result.server_state
        gaps.append(max(float((weights[n] - target[n]).abs().max()) for n in target))
    assert gaps[0] > 1e-2 and gaps[-1] < 1e-6


def test_beyond_one_half_a_swapped_basis_is_a_fixed_point_of_the_opm_step():
    # the reason the default β_max is below 1/2 (FedCMP docstring): Ũ = I after U_{t−1} = P
    swap = torch.tensor([[0.0, 1.0], [1.0, 0.0]], dtype=torch.float64)
    ones = torch.ones(2, dtype=torch.float64)
    eye = torch.eye(2, dtype=torch.float64)
    assert torch.allclose(opm_step(swap, ones, eye, ones, 0.7, 0.7, 0.0)[0], swap, atol=1e-14)
    assert torch.allclose(opm_step(swap, ones, eye, ones, 0.3, 0.3, 0.0)[0], eye, atol=1e-14)


def test_a_tensor_no_client_changed_is_passed_through_with_its_state():
    strategy = FedCMP()
    weights = adapter(0)
    first = strategy.aggregate(weights, updates_around(weights, [1, 2], [0.1, 0.2]), {}, 1)
    # round 2 trains only the connector: the LoRA tensors come back exactly as the global ones
    weights = first.weights
    noise = adapter(5, 0.1)
    updates = [ClientUpdate(k, {n: t + noise[n] * k if "connector" in n else t for n, t in weights.items()}, 10,
                            {"alignment_error": 0.1}) for k in (1, 2)]
    second = strategy.aggregate(weights, updates, first.server_state, 2)
    for name in (LORA_A, LORA_B):
        assert second.weights[name] is weights[name]
        assert torch.equal(second.server_state[BASIS + name], first.server_state[BASIS + name])
        assert name not in second.metrics["momentum"]
    assert not torch.equal(second.weights[CONNECTOR_W], weights[CONNECTOR_W])


# ----------------------------------------------------------------------------- state and determinism


def test_state_round_trips_through_safetensors_and_resumes_bit_for_bit(tmp_path):
    strategy = FedCMP()
    weights, state = adapter(0), {}
    for round_index in (1, 2):
        result = strategy.aggregate(weights, updates_around(weights, [round_index, 9], [0.1, 0.3]), state, round_index)
        weights, state = result.weights, result.server_state
    save_file(state, str(tmp_path / "state.safetensors"))
    loaded = load_file(str(tmp_path / "state.safetensors"))
    assert sorted(loaded) == sorted(state) and all(torch.equal(loaded[k], state[k]) for k in state)
    next_updates = updates_around(weights, [3, 4, 5], [0.2, 0.1, 0.0])
    in_memory = strategy.aggregate(weights, next_updates, state, 3)
    resumed = strategy.aggregate(weights, next_updates, loaded, 3)
    assert all(torch.equal(in_memory.weights[n], resumed.weights[n]) for n in weights)
    assert all(torch.equal(in_memory.server_state[k], resumed.server_state[k]) for k in in_memory.server_state)
    assert in_memory.metrics == resumed.metrics


def test_result_does_not_depend_on_the_order_of_the_updates():
    weights = adapter(0)
    updates = updates_around(weights, [4, 1, 3], [0.3, 0.1, 0.2])
    state = FedCMP().aggregate(weights, updates, {}, 1).server_state
    forward = FedCMP().aggregate(weights, updates, state, 2)
    backward = FedCMP().aggregate(weights, updates[::-1], state, 2)
    assert all(torch.equal(forward.weights[n], backward.weights[n]) for n in weights)
    assert all(torch.equal(forward.server_state[k], backward.server_state[k]) for k in forward.server_state)
    assert list(forward.metrics["client_weights"]) == ["1", "3", "4"]


# ----------------------------------------------------------------------------- alignment error (Eq. 5)

VISION = {"model_type": "clip_vision_model", "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 2,
          "num_attention_heads": 2, "image_size": 32, "patch_size": 16}
LANGUAGE = {"model_type": "llama", "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
            "num_attention_heads": 2, "num_key_value_heads": 2, "max_position_embeddings": 64}


def tiny_vlm(connector: str):
    spec = {"vision": {"config": VISION}, "language": {"config": LANGUAGE}, "tokenizer": {"wordlevel": True},
            "connector": connector}
    return build_vlm(spec, 12, seed=0).eval()


def test_alignment_error_by_hand_with_an_identity_connector():
    model = tiny_vlm("identity")
    embedding = torch.zeros(12, 16)
    embedding[1, 0], embedding[2, 1], embedding[3, 0], embedding[3, 1] = 2.0, 4.0, 1.0, 1.0
    with torch.no_grad():
        model.language_model.get_input_embeddings().weight.copy_(embedding)
    features = torch.zeros(2, 3, 16)
    features[0, :, 0] = 1.0  # v̄_0 = e_1
    features[1, 0, 0], features[1, 1, 1], features[1, 2, 1] = 3.0, 3.0, 3.0  # v̄_1 = (1, 2, 0, ...)
    input_ids = torch.tensor([[1, 2, 0], [1, 3, 2]])
    attention_mask = torch.tensor([[1, 1, 0], [1, 1, 1]])  # the pad id 0 of sample 0 is ignored
    # t̄_0 = (1, 2), cos(e_1, t̄_0) = 1/√5;  t̄_1 = (1, 5/3), cos((1, 2), (1, 5/3)) = (13/3) / (√5 · √34/3)
    expected = torch.tensor([1 - 1 / math.sqrt(5), 1 - 13 / (math.sqrt(5) * math.sqrt(34))], dtype=torch.float64)
    errors = sample_alignment_errors(model, input_ids, attention_mask, image_features=features)
    assert errors.dtype == torch.float64 and torch.allclose(errors, expected, atol=1e-7)
    mean = alignment_error(model, input_ids, attention_mask, image_features=features)
    assert mean == pytest.approx(float(expected.mean()), abs=1e-7)
    # zero when the visual tokens are the text tokens' embeddings
    ids = torch.tensor([[1, 2, 2], [3, 1, 2]])
    same = model.language_model.get_input_embeddings()(ids)
    assert alignment_error(model, ids, torch.ones(2, 3), image_features=same) == pytest.approx(0.0, abs=1e-7)


def test_alignment_error_of_a_peft_wrapped_clip_llama_uses_the_trained_connector():
    model = tiny_vlm("mlp2x_gelu")
    lora = {"r": 2, "alpha": 4, "dropout": 0.5, "target_modules": ["q_proj"], "vision_target_modules": ["q_proj"]}
    peft_model = attach_adapter(model, adapter_config(lora, connector_trainable=True), seed=0)
    peft_model.train()
    pixels = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    input_ids = torch.tensor([[2, 5, 7], [2, 6, 0], [2, 8, 9]])
    attention_mask = torch.tensor([[1, 1, 1], [1, 1, 0], [1, 1, 1]])
    errors = sample_alignment_errors(peft_model, input_ids, attention_mask, pixel_values=pixels)
    assert errors.shape == (3,) and bool(torch.isfinite(errors).all())
    assert bool(((errors >= 0) & (errors <= 2)).all())
    # deterministic despite LoRA dropout (evaluated in eval mode), and the training mode is restored
    assert torch.equal(errors, sample_alignment_errors(peft_model, input_ids, attention_mask, pixel_values=pixels))
    assert peft_model.training and all(m.training for m in peft_model.modules())
    with torch.no_grad():
        unwrap(peft_model).connector.modules_to_save["default"][2].bias.add_(5.0)
    assert not torch.equal(errors, sample_alignment_errors(peft_model, input_ids, attention_mask, pixel_values=pixels))


def test_alignment_error_falls_when_the_connector_learns_to_map_onto_the_caption():
    model = tiny_vlm("linear")
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(8, 4, 16, generator=generator)
    input_ids = torch.randint(1, 12, (8, 5), generator=generator)
    mask = torch.ones(8, 5)
    before = alignment_error(model, input_ids, mask, image_features=features)
    with torch.no_grad():
        target = model.language_model.get_input_embeddings()(input_ids).mean(dim=1)
    optimizer = torch.optim.Adam(model.connector.parameters(), lr=0.05)
    for _ in range(200):
        loss = (model.connector(features).mean(dim=1) - target).square().sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    after = alignment_error(model, input_ids, mask, image_features=features)
    assert before > 0.5 and after < 0.01


def test_mean_alignment_error_weights_every_sample_equally():
    model = tiny_vlm("linear")
    generator = torch.Generator().manual_seed(3)
    features = torch.randn(5, 4, 16, generator=generator)
    input_ids = torch.randint(1, 12, (5, 3), generator=generator)
    mask = torch.ones(5, 3, dtype=torch.long)
    per_sample = sample_alignment_errors(model, input_ids, mask, image_features=features)
    batches = [
        {"input_ids": input_ids[r], "attention_mask": mask[r], "labels": input_ids[r], "image_features": features[r]}
        for r in (slice(0, 1), slice(1, 5))
    ]
    assert mean_alignment_error(model, batches) == pytest.approx(float(per_sample.mean()), abs=1e-12)
    with pytest.raises(ValueError, match="no samples"):
        mean_alignment_error(model, [])
    with pytest.raises(ValueError, match="no text token"):
        alignment_error(model, input_ids, torch.zeros(5, 3), image_features=features)
