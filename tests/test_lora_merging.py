"""LoRA-aware aggregation (``lora_fedavg``) and the model-merging baselines (``merge``)."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from peft.utils import merge_utils

from fedumm.federated import strategies
from fedumm.federated.strategies import fedavg, lora, merging
from fedumm.federated.strategies.base import ClientUpdate

LAYER = "base_model.model.language_model.model.layers.0.self_attn.q_proj"
A_KEY, B_KEY = f"{LAYER}.lora_A.weight", f"{LAYER}.lora_B.weight"
CONNECTOR = "base_model.model.connector.0.weight"


def adapter(B: torch.Tensor, A: torch.Tensor, connector: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    weights = {A_KEY: A, B_KEY: B}
    if connector is not None:
        weights[CONNECTOR] = connector
    return weights


def as_updates(adapters: list[dict], samples: list[int]) -> list[ClientUpdate]:
    return [ClientUpdate(client=k, weights=w, num_samples=n) for k, (w, n) in enumerate(zip(adapters, samples))]


def t(rows) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float64)


def run(strategy, global_weights, updates, round_index=1):
    return strategy.aggregate(global_weights, updates, {}, round_index)


def random_factors(seed: int, clients: int, rank: int, out: int, inp: int):
    generator = torch.Generator().manual_seed(seed)
    Bs = [torch.randn(out, rank, generator=generator, dtype=torch.float64) for _ in range(clients)]
    As = [torch.randn(rank, inp, generator=generator, dtype=torch.float64) for _ in range(clients)]
    return Bs, As


def mean_product(Bs, As, p) -> torch.Tensor:
    return sum(pk * B @ A for pk, B, A in zip(p, Bs, As))


# ---------------------------------------------------------------- lora_fedavg


def test_scalar_adapters_by_hand():
    # B_1 A_1 = 1·2, B_2 A_2 = 3·4, p = (1/2, 1/2): M = 7, while FedIT gives B̄Ā = 2·3 = 6.
    updates = as_updates([adapter(t([[1.0]]), t([[2.0]])), adapter(t([[3.0]]), t([[4.0]]))], [5, 5])
    start = adapter(t([[0.0]]), t([[1.0]]))

    exact = run(lora.LoraFedAvg(mode="exact"), start, updates)
    assert exact.weights[B_KEY].item() == pytest.approx(math.sqrt(7))
    assert exact.weights[A_KEY].item() == pytest.approx(math.sqrt(7))
    assert exact.metrics["lora_modules"][LAYER] == pytest.approx({
        "norm": 7.0, "truncation_error": 0.0, "truncation_error_relative": 0.0,
        "fedit_error": 1.0, "fedit_error_relative": 1 / 7,
    })

    fedit = run(lora.LoraFedAvg(mode="fedit"), start, updates)
    assert fedit.weights[B_KEY].item() == pytest.approx(2.0)
    assert fedit.weights[A_KEY].item() == pytest.approx(3.0)
    assert fedit.metrics["lora"]["fedit_error"] == pytest.approx(1.0)


def test_rank_one_truncation_by_hand():
    # M = ½ diag(1, 0) + ½ diag(0, 2) = diag(0.5, 1): rank 2, so r = 1 keeps σ = 1 and drops 0.5.
    updates = as_updates([adapter(t([[1.0], [0.0]]), t([[1.0, 0.0]])),
                          adapter(t([[0.0], [1.0]]), t([[0.0, 2.0]]))], [3, 3])
    result = run(lora.LoraFedAvg(), adapter(torch.zeros(2, 1, dtype=torch.float64), t([[1.0, 1.0]])), updates)
    torch.testing.assert_close(result.weights[B_KEY], t([[0.0], [1.0]]))
    torch.testing.assert_close(result.weights[A_KEY], t([[0.0, 1.0]]))
    # FedIT: B̄Ā = [½, ½]ᵀ[½, 1] = [[¼, ½], [¼, ½]]; minus M: [[-¼, ½], [¼, -½]], norm √0.625.
    assert result.metrics["lora"] == pytest.approx({
        "norm": math.sqrt(1.25), "truncation_error": 0.5, "truncation_error_relative": 0.5 / math.sqrt(1.25),
        "fedit_error": math.sqrt(0.625), "fedit_error_relative": math.sqrt(0.625 / 1.25),
    })


@pytest.mark.parametrize("case", ["shared A", "shared B", "one client", "in < r"])
def test_exact_is_the_mean_product_when_its_rank_is_at_most_r(case):
    clients, rank, out, inp = {"one client": (1, 3, 6, 5), "in < r": (3, 4, 6, 3)}.get(case, (4, 3, 6, 5))
    Bs, As = random_factors(7, clients, rank, out, inp)
    if case == "shared A":
        As = [As[0]] * clients
    if case == "shared B":
        Bs = [Bs[0]] * clients
    samples = [3, 1, 4, 2][:clients]
    p = [n / sum(samples) for n in samples]

    B, A, stats = lora.exact_product_mean(Bs, As, p)
    assert B.shape == (out, rank) and A.shape == (rank, inp)
    torch.testing.assert_close(B @ A, mean_product(Bs, As, p), rtol=0, atol=1e-12)
    assert stats.truncation_error < 1e-12 * stats.norm
    if case in ("shared A", "shared B", "one client"):  # then B̄Ā is Σ p_k B_k A_k too
        assert stats.fedit_error < 1e-12 * stats.norm
    if case == "in < r":  # M has only 3 singular values: the 4th factor column/row is zero
        assert torch.equal(B[:, 3], torch.zeros(out, dtype=torch.float64))
        assert torch.equal(A[3], torch.zeros(inp, dtype=torch.float64))


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    clients=st.integers(2, 4),
    rank=st.integers(1, 3),
    out=st.integers(4, 9),
    inp=st.integers(4, 9),
    samples=st.lists(st.integers(1, 50), min_size=4, max_size=4),
)
def test_exact_is_the_best_rank_r_approximation(seed, clients, rank, out, inp, samples):
    Bs, As = random_factors(seed, clients, rank, out, inp)
    p = [n / sum(samples[:clients]) for n in samples[:clients]]
    dense = mean_product(Bs, As, p)
    U, S, Vh = torch.linalg.svd(dense)
    assume(S[rank - 1] - S[rank] > 1e-6 * S[0])  # a gap makes the rank-r truncation unique

    B, A, stats = lora.exact_product_mean(Bs, As, p)
    # Eckart–Young: the truncated SVD of the dense matrix.
    torch.testing.assert_close(B @ A, (U[:, :rank] * S[:rank]) @ Vh[:rank], rtol=0, atol=1e-10 * S[0].item())
    assert stats.norm == pytest.approx(torch.linalg.matrix_norm(dense).item(), rel=1e-10)
    assert stats.truncation_error == pytest.approx(S[rank:].norm().item(), rel=1e-8, abs=1e-12)
    B_bar, A_bar = sum(pk * Bk for pk, Bk in zip(p, Bs)), sum(pk * Ak for pk, Ak in zip(p, As))
    assert stats.fedit_error == pytest.approx(torch.linalg.matrix_norm(B_bar @ A_bar - dense).item(), rel=1e-8)
    # Symmetric split: ‖B_{:,j}‖ = ‖A_{j,:}‖ = √σ_j; sign: each B column's largest entry is positive.
    torch.testing.assert_close(B.norm(dim=0), S[:rank].sqrt())
    torch.testing.assert_close(A.norm(dim=1), S[:rank].sqrt())
    assert (B[B.abs().argmax(dim=0), torch.arange(rank)] > 0).all()


def test_fedit_is_fedavg_and_reports_its_error():
    generator = torch.Generator().manual_seed(3)
    start = adapter(torch.zeros(6, 2), torch.randn(2, 5, generator=generator), torch.randn(4, 3, generator=generator))
    adapters = [{name: w + torch.randn(w.shape, generator=generator) for name, w in start.items()} for _ in range(3)]
    updates = as_updates(adapters, [10, 30, 60])

    result = run(lora.LoraFedAvg(mode="fedit"), start, updates)
    reference = run(fedavg.FedAvg(), start, updates)
    assert list(result.weights) == list(start)
    for name in start:
        assert torch.equal(result.weights[name], reference.weights[name])

    p = [0.1, 0.3, 0.6]
    Bs, As = [a[B_KEY].double() for a in adapters], [a[A_KEY].double() for a in adapters]
    B_bar, A_bar = sum(pk * B for pk, B in zip(p, Bs)), sum(pk * A for pk, A in zip(p, As))
    dense = mean_product(Bs, As, p)
    error = torch.linalg.matrix_norm(B_bar @ A_bar - dense).item()
    assert result.metrics["lora"]["fedit_error"] == pytest.approx(error, rel=1e-9)
    assert result.metrics["lora"]["fedit_error_relative"] == pytest.approx(
        error / torch.linalg.matrix_norm(dense).item(), rel=1e-9)
    assert result.metrics["client_weights"] == pytest.approx({0: 0.1, 1: 0.3, 2: 0.6})
    assert result.metrics["lora_mode"] == "fedit"


def test_exact_keeps_dtypes_averages_the_connector_and_is_deterministic():
    generator = torch.Generator().manual_seed(4)
    start = adapter(torch.zeros(8, 2), torch.randn(2, 6, generator=generator), torch.randn(4, 3, generator=generator))
    updates = as_updates([{name: w + torch.randn(w.shape, generator=generator) for name, w in start.items()}
                          for _ in range(3)], [1, 2, 3])

    result = run(lora.LoraFedAvg(mode="exact"), start, updates)
    assert all(tensor.dtype == torch.float32 for tensor in result.weights.values())
    assert torch.equal(result.weights[CONNECTOR], run(fedavg.FedAvg(), start, updates).weights[CONNECTOR])
    assert result.server_state == {}

    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        single = run(lora.LoraFedAvg(mode="exact"), start, updates)
        torch.set_num_threads(2)
        double = run(lora.LoraFedAvg(mode="exact"), start, updates)
    finally:
        torch.set_num_threads(threads)
    for name in start:
        assert torch.equal(result.weights[name], run(lora.LoraFedAvg(mode="exact"), start, updates).weights[name])
        torch.testing.assert_close(single.weights[name], double.weights[name], rtol=0, atol=1e-6)


@pytest.mark.parametrize("mode", ["fedit", "exact"])
def test_identical_client_adapters_are_a_fixed_point(mode):
    Bs, As = random_factors(5, 1, 3, 7, 6)
    client = adapter(Bs[0], As[0], t([[1.0, -2.0]]))
    start = adapter(torch.zeros(7, 3, dtype=torch.float64), torch.ones(3, 6, dtype=torch.float64), t([[0.0, 0.0]]))
    result = run(lora.LoraFedAvg(mode=mode), start, as_updates([client] * 4, [1, 2, 3, 4]))
    if mode == "fedit":
        for name in client:
            torch.testing.assert_close(result.weights[name], client[name], rtol=0, atol=1e-12)
    else:  # new factors of the same product (SVD rotation)
        torch.testing.assert_close(result.weights[B_KEY] @ result.weights[A_KEY], Bs[0] @ As[0], rtol=0, atol=1e-12)
        torch.testing.assert_close(result.weights[CONNECTOR], client[CONNECTOR], rtol=0, atol=1e-12)
    assert result.metrics["lora"]["truncation_error_relative"] < 1e-12
    assert result.metrics["lora"]["fedit_error_relative"] < 1e-12


def test_stack_is_exact_and_grows_the_rank_round_after_round():
    Bs, As = random_factors(seed=3, clients=3, rank=2, out=6, inp=5)
    p = [0.5, 0.3, 0.2]
    connectors = [t([[1.0, 2.0]]), t([[3.0, 4.0]]), t([[5.0, 6.0]])]
    start = adapter(torch.zeros(6, 2, dtype=torch.float64), torch.ones(2, 5, dtype=torch.float64), t([[0.0, 0.0]]))
    stack = lora.LoraFedAvg(mode="stack", client_rank=2)
    first = run(stack, start, as_updates([adapter(B, A, c) for B, A, c in zip(Bs, As, connectors)], [5, 3, 2]))
    # Round 1: the zero-B round-0 block is dropped; rank K·r = 6, product exactly Σ p_k B_k A_k.
    assert first.lora_rank == 6 and first.metrics["lora_rank"] == 6
    assert first.weights[B_KEY].shape == (6, 6) and first.weights[A_KEY].shape == (6, 5)
    torch.testing.assert_close(first.weights[B_KEY] @ first.weights[A_KEY], mean_product(Bs, As, p), rtol=0, atol=1e-12)
    torch.testing.assert_close(first.weights[CONNECTOR], t([[2.4, 3.4]]), rtol=0, atol=1e-12)
    assert first.metrics["lora"]["truncation_error"] == 0.0
    assert first.metrics["lora"]["fedit_error"] > 0  # what FedIT would have lost on the same uploads

    Bs2, As2 = random_factors(seed=4, clients=2, rank=2, out=6, inp=5)
    second = run(stack, first.weights, as_updates([adapter(B, A, t([[0.0, 0.0]])) for B, A in zip(Bs2, As2)], [1, 3]),
                 round_index=2)
    # Round 2: R + K·r = 6 + 4; the product accumulates both rounds' mean products.
    assert second.lora_rank == 10
    expected = mean_product(Bs, As, p) + mean_product(Bs2, As2, [0.25, 0.75])
    torch.testing.assert_close(second.weights[B_KEY] @ second.weights[A_KEY], expected, rtol=0, atol=1e-12)


def test_stack_checks_uploads_against_the_client_rank():
    from fedumm.federated.server import UpdateRejected, check_update

    glob = adapter(torch.zeros(6, 10), torch.ones(10, 5))
    reference = lora.LoraFedAvg(mode="stack", client_rank=2).update_reference(glob)
    check_update(0, adapter(torch.ones(6, 2), torch.ones(2, 5)), reference)
    with pytest.raises(UpdateRejected, match=r"client 3: tensor .*lora_A.weight is \(4, 5\).*expected \(2, 5\)"):
        check_update(3, adapter(torch.ones(6, 4), torch.ones(4, 5)), reference)
    assert lora.LoraFedAvg(mode="exact").update_reference(glob) is glob
    with pytest.raises(ValueError, match="mode stack needs client_rank >= 1"):
        strategies.build({"name": "lora_fedavg", "mode": "stack"})


def test_lora_fedavg_config_errors():
    with pytest.raises(ValueError, match="mode must be one of fedit, exact, stack, ffa"):
        strategies.build({"name": "lora_fedavg", "mode": "mean"})
    with pytest.raises(ValueError, match="strategy .lora_fedavg. does not compose with a robust rule: it aggregates LoRA factors"):
        strategies.build({"name": "lora_fedavg", "robust": {"name": "median"}})
    assert strategies.build({"name": "lora_fedavg"}) == lora.LoraFedAvg(mode="exact")


def test_a_factor_without_its_partner_is_rejected():
    with pytest.raises(ValueError, match=f"{LAYER}' has only one of its factors"):
        lora.lora_pairs([A_KEY, CONNECTOR])
    assert lora.lora_pairs([A_KEY, B_KEY, CONNECTOR]) == {f"{LAYER}.": (A_KEY, B_KEY)}


# ---------------------------------------------------------------- merge

METHODS = list(merging.METHODS)
NAMES = ("x", "y")


def merge_case(seed: int = 0, clients: int = 3):
    generator = torch.Generator().manual_seed(seed)
    start = {name: torch.randn(4, 5, generator=generator, dtype=torch.float64) for name in NAMES}
    deltas = [{name: torch.randn(4, 5, generator=generator, dtype=torch.float64) for name in NAMES}
              for _ in range(clients)]
    adapters = [{name: start[name] + delta[name] for name in NAMES} for delta in deltas]
    return start, as_updates(adapters, [1, 3, 4][:clients])


def params(method: str, density: float = 0.5) -> dict:
    return {"density": density} if merging.METHODS[method].prunes else {}


def test_ties_by_hand():
    # Signs elected by the summed deltas (0 → +): +, −, +, −. Entry 0 keeps client 0 alone, entry 3 client 1.
    start = {"x": t([0.0, 0.0, 0.0, 0.0])}
    updates = as_updates([{"x": t([1.0, -2.0, 3.0, 0.5])}, {"x": t([-1.0, -1.0, 2.0, -3.0])}], [1, 9])
    strategy = merging.Merge(method="ties", density=1.0, weighting="uniform", scaling=0.5)
    assert torch.equal(run(strategy, start, updates).weights["x"], 0.5 * t([1.0, -1.5, 2.5, -3.0]))


@pytest.mark.parametrize("weighting", ["examples", "uniform"])
@pytest.mark.parametrize("method", METHODS)
def test_merge_is_peft_merge_utils(method, weighting):
    start, updates = merge_case()
    strategy = merging.Merge(method=method, weighting=weighting, scaling=0.7, seed=11,
                             **params(method), **({"majority_sign_method": "frequency"}
                                                  if merging.METHODS[method].elects_sign else {}))
    result = run(strategy, start, updates, round_index=2)

    # Example shares 1/8, 3/8, 4/8; sign-electing rules get K times the shares (mean 1).
    shares = [1 / 8, 3 / 8, 4 / 8] if weighting == "examples" else [1 / 3] * 3
    weights = torch.tensor([3 * s if method in ("ties", "dare_ties") else s for s in shares], dtype=torch.float64)
    for name in NAMES:
        deltas = [u.weights[name] - start[name] for u in updates]
        kwargs = {"task_arithmetic": {}, "magnitude_prune": {"density": 0.5}, "dare_linear": {"density": 0.5},
                  "ties": {"density": 0.5, "majority_sign_method": "frequency"},
                  "dare_ties": {"density": 0.5, "majority_sign_method": "frequency"}}[method]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(merging.mask_seed(11, 2, name))
            expected = start[name] + 0.7 * getattr(merge_utils, method)(deltas, weights, **kwargs)
        assert torch.equal(result.weights[name], expected)
    assert result.metrics["merge_weights"] == pytest.approx(dict(enumerate(weights.tolist())))
    assert result.metrics["client_weights"] == pytest.approx({0: 1 / 8, 1: 3 / 8, 2: 4 / 8})


def test_task_arithmetic_by_examples_is_fedavg():
    start, updates = merge_case()
    merged = run(merging.Merge(), start, updates).weights
    averaged = run(fedavg.FedAvg(), start, updates).weights
    for name in NAMES:
        torch.testing.assert_close(merged[name], averaged[name], rtol=0, atol=1e-12)


@pytest.mark.parametrize("method", METHODS)
def test_clients_that_did_not_move_leave_the_model_unchanged(method):
    start, _ = merge_case()
    result = run(merging.Merge(method=method, **params(method)), start, as_updates([start] * 3, [1, 2, 3]))
    for name in NAMES:
        assert torch.equal(result.weights[name], start[name])


@pytest.mark.parametrize("weighting", ["examples", "uniform"])
@pytest.mark.parametrize("method", METHODS)
def test_identical_unpruned_updates_are_a_fixed_point(method, weighting):
    start, updates = merge_case()
    same = as_updates([updates[0].weights] * 3, [1, 3, 4])
    result = run(merging.Merge(method=method, weighting=weighting, **params(method, density=1.0)), start, same)
    for name in NAMES:
        torch.testing.assert_close(result.weights[name], updates[0].weights[name], rtol=0, atol=1e-12)


@pytest.mark.parametrize("method", ["magnitude_prune", "ties"])
def test_identical_updates_are_trimmed_to_their_largest_entries(method):
    # Δ = [4, −1, 3, −2] at density ½ keeps its two largest magnitudes, whatever the weights.
    start = {"x": t([1.0, 1.0, 1.0, 1.0])}
    same = as_updates([{"x": t([5.0, 0.0, 4.0, -1.0])}] * 3, [2, 5, 1])
    result = run(merging.Merge(method=method, density=0.5), start, same)
    assert torch.equal(result.weights["x"], t([5.0, 1.0, 4.0, 1.0]))


@pytest.mark.parametrize("method", ["dare_linear", "dare_ties"])
def test_dare_masks_are_seeded_per_round_and_tensor(method):
    start, updates = merge_case()
    strategy = merging.Merge(method=method, density=0.5, seed=3)
    state = torch.get_rng_state()
    first = run(strategy, start, updates, round_index=1).weights
    assert torch.equal(torch.get_rng_state(), state)  # the global generator is left alone
    again = run(strategy, start, list(reversed(updates)), round_index=1).weights
    next_round = run(strategy, start, updates, round_index=2).weights
    other_seed = run(merging.Merge(method=method, density=0.5, seed=4), start, updates, round_index=1).weights
    for name in NAMES:
        assert torch.equal(first[name], again[name])
        assert not torch.equal(first[name], next_round[name])
        assert not torch.equal(first[name], other_seed[name])
    # Same deltas under two names still get different masks.
    twins = [{name: u.weights["x"] for name in NAMES} for u in updates]
    merged = run(strategy, {name: start["x"] for name in NAMES}, as_updates(twins, [1, 3, 4])).weights
    assert not torch.equal(merged["x"], merged["y"])
    assert merging.mask_seed(3, 1, "x") == merging.mask_seed(3, 1, "x") != merging.mask_seed(3, 1, "y")


@pytest.mark.parametrize(("config", "message"), [
    ({"method": "fisher"}, "method must be one of task_arithmetic"),
    ({"method": "ties"}, "density is required for method 'ties'"),
    ({"method": "dare_linear", "density": 0}, r"density must be a number in \(0, 1\]"),
    ({"method": "dare_linear", "density": 1.5}, r"density must be a number in \(0, 1\]"),
    ({"method": "ties", "density": True}, r"density must be a number in \(0, 1\]"),
    ({"method": "task_arithmetic", "density": 0.5}, "density has no effect for method 'task_arithmetic'"),
    ({"method": "dare_linear", "density": 0.5, "majority_sign_method": "total"},
     "majority_sign_method has no effect for method 'dare_linear'"),
    ({"method": "ties", "density": 0.5, "majority_sign_method": "mode"}, "majority_sign_method must be one of"),
    ({"scaling": 0}, "scaling must be a positive finite number"),
    ({"scaling": float("inf")}, "scaling must be a positive finite number"),
    ({"weighting": "loss"}, "weighting must be one of examples, uniform"),
    ({"seed": -1}, "seed must be a non-negative integer"),
    ({"seed": 1.5}, "seed must be a non-negative integer"),
])
def test_merge_config_errors(config, message):
    with pytest.raises(ValueError, match=message):
        strategies.build({"name": "merge", **config})
