"""Benchmarks, run with ``make bench`` or ``python -m fedumm.bench``.

Times are measured side by side in one process and reported as ratios; nothing here is
asserted by the tests.

``feature-cache``: a client training step of the tiny preset with the frozen vision
encoder run on every batch (pixels) against reading its cached output (features), the
trade the ``features`` rule makes once per split.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
import yaml

from fedumm import model, text
from fedumm.training import OptimConfig, configure_torch, train

REPO = Path(__file__).resolve().parents[1]
_LORA = {"r": 8, "alpha": 16, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"], "vision_target_modules": []}


def tiny_spec() -> dict:
    """The ``tiny`` model of the default config, without its pretraining settings."""
    spec = yaml.safe_load((REPO / "config" / "config.yaml").read_text())["models"]["tiny"]
    return {key: value for key, value in spec.items() if key not in ("seed", "pretrain")}


def _steps_per_second(vlm, batch: dict, steps: int) -> float:
    peft_model = model.attach_adapter(vlm, model.adapter_config(_LORA, connector_trainable=True), seed=0)
    model.trainable_groups(peft_model, {"language", "connector"})
    start = time.perf_counter()
    train(peft_model, (batch for _ in range(steps)), steps, OptimConfig(lr=1e-3), torch.device("cpu"), "bench")
    elapsed = time.perf_counter() - start
    peft_model.unload()
    return steps / elapsed



def feature_cache(batch_size: int, steps: int, threads: int) -> dict:
    configure_torch(0, threads)
    tokenizer = text.build_wordlevel_tokenizer(["what color is the circle ?", "red"])
    vlm = model.build_vlm(tiny_spec(), vocab_size=len(tokenizer), seed=0)
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    rates = feature_cache(args.batch_size, args.steps, args.threads)
    print(f"client training steps/s, tiny preset, batch {args.batch_size}, {args.threads} thread(s)")
    print(f"{'vision encoder per batch':<28}{rates['pixels']:>10.1f}")
    print(f"{'cached features':<28}{rates['features']:>10.1f}")
    print(f"{'speed-up of the cache':<28}{rates['features'] / rates['pixels']:>9.2f}x")


if __name__ == "__main__":
    main()
