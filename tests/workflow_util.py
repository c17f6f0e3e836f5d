"""Small configs and a runner for tests that execute the real Snakemake workflow."""

from __future__ import annotations

import base64
import copy
import json
import os
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile")]

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


def tiny_config(experiments: dict | None = None, **defaults) -> dict:
    """A config of the real workflow, small enough that one job takes seconds on a CPU."""
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    config["datasets"]["shapes"].update(
        splits={"public": 200, "train": 120, "val": 24, "test": 40}, shard_size=100
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
