"""Real datasets: download (resumable, verified) and normalization into the shard format of
``fedumm.data`` (``{split}-{i:05d}.tar`` of ``{id}.json`` + image, and ``card.json``).

Two stages, one workflow rule each:

1. :func:`download_dataset` fetches a dataset's sources into a cache directory
   (``resources/downloads/{dataset}/``), which is not a rule output, so a failed or killed run
   keeps what it fetched and the next run resumes; it returns a manifest of local paths.
2. :func:`normalize_dataset` reads the manifest's files, builds normalized records
   (``fedumm.data.sources.common``), selects each split and writes the shards and card.

One module per family: ``coco`` (VQA v2, Karpathy captions, COCO-QA, RefCOCO), ``fgvc``,
``scienceqa``, ``image_text`` (CC3M/CC12M) and ``folder`` (private data already normalized).
The ``mixture`` kind downloads nothing: :mod:`fedumm.data.sources.mixture` mixes already normalized
datasets (FedVLMBench's multitask setting) in a rule of its own.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from fedumm.data.download import DownloadError
from fedumm.data.sources import coco, fgvc, folder, image_text, scienceqa
from fedumm.data.sources.common import (
    assign_splits,
    resolve_source,
    retry_policy,
    source_roles,
    write_dataset,
)

log = logging.getLogger(__name__)

# Config keys that only the normalization reads: changing them does not download again.
NORMALIZE_KEYS: frozenset[str] = frozenset({"seed", "shard_size", "splits", "split_by"})
DEFAULT_SHARD_SIZE = 1000


@dataclass(frozen=True)
class Kind:
    """A dataset kind: its published sources, which of them are image stores (kept packed, not
    extracted), and how its files become items per source split."""

    pools: Callable[[dict, dict], dict]
    sources: dict = field(default_factory=dict)
    image_roles: frozenset[str] = frozenset()


KINDS: dict[str, Kind] = {
    "vqav2": Kind(coco.vqav2_pools, coco.VQAV2_SOURCES, frozenset({"train.images", "val.images"})),
    "coco_karpathy": Kind(coco.karpathy_pools, coco.KARPATHY_SOURCES, frozenset({"train2014", "val2014"})),
    "cocoqa": Kind(coco.cocoqa_pools, coco.COCOQA_SOURCES, frozenset({"train2014", "val2014"})),
    "refcoco": Kind(coco.refcoco_pools, coco.REFCOCO_SOURCES, frozenset({"train2014"})),
    "fgvc_aircraft": Kind(fgvc.fgvc_pools, fgvc.SOURCES),
    "scienceqa": Kind(
        scienceqa.scienceqa_pools, scienceqa.SOURCES, frozenset({"images.train", "images.val", "images.test"})
    ),
    "image_text": Kind(image_text.image_text_pools),
    "folder": Kind(folder.folder_pools),
}


def kind_of(name: str, spec: dict) -> Kind:
    if spec["kind"] not in KINDS:
        raise ValueError(f"dataset {name!r}: kind {spec['kind']!r} is not downloadable (known: {sorted(KINDS)})")
    return KINDS[spec["kind"]]


def dataset_group(spec: dict) -> str:
    """Which rules build a dataset: ``shapes`` (generated), ``mixture`` (mixed from other
    datasets, :mod:`fedumm.data.sources.mixture`) or ``downloaded`` (every other kind)."""
    return spec["kind"] if spec["kind"] in ("shapes", "mixture") else "downloaded"


def names_pattern(datasets: dict[str, dict], downloaded: bool | None = None, group: str | None = None) -> str:
    """A regex matching exactly the names of the datasets of one :func:`dataset_group` (``group``,
    or ``downloaded``: True for ``downloaded``, False for ``shapes``): the wildcard constraint that
    sends each dataset to its rules. ``(?!)``, which matches nothing, when there is none."""
    if group is None:
        group = "downloaded" if downloaded else "shapes"
    names = [name for name, spec in datasets.items() if dataset_group(spec) == group]
    return "|".join(re.escape(name) for name in names) or "(?!)"


def download_spec(spec: dict) -> dict:
    """The part of a dataset's config that the download stage depends on."""
    return {key: value for key, value in spec.items() if key not in NORMALIZE_KEYS}


def download_dataset(name: str, spec: dict, cache: Path) -> dict:
    """Fetch dataset ``name``'s sources into ``cache``; return its manifest (local paths by role).

    Raises DownloadError naming the source (and the config key when a source has no
    published default and the config sets none).
    """
    kind = kind_of(name, spec)
    if spec["kind"] == "folder":
        if not (Path(spec["path"]) / "card.json").is_file():
            raise DownloadError(f"datasets.{name}.path: {spec['path']} has no card.json")
        return {"path": spec["path"]}
    if spec["kind"] == "image_text":
        return image_text.download_image_text(spec, cache)
    policy = retry_policy(spec)
    roles = source_roles(kind.sources, spec.get("sources", {}))
    unset = [role for role, entry in roles.items() if entry is None]
    if unset:  # checked before fetching anything
        raise DownloadError(f"datasets.{name}.sources.{unset[0]}: no published URL; set a URL or a local path")
    manifest = {}
    for role, entry in roles.items():
        log.info("source %s: %s", role, entry)
        manifest[role] = resolve_source(role, entry, cache, policy, unpack=role not in kind.image_roles)
    return manifest


def normalize_dataset(name: str, spec: dict, manifest: dict, out_dir: Path) -> dict:
    """Write dataset ``name`` from its downloaded files as shards + ``card.json``; return the card."""
    pools = kind_of(name, spec).pools(spec, manifest)
    log.info("source records per split: %s", {split: len(items) for split, items in pools.items()})
    assigned = assign_splits(pools, spec["splits"], spec.get("seed", 0))
    card = {"name": name, "kind": spec["kind"], "seed": spec.get("seed", 0), "splits_requested": spec["splits"]}
    return write_dataset(out_dir, assigned, spec.get("shard_size", DEFAULT_SHARD_SIZE), card)
