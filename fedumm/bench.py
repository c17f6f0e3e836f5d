"""Benchmarks, run with ``make bench`` or ``python -m fedumm.bench [BENCHMARK]`` (no name: all).

Times are measured side by side in one process and reported as ratios; nothing here is
asserted by the tests.

``feature-cache``: a client training step of the tiny preset with the frozen vision
encoder run on every batch (pixels) against reading its cached output (features), the
trade the ``features`` rule makes once per split.

``lora-aggregation``: the ``exact`` mode of ``lora_fedavg`` (best rank-r factorisation of
Σ_k p_k B_k A_k through QR of the stacked factors) against the dense computation it avoids
(form the out×in matrix, then ``torch.linalg.svd``), for LoRA r=16 on the projections of a
7B LLaMA (shapes from ``resources/models/llama-2-7b/config.json``) and K clients.

``dag``: ``snakemake -n`` of fedumm's workflow against a bare workflow of the same DAG shape,
for FedUMM's Table 1 grid and a long run, and each rule script's import time
(``fedumm.dag_bench``).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import yaml

from fedumm import dag_bench

# torch and the model layer are imported by the benchmarks that use them, so that `dag`
# (which measures other processes) does not load them.

REPO = Path(__file__).resolve().parents[1]
_LORA = {"r": 8, "alpha": 16, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"], "vision_target_modules": []}
LLAMA_CONFIG = REPO / "resources" / "models" / "llama-2-7b" / "config.json"


def tiny_spec() -> dict:
    """The ``tiny`` model of the default config, without its pretraining settings."""
    spec = yaml.safe_load((REPO / "config" / "config.yaml").read_text())["models"]["tiny"]
    return {key: value for key, value in spec.items() if key not in ("seed", "pretrain")}


def _steps_per_second(vlm, batch: dict, steps: int) -> float:
    import torch

    from fedumm.models import adapters
    from fedumm.models.training import OptimConfig, train

    peft_model = adapters.attach_adapter(vlm, adapters.adapter_config(_LORA, connector_trainable=True), seed=0)
    adapters.trainable_groups(peft_model, {"language", "connector"})
    start = time.perf_counter()
    train(peft_model, (batch for _ in range(steps)), steps, OptimConfig(lr=1e-3), torch.device("cpu"), "bench")
    elapsed = time.perf_counter() - start
    peft_model.unload()
    return steps / elapsed


def feature_cache(batch_size: int, steps: int, threads: int) -> dict:
    import torch

    from fedumm.models import text
    from fedumm.models.training import configure_torch
    from fedumm.models.vlm import build_vlm

    configure_torch(0, threads)
    tokenizer = text.build_wordlevel_tokenizer(["what color is the circle ?", "red"])
    vlm = build_vlm(tiny_spec(), vocab_size=len(tokenizer), seed=0)
    size = vlm.vision_tower.config.image_size
    pixels = torch.randn(batch_size, 3, size, size)
    with torch.no_grad():
        features = vlm.encode_images(pixels)
    examples = [text.encode_example(tokenizer, "what color is the circle ?", "red")] * batch_size
    tokens = text.collate_train(examples, tokenizer.pad_token_id)
    return {
        "pixels": _steps_per_second(vlm, {**tokens, "pixel_values": pixels}, steps),
        "features": _steps_per_second(vlm, {**tokens, "image_features": features}, steps),
    }


def run_feature_cache(args: argparse.Namespace) -> None:
    rates = feature_cache(args.batch_size, args.steps, args.threads)
    print(f"client training steps/s, tiny preset, batch {args.batch_size}, {args.threads} thread(s)")
    print(f"{'vision encoder per batch':<28}{rates['pixels']:>10.1f}")
    print(f"{'cached features':<28}{rates['features']:>10.1f}")
    print(f"{'speed-up of the cache':<28}{rates['features'] / rates['pixels']:>9.2f}x")


def llama_projections(config: dict) -> dict[str, tuple[int, int]]:
    """(out, in) of the seven linear projections of one LLaMA decoder layer."""
    hidden, intermediate = config["hidden_size"], config["intermediate_size"]
    heads = config["num_attention_heads"]
    kv = hidden // heads * config.get("num_key_value_heads", heads)
    return {
        "q_proj": (hidden, hidden), "k_proj": (kv, hidden), "v_proj": (kv, hidden), "o_proj": (hidden, hidden),
        "gate_proj": (intermediate, hidden), "up_proj": (intermediate, hidden), "down_proj": (hidden, intermediate),
    }


def _client_factors(shape: tuple[int, int], rank: int, clients: int, generator):
    """K float32 LoRA pairs (B: out×r, A: r×in) at peft-like scales, and example weights p_k."""
    import torch

    out, inp = shape
    Bs = [0.01 * torch.randn(out, rank, generator=generator) for _ in range(clients)]
    As = [torch.randn(rank, inp, generator=generator) / inp ** 0.5 for _ in range(clients)]
    counts = torch.randint(50, 500, (clients,), generator=generator).tolist()
    return Bs, As, [n / sum(counts) for n in counts]


def _timed(fn, *args):
    start = time.perf_counter()
    result = fn(*args)
    return result, time.perf_counter() - start


def _dense_form(Bs, As, weights):
    import torch

    return torch.cat([p * B.double() for B, p in zip(Bs, weights)], dim=1) @ torch.cat([A.double() for A in As])


def _dense_factors(dense, rank: int):
    import torch

    U, S, Vh = torch.linalg.svd(dense, full_matrices=False)
    root = S[:rank].sqrt()
    return U[:, :rank] * root, root[:, None] * Vh[:rank]


def lora_aggregation(args: argparse.Namespace) -> None:
    import torch

    from fedumm.federated.strategies.lora import exact_product_mean

    config = json.loads(args.config.read_text())
    shown = args.config.resolve().relative_to(REPO) if args.config.resolve().is_relative_to(REPO) else args.config
    shapes = llama_projections(config)
    unknown = sorted(set(args.dense_modules) - set(shapes))
    if unknown:
        raise SystemExit(f"--dense-modules: unknown projection(s) {', '.join(unknown)} (known: {', '.join(shapes)})")
    num_layers = config["num_hidden_layers"]
    layers = min(args.layers, num_layers)
    torch.set_num_threads(args.threads)
    generator = torch.Generator().manual_seed(args.seed)
    exact_product_mean(*_client_factors((64, 64), args.rank, 2, generator))  # load LAPACK before timing

    print(f"LoRA r={args.rank} on {config.get('_name_or_path', args.config)} shapes ({shown}): "
          f"hidden {config['hidden_size']}, intermediate {config['intermediate_size']}, {num_layers} layers")
    print(f"exact: QR of the stacked factors + SVD of the Kr×Kr core, on all {len(shapes)} projections "
          f"({' '.join(shapes)}) of {layers} of {num_layers} layers; float64, {args.threads} thread(s)")
    if args.dense_modules:
        svd_when = ("timed at every K" if args.dense_svd_every_k else
                    f"timed once (K={args.clients[0]}) and reused for every K, as its cost does not depend on K "
                    f"(--dense-svd-every-k times it at each K)")
        print(f"dense: form Σ p_k B_k A_k (out×in, float64) at every K + torch.linalg.svd, on "
              f"{', '.join(args.dense_modules)} of layer 0; the SVD is {svd_when}")
    header = f"{'K':>4}  {'exact s/module':>14}  {f'exact s, {layers * len(shapes)} modules':>20}  " \
             f"{f'exact s, {num_layers} layers*':>20}"
    for name in args.dense_modules:
        header += f"  |  {name + ' exact s':>16}  {'dense s':>8}  {'dense/exact':>11}"
    print()
    print(header)

    svd_seconds: dict[str, float] = {}
    checks = []
    for clients in args.clients:
        exact_seconds = []
        dense_columns = ""
        for layer in range(layers):
            for name, shape in shapes.items():
                Bs, As, weights = _client_factors(shape, args.rank, clients, generator)
                (B, A, _), seconds = _timed(exact_product_mean, Bs, As, weights)
                exact_seconds.append(seconds)
                if layer == 0 and name in args.dense_modules:
                    dense, form_seconds = _timed(_dense_form, Bs, As, weights)
                    if name not in svd_seconds or args.dense_svd_every_k:
                        (B_d, A_d), svd_seconds[name] = _timed(_dense_factors, dense, args.rank)
                        checks.append((name, clients, ((B @ A - B_d @ A_d).norm() / dense.norm()).item()))
                    total = form_seconds + svd_seconds[name]
                    dense_columns += f"  |  {seconds:>16.3f}  {total:>8.2f}  {total / seconds:>10.0f}x"
                    del dense
        measured = sum(exact_seconds)
        print(f"{clients:>4}  {measured / len(exact_seconds):>14.3f}  {measured:>20.2f}  "
              f"{measured * num_layers / layers:>20.1f}{dense_columns}")
    print(f"* measured on {layers} layer(s), scaled to {num_layers} layers")
    for name, clients, difference in checks:
        print(f"check: ‖BA(exact) − BA(dense)‖/‖Σ p_k B_k A_k‖ = {difference:.1e} ({name}, K={clients})")


def _int_list(value: str) -> list[int]:
    return [int(item) for item in value.split(",") if item]


def _name_list(value: str) -> list[str]:
    return [item for item in value.split(",") if item]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    benchmarks = parser.add_subparsers(dest="benchmark", metavar="BENCHMARK", help="one of: %(choices)s")

    cache = benchmarks.add_parser("feature-cache", help="client training steps/s: vision encoder vs cached features")
    cache.add_argument("--batch-size", type=int, default=16)
    cache.add_argument("--steps", type=int, default=60)
    cache.add_argument("--threads", type=int, default=1)
    cache.set_defaults(run=run_feature_cache)

    lora = benchmarks.add_parser("lora-aggregation", help="lora_fedavg exact (low-rank) vs dense SVD, 7B shapes")
    lora.add_argument("--config", type=Path, default=LLAMA_CONFIG,
                      help="a transformers LLaMA config.json (default: the bundled Llama-2-7b one)")
    lora.add_argument("--rank", type=int, default=16)
    lora.add_argument("--clients", type=_int_list, default=[2, 4, 8, 16, 32, 64], help="comma-separated K values")
    lora.add_argument("--layers", type=int, default=1,
                      help="decoder layers to time the exact path on (memory stays one module's factors)")
    lora.add_argument("--dense-modules", type=_name_list, default=["q_proj"],
                      help="comma-separated projections to time the dense path on ('' for none)")
    lora.add_argument("--dense-svd-every-k", action="store_true", help="time the dense SVD at every K (slow)")
    # One thread by default, like feature-cache: both paths get the same, and a shared machine's
    # load does not turn multi-threaded LAPACK calls into spin-waits.
    lora.add_argument("--threads", type=int, default=1)
    lora.add_argument("--seed", type=int, default=0)
    lora.set_defaults(run=lora_aggregation)

    dag_bench.add_parser(benchmarks)

    args = parser.parse_args(argv)
    if args.benchmark is not None:
        args.run(args)
        return
    for name, subparser in benchmarks.choices.items():
        print(f"== {name}")
        defaults = subparser.parse_args([])
        defaults.run(defaults)
        print()


if __name__ == "__main__":
    main()
