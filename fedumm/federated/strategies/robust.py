"""Byzantine-robust replacements for the weighted mean of client deltas.

``ROBUST_RULES`` names them; every strategy with a ``robust`` parameter aggregates through
``combine_deltas`` and so can use any of them, e.g. ``robust: {name: krum, f: 2}``.
Every rule has the signature ``rule(deltas, weights, **params) -> Weights``: ``deltas`` are
the clients' Δ_k = w_k − w (same keys and shapes), ``weights`` their example weights p_k.

Where a rule needs distances or norms it treats a client's delta as one vector: all
tensors flattened and concatenated in sorted key order. The rules accumulate those sums
key by key (in sorted order, float64), which gives the same numbers without materialising
n copies of the whole adapter. Results keep each tensor's dtype.

Parameters are checked twice: ``check_robust_params`` validates what does not depend on the
number of clients n (so a bad config fails before any job runs), and each rule checks the
constraints involving n when it is called.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable

from fedumm.artifacts import Weights
from fedumm.federated.strategies.base import weighted_average
from fedumm.federated.strategies.params import check_real, is_int
from fedumm.lazy import LazyModule

torch = LazyModule("torch")  # loaded by the jobs that use it, not by the DAG build (fedumm.lazy)


def global_norm(delta: Weights) -> float:
    """‖Δ‖₂ over all tensors of one delta, as one flattened vector."""
    return math.sqrt(sum(float(delta[name].to(torch.float64).square().sum()) for name in sorted(delta)))


def clip_delta(delta: Weights, max_norm: float) -> Weights:
    """Δ · min(1, max_norm / ‖Δ‖₂): the delta scaled down to global L2 norm at most max_norm.

    The scale is applied in float64 so a clipped delta's norm is max_norm up to the
    rounding of the final cast.
    """
    norm = global_norm(delta)
    if norm <= max_norm:
        return dict(delta)
    scale = max_norm / norm
    return {name: (tensor.to(torch.float64) * scale).to(tensor.dtype) for name, tensor in delta.items()}


def krum_scores(deltas: list[Weights], f: int) -> torch.Tensor:
    """Krum score of each client i (Blanchard et al., 2017, Sec. 4): Σ_j ‖Δ_i − Δ_j‖².

    The sum runs over the n − f − 2 clients j ≠ i nearest to i.
    """
    n = len(deltas)
    _check_f(f, n, "krum")
    squared = torch.zeros(n, n, dtype=torch.float64)
    for name in sorted(deltas[0]):
        stacked = torch.stack([delta[name].reshape(-1).to(torch.float64) for delta in deltas])
        for i in range(n):
            squared[i] += (stacked - stacked[i]).square().sum(dim=1)
    # A client is not its own neighbour; +inf sorts it behind all n − 1 others.
    squared.fill_diagonal_(math.inf)
    return squared.sort(dim=1).values[:, : n - f - 2].sum(dim=1)


def multi_krum_selection(deltas: list[Weights], f: int, m: int) -> list[int]:
    """The indices of the m deltas with the best Krum scores, best first (ties: the one listed first).

    The scores are computed once (not recomputed after each pick as in Bulyan).
    """
    n = len(deltas)
    _check_m(m, n)
    scores = krum_scores(deltas, f)
    return sorted(range(n), key=lambda k: (float(scores[k]), k))[:m]


def krum(deltas: list[Weights], weights: list[float], f: int) -> Weights:
    """Krum (Blanchard et al., 2017, Sec. 4): the delta of the client with the lowest Krum score.

    Tolerates f byzantine clients among n > 2f + 2. Example weights play no part; ties go
    to the client listed first.
    """
    (chosen,) = multi_krum_selection(deltas, f, 1)
    return {name: tensor.clone() for name, tensor in deltas[chosen].items()}


def multi_krum(deltas: list[Weights], weights: list[float], f: int, m: int | None = None) -> Weights:
    """Multi-Krum (Blanchard et al., 2017, Sec. 5): Σ_{k∈S} p_k Δ_k / Σ_{k∈S} p_k over the m best Krum scores.

    ``m`` defaults to n − f; m = 1 is Krum, and f = 0, m = n is the plain weighted mean.
    """
    n = len(deltas)
    _check_f(f, n, "multi_krum")
    selected = multi_krum_selection(deltas, f, n - f if m is None else m)
    total = sum(weights[k] for k in selected)
    if total <= 0:
        raise ValueError("multi_krum: the selected clients have zero total example weight")
    return {
        name: weighted_average([deltas[k][name] for k in selected], [weights[k] / total for k in selected])
        for name in deltas[0]
    }


def median(deltas: list[Weights], weights: list[float]) -> Weights:
    """Coordinate-wise median (Yin et al., 2018, Definition 1), unweighted.

    For even n each coordinate is the mean of its two middle values, the usual statistical
    median; ``torch.median`` would return the lower one, which biases the result downwards.
    """
    n = len(deltas)
    result = {}
    for name in deltas[0]:
        ordered = torch.stack([delta[name].to(torch.float64) for delta in deltas]).sort(dim=0).values
        middle = ordered[n // 2] if n % 2 else (ordered[n // 2 - 1] + ordered[n // 2]) / 2
        result[name] = middle.to(deltas[0][name].dtype)
    return result


def trimmed_count(beta: float, n: int) -> int:
    """⌊βn⌋, the values the β-trimmed mean drops per coordinate at each end; 1e-9 absorbs float
    error such as 0.29 × 100 = 28.999999999999996, which should trim 29."""
    return math.floor(beta * n + 1e-9)


def trimmed_mean(deltas: list[Weights], weights: list[float], beta: float) -> Weights:
    """Coordinate-wise β-trimmed mean (Yin et al., 2018, Definition 2), unweighted.

    Per coordinate, drop the ⌊βn⌋ largest and ⌊βn⌋ smallest values and average the rest.
    Yin et al. assume βn is an integer; flooring keeps at least the fraction β trimmed
    whenever βn is not. β = 0 is the unweighted mean.
    """
    _check_beta(beta)
    n = len(deltas)
    trim = trimmed_count(beta, n)
    result = {}
    for name in deltas[0]:
        ordered = torch.stack([delta[name].to(torch.float64) for delta in deltas]).sort(dim=0).values
        result[name] = ordered[trim : n - trim].mean(dim=0).to(deltas[0][name].dtype)
    return result


def norm_clip(deltas: list[Weights], weights: list[float], max_norm: float) -> Weights:
    """Norm clipping (Sun et al., 2019, "Can you really backdoor federated learning?", Sec. 4).

    Σ_k p_k Δ_k · min(1, M / ‖Δ_k‖₂) with M = max_norm: each delta is clipped to global L2
    norm M before the example-weighted mean. This bounds, rather than removes, an attacker's
    influence: the result moves by at most 2 M Σ_{attackers} p_k from the honest mean.
    """
    _check_max_norm(max_norm)
    clipped = [clip_delta(delta, max_norm) for delta in deltas]
    return {name: weighted_average([delta[name] for delta in clipped], weights) for name in deltas[0]}


def check_robust_params(robust: dict) -> None:
    """Validate ``robust = {"name": ..., **params}`` as far as possible without knowing n.

    Unknown or missing parameters and out-of-range values raise a ValueError naming the
    rule and parameter; the constraints involving the number of clients (n > 2f + 2,
    m ≤ n) are checked when the rule runs.
    """
    name = robust.get("name")
    if name not in ROBUST_RULES:
        raise ValueError(f"unknown robust rule {name!r} (known: {', '.join(sorted(ROBUST_RULES))})")
    params = {key: value for key, value in robust.items() if key != "name"}
    # The first two parameters of every rule are (deltas, weights); the rest are its config.
    signature = list(inspect.signature(ROBUST_RULES[name]).parameters.values())[2:]
    allowed = {p.name for p in signature}
    unknown = sorted(set(params) - allowed)
    if unknown:
        raise ValueError(
            f"unknown parameter(s) {', '.join(unknown)} for robust rule {name!r} "
            f"(allowed: {', '.join(sorted(allowed)) or 'none'})"
        )
    missing = sorted(p.name for p in signature if p.default is inspect.Parameter.empty and p.name not in params)
    if missing:
        raise ValueError(f"robust rule {name!r} needs parameter(s) {', '.join(missing)}")
    for key, value in params.items():
        if key == "f":
            _check_f(value, None, name)
        elif key == "m" and value is not None:
            _check_m(value, None)
        elif key == "beta":
            _check_beta(value)
        elif key == "max_norm":
            _check_max_norm(value)


def _check_f(f: object, n: int | None, rule: str) -> None:
    if not is_int(f) or f < 0:
        raise ValueError(f"{rule}: parameter f (number of byzantine clients) must be an integer >= 0, got {f!r}")
    if n is not None and n <= 2 * f + 2:
        raise ValueError(f"{rule}: parameter f={f} needs n > 2f + 2 = {2 * f + 2} clients, got n={n}")


def _check_m(m: object, n: int | None) -> None:
    if not is_int(m) or m < 1:
        raise ValueError(f"multi_krum: parameter m (number of clients selected) must be an integer >= 1, got {m!r}")
    if n is not None and m > n:
        raise ValueError(f"multi_krum: parameter m={m} exceeds the number of clients n={n}")


def _check_beta(beta: object) -> None:
    check_real("trimmed_mean", "beta (fraction trimmed from each end)", beta, at_least=0, below=0.5)


def _check_max_norm(max_norm: object) -> None:
    check_real("norm_clip", "max_norm", max_norm, above=0)


RobustRule = Callable[..., Weights]
"""``rule(deltas, weights, **params) -> Weights``: a replacement for the weighted mean of deltas."""

ROBUST_RULES: dict[str, RobustRule] = {
    "krum": krum,
    "multi_krum": multi_krum,
    "median": median,
    "trimmed_mean": trimmed_mean,
    "norm_clip": norm_clip,
}


def check_robust(robust: dict | None) -> None:
    """Fail at config time, not in round 7, on an unknown robust rule or a bad parameter."""
    if robust is not None:
        check_robust_params(robust)


def combine_deltas(deltas: list[Weights], weights: list[float], robust: dict | None = None) -> Weights:
    """Σ_k p_k Δ_k, or the robust rule named by ``robust = {"name": ..., **params}``.

    Strategies aggregate through this one function, so every robust rule composes with
    every strategy that has a ``robust`` parameter.
    """
    if robust is None:
        return {name: weighted_average([delta[name] for delta in deltas], weights) for name in deltas[0]}
    check_robust_params(robust)
    params = {key: value for key, value in robust.items() if key != "name"}
    return ROBUST_RULES[robust["name"]](deltas, weights, **params)


def robust_selection(deltas: list[Weights], robust: dict) -> dict:
    """What a robust rule kept and dropped this round, by index into ``deltas``, for aggregate.json:
    Krum and Multi-Krum their selected clients, norm clipping the clients it scaled down, the
    trimmed mean how many values it trims per coordinate at each end (the median keeps one or two
    values per coordinate, so no client is dropped as a whole)."""
    name, n = robust["name"], len(deltas)
    if name in ("krum", "multi_krum"):
        m = 1 if name == "krum" else robust.get("m") or n - robust["f"]
        return {"selected": multi_krum_selection(deltas, robust["f"], m)}
    if name == "norm_clip":
        return {"clipped": [k for k, delta in enumerate(deltas) if global_norm(delta) > robust["max_norm"]]}
    if name == "trimmed_mean":
        return {"trimmed_per_coordinate": trimmed_count(robust["beta"], n)}
    return {}
