"""The artifact contract: names of the files that jobs exchange, and reading and writing them.

A round directory ``results/{exp}/round_{r:03d}/`` holds ``global/`` (the global adapter),
``server_state.safetensors``, ``aggregate.json``, ``eval.json`` and ``clients/{k}/`` (each
client's adapter, ``client_state.safetensors`` and ``metrics.json``); docs/ARCHITECTURE.md
describes every file. Client, server and the workflow's input functions take the names from here.
Tensors are safetensors files only: a pickle is never read, so an upload cannot run code.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import TYPE_CHECKING

from fedumm.io import atomic_write_bytes, atomic_write_json

if TYPE_CHECKING:
    import torch

# torch and safetensors are imported by the functions that read and write tensors: the workflow
# imports this module for its file names while it builds the DAG, which must not load torch.
Weights = dict[str, "torch.Tensor"]

# peft's own names (peft.utils.CONFIG_NAME / SAFETENSORS_WEIGHTS_NAME), so that every adapter
# directory loads with plain `PeftModel.from_pretrained`; a test checks they still agree.
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
CLIENT_STATE = "client_state.safetensors"
SERVER_STATE = "server_state.safetensors"
METRICS = "metrics.json"
AGGREGATE_SUMMARY = "aggregate.json"
EVAL = "eval.json"
GENEVAL_SCORES = "geneval.json"  # a round's text-to-image scores, merged into eval.json as its `geneval` block
GENEVAL_SAMPLES = "geneval"  # a round's generated images per evaluated adapter, in GenEval's folder layout
SAMPLES_GRID = "samples.png"  # a round's grid of generated images with their prompts
BASE_SPEC = "spec.json"  # a base model directory's record of the model entry it was built from
RESOLVED_CONFIG = "config.yaml"  # results/{exp}/: the experiment's resolved config (fedumm.reports.identity)
GLOBAL_DIR = "global"
CLIENTS_DIR = "clients"
# A client state file holds what the client keeps for its next round and what it uploads,
# under these key prefixes; the server reads only the upload part.
LOCAL, UPLOAD = "local.", "upload."
SAFETENSORS_METADATA = {"format": "pt"}  # fixed metadata keeps the files byte-identical
UPLOAD_BINDING = "binding"  # metrics.json key: what an upload is bound to (fedumm.federated.server.check_binding)


def round_dir(results: str | Path, exp: str, r: int | str) -> str:
    """``{results}/{exp}/round_{r:03d}``; a wildcard pattern such as ``"{r}"`` is kept as it is."""
    r = r if isinstance(r, str) and r.startswith("{") else f"{int(r):03d}"
    return f"{results}/{exp}/round_{r}"


def client_index_name(client: int) -> str:
    """The partition's index file of a client (its sample ids per split); ``CLIENT_INDEX`` matches it."""
    return f"client_{client:03d}.json"


CLIENT_INDEX = re.compile(r"^client_(\d+)\.json$")
GENERATION_IDS = "generation_ids"
"""Key of a client index file listing its text-to-image training ids (``fedumm.partition.rounds``)."""


def read_weights(path: Path) -> Weights:
    """Load a safetensors file; any other format (e.g. a pickle) is an error, never executed."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as error:
        raise ValueError(f"{path}: not a readable safetensors file ({error})") from None


def check_keys(what: str, state: Weights, expected: set[str]) -> None:
    """Refuse ``state`` unless its tensor names are exactly ``expected``, naming up to three of
    the missing and unexpected ones (an adapter, a dense delta or a strategy's state file)."""
    if set(state) != expected:
        raise ValueError(f"{what} mismatch: missing {sorted(expected - set(state))[:3]}, "
                         f"unexpected {sorted(set(state) - expected)[:3]}")


def write_weights(path: Path, weights: Weights) -> None:
    """Serialize deterministically (safetensors orders tensors itself) and write atomically."""
    from safetensors.torch import save

    atomic_write_bytes(path, save({k: v.contiguous() for k, v in weights.items()}, metadata=SAFETENSORS_METADATA))


def client_state_tensors(local: Weights, upload: Weights) -> Weights:
    """The tensors of a client state file: ``local.<name>`` and ``upload.<name>``."""
    return {**{LOCAL + k: v for k, v in local.items()}, **{UPLOAD + k: v for k, v in upload.items()}}


def client_state_part(tensors: Weights, prefix: str) -> Weights:
    """The ``local`` (prefix LOCAL) or ``upload`` (prefix UPLOAD) part of a client state file."""
    return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}


def read_metrics(path: Path) -> dict:
    """A client's ``metrics.json``: a JSON object, or a ValueError that names the file."""
    metrics = json.loads(Path(path).read_text())
    if not isinstance(metrics, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(metrics).__name__}")
    return metrics


def write_metrics(path: Path, metrics: dict) -> None:
    atomic_write_json(path, metrics)


def file_sha256(path: Path) -> str:
    """The sha256 of a file's bytes, hex: what binds an upload to the adapter it started from."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()
