"""Cache of frozen vision-encoder outputs, one safetensors file per split, keyed by sample id.

With a frozen vision encoder every client and every round would recompute the same
features; computing them once per split moves that cost out of the federated loop.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from tqdm import tqdm

from fedumm.data.shards import read_samples
from fedumm.io import atomic_path


@torch.no_grad()
def extract_features(model, transform, shards: list[Path], out_file: Path, batch_size: int, device) -> int:
    """Encode every image of ``shards`` with ``model.encode_images`` and save them by sample id.

    On a GPU the encoder runs in bfloat16 and features are stored in bfloat16; on the CPU
    everything stays float32. Returns the number of samples written.
    """
    model.eval().to(device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    samples = read_samples(shards)
    cached: dict[str, torch.Tensor] = {}
    for start in tqdm(range(0, len(samples), batch_size), desc=f"features {out_file.name}", mininterval=5):
        chunk = samples[start : start + batch_size]
        pixels = torch.stack([transform(sample["image"]) for sample in chunk]).to(device)
        with torch.autocast(device.type, dtype=dtype, enabled=device.type == "cuda"):
            encoded = model.encode_images(pixels)
        for sample, tensor in zip(chunk, encoded):
            cached[sample["id"]] = tensor.to(dtype).cpu().contiguous()
    with atomic_path(out_file) as tmp:
        save_file(cached, str(tmp), metadata={"format": "pt"})
    return len(cached)


def load_features(feature_file: Path, ids: set[str]) -> dict[str, torch.Tensor]:
    """Read the features of ``ids`` only, as float32."""
    with safe_open(str(feature_file), framework="pt") as handle:
        available = set(handle.keys())
        missing = ids - available
        if missing:
            raise KeyError(f"{feature_file}: no features for {len(missing)} id(s), e.g. {sorted(missing)[0]}")
        return {i: handle.get_tensor(i).float() for i in sorted(ids)}
