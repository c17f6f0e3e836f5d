"""Small configs and a runner for tests that execute the real Snakemake workflow."""

from __future__ import annotations

import base64
import copy
import json
import os
import subprocess
import sys
import time
from html.parser import HTMLParser
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile")]
# How README tells users to run on one machine (profiles/local: rerun-incomplete), on the test's 2 cores.
LOCAL_PROFILE = ["--profile", str(REPO / "profiles" / "local"), "--cores", "2"]

TINY_MODEL = {
    "vision": {"config": {"model_type": "clip_vision_model", "hidden_size": 32, "intermediate_size": 64,
                          "num_hidden_layers": 1, "num_attention_heads": 2, "image_size": 64, "patch_size": 16}},
    "select_layer": -1,
    "select_feature": "patch",
    "connector": "mlp2x_gelu",
    "language": {"config": {"model_type": "llama", "hidden_size": 32, "intermediate_size": 64,
                            "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 2,
                            "max_position_embeddings": 64}},
    "tokenizer": {"wordlevel": True},
    "dtype": "float32",
    "seed": 0,
    "pretrain": {"dataset": "shapes", "split": "public", "steps": 20, "batch_size": 16, "lr": 0.002,
                 "tasks": ["caption"]},
}


def client_world(root: Path, splits: dict[str, int], pretrain_steps: int, lora: dict, full: bool = False):
    """For tests that run client jobs in-process: the shapes ``splits`` in ``root/data``, the tiny
    base model pretrained ``pretrain_steps`` steps (``root/base``), its round-0 adapter or, with
    ``full``, dense delta (``root/global``) and an iid partition over 2 clients (``root/index``).
    Returns the dataset directory and the partition."""
    from fedumm.data import shapes, shards
    from fedumm.federated.initial import initial_adapter
    from fedumm.models import pretrain
    from fedumm.partition import files, schemes

    dataset = root / "data"
    shapes.generate_shapes(dataset, splits, seed=0, shard_size=32)
    spec = copy.deepcopy(TINY_MODEL)
    spec["pretrain"]["steps"] = pretrain_steps
    pretrain.build_base_model(spec, shards.split_shards(dataset, "public"), root / "base", threads=1)
    initial_adapter(base_dir=root / "base", lora=lora, with_connector=True, seed=1,
                    out_dir=root / "global", state_out=root / "state.safetensors", full=full)
    records = {s: shards.read_records(shards.split_shards(dataset, s)) for s in ("train", "val", "test")}
    parts = schemes.partition_splits(
        {s: [r["domain"] for r in rs] for s, rs in records.items()}, "iid", 2, seed=0, alpha=None, min_size=1
    )
    files.write_partition(root / "index", root / "counts.csv", root / "heatmap.png", records, parts, "domain")
    return dataset, parts


def tiny_config(experiments: dict | None = None, **defaults) -> dict:
    """A config of the real workflow, small enough that one job takes seconds on a CPU."""
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    config["datasets"]["shapes"].update(
        splits={"public": 200, "train": 120, "val": 24, "test": 40}, shard_size=100, image_size=64
    )
    config["models"] = {"tiny": copy.deepcopy(TINY_MODEL)}
    config["defaults"].update(rounds=2, clients=2)
    config["defaults"]["partition"].update(min_size=5)
    config["defaults"]["train"].update(local_steps=3, batch_size=8)
    config["defaults"]["eval"].update(every=4, batch_size=64)
    config["defaults"].update(defaults)
    config["experiments"] = experiments if experiments is not None else {"fedavg": {}}
    config["resources"] = {"default": {"gpu": 0, "cpus": 1, "mem_mb": 1000, "runtime": 10}}
    return config


def write_config(workdir: Path, config: dict) -> Path:
    path = workdir / "config" / "config.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def snakemake(workdir: Path, *args: str, check: bool = True, env: dict | None = None, **kwargs):
    """Run the workflow in ``workdir`` (its config/config.yaml) and return the CompletedProcess."""
    command = [*SNAKEMAKE, "--directory", str(workdir), *args]
    result = subprocess.run(
        command, capture_output=True, text=True, env=env or {**os.environ}, cwd=workdir, **kwargs
    )
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(command)} failed ({result.returncode}):\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}")
    return result


def wait_for(path: Path, process: subprocess.Popen, timeout: float = 1200) -> None:
    """Wait until ``path`` exists while ``process`` (a background snakemake) runs; the timeout bounds a
    hang, not the speed (two workflow runs share the cores under ``make test``)."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        if process.poll() is not None:
            raise AssertionError(f"snakemake ended before {path} appeared")
        if time.monotonic() > deadline:
            raise AssertionError(f"{path} did not appear within {timeout}s")
        time.sleep(0.2)


def job_counts(dry_run_output: str) -> dict[str, int]:
    """The 'Job stats' table of a dry run, as {rule: count}."""
    lines = dry_run_output.splitlines()
    start = lines.index("Job stats:") + 3
    counts = {}
    for line in lines[start:]:
        parts = line.split()
        if len(parts) != 2 or parts[0] == "total":
            break
        counts[parts[0]] = int(parts[1])
    return counts


class _ScriptText(HTMLParser):
    """The text of the `<script id="results">` element, where Snakemake's report embeds its files."""

    def __init__(self) -> None:
        super().__init__()
        self.inside = False
        self.text = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.inside = tag == "script" and ("id", "results") in attrs

    def handle_endtag(self, tag: str) -> None:
        self.inside = False

    def handle_data(self, data: str) -> None:
        if self.inside:
            self.text += data


def report_results(html: str) -> dict[str, dict]:
    """The files embedded in a `snakemake --report` HTML file, by path: name, caption, data_uri, ..."""
    parser = _ScriptText()
    parser.feed(html)
    assignment = parser.text.strip()
    assert assignment.startswith("var results = "), assignment[:80]
    return json.loads(assignment.removeprefix("var results = ").rstrip(";"))


def embedded_bytes(entry: dict) -> bytes:
    """The bytes of one embedded report file."""
    return base64.b64decode(entry["data_uri"].split("base64,", 1)[1])


_LLAMA = {"model_type": "llama", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
          "num_attention_heads": 4, "num_key_value_heads": 4}
TINY_HF_CONFIGS = {
    "qwen2_5_vl": {
        "model_type": "qwen2_5_vl",
        "text_config": {"model_type": "qwen2_5_vl_text", "hidden_size": 64, "intermediate_size": 128,
                        "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
                        # mrope_section must sum to head_dim / 2
                        "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]}},
        "vision_config": {"depth": 2, "hidden_size": 32, "intermediate_size": 64, "num_heads": 2, "patch_size": 8,
                          "spatial_merge_size": 2, "temporal_patch_size": 2, "window_size": 32, "out_hidden_size": 64,
                          "fullatt_block_indexes": [1]},
    },
    "llava": {"model_type": "llava", "text_config": _LLAMA,
              "vision_config": {"model_type": "clip_vision_model", "hidden_size": 32, "intermediate_size": 64,
                                "num_hidden_layers": 2, "num_attention_heads": 2, "image_size": 64, "patch_size": 16},
              "vision_feature_layer": -2, "vision_feature_select_strategy": "default"},
    "idefics3": {"model_type": "idefics3", "text_config": _LLAMA, "scale_factor": 2,
                 "vision_config": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
                                   "num_attention_heads": 2, "image_size": 64, "patch_size": 16}},
    "paligemma": {"model_type": "paligemma", "projection_dim": 64,
                  "text_config": {"model_type": "gemma", "hidden_size": 64, "intermediate_size": 128,
                                  "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 1,
                                  "head_dim": 16},
                  "vision_config": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
                                    "num_attention_heads": 2, "image_size": 64, "patch_size": 16, "projection_dim": 64}},
    "janus": {"model_type": "janus", "text_config": _LLAMA,
              "vision_config": {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "image_size": 64,
                                "patch_size": 16, "projection_dim": 64, "num_image_tokens": 16},
              "vq_config": {"embed_dim": 8, "num_embeddings": 64, "latent_channels": 32, "base_channels": 32,
                            "channel_multiplier": [1, 1, 2, 2, 4], "num_res_blocks": 1, "projection_dim": 64,
                            "image_token_embed_dim": 64}},
    "emu3": {"model_type": "emu3",
             "text_config": {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
                             "num_attention_heads": 4, "num_key_value_heads": 4},
             "vq_config": {"codebook_size": 32, "embed_dim": 4, "latent_channels": 4, "base_channels": 32,
                           "channel_multiplier": [1, 2, 2, 4], "attn_resolutions": [], "temporal_downsample_factor": 4,
                           "hidden_size": 128, "num_res_blocks": 1}},
}
"""Tiny random-init configs of every architecture of the hf family (values from shared/notes/tiny-hf-models.md)."""


def tiny_hf_model(model_type: str, steps: int = 0) -> dict:
    return {"family": "hf", "config": copy.deepcopy(TINY_HF_CONFIGS[model_type]), "seed": 0,
            "pretrain": {"dataset": "shapes", "split": "public", "steps": steps, "batch_size": 16, "lr": 0.002}}
