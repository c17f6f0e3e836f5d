"""Provenance of every round: which adapter bytes, from which config and which code.

``lineage.jsonl`` has one line per round (per client adapter for the ``local`` kind) with
the sha256 of the adapter file, so anyone holding an adapter can tell where it came from
and check that a rerun or a resumed run reproduced it bit for bit.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
from pathlib import Path

import fedumm
from fedumm.io import atomic_write_text

ROUND_DIR = re.compile(r"round_(\d+)")
"""A round directory's name: round_000 .. round_999, then round_1000, ... (``fedumm.artifacts.round_dir``)."""


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def code_version() -> str:
    """Package version plus the git commit of the checkout it runs from, when there is one."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"],
            cwd=Path(fedumm.__file__).parent, capture_output=True, text=True, check=True, timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return fedumm.__version__
    return f"{fedumm.__version__}+g{commit}"


def lineage_records(adapter_files: list[Path], config_hash: str, code: str) -> list[dict]:
    """One record per adapter file, in round order."""
    records = []
    for path in adapter_files:
        # The round directory nearest the file: round_1000 is round 1000 (not 100), and an
        # experiment named like a round directory is not mistaken for one.
        round_index = next(int(m.group(1)) for parent in path.parents if (m := ROUND_DIR.fullmatch(parent.name)))
        owner = path.parent.name if path.parent.parent.name == "clients" else "global"
        records.append(
            {
                "round": round_index,
                "adapter": owner,
                "path": str(path),
                "sha256": sha256_file(path),
                "config_hash": config_hash,
                "code_version": code,
            }
        )
    return sorted(records, key=lambda record: (record["round"], record["adapter"]))


def write_lineage(path: Path, records: list[dict]) -> None:
    atomic_write_text(path, "".join(json.dumps(record, sort_keys=True) + "\n" for record in records))
