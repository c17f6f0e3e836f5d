"""The ``mixture`` dataset kind: several normalized datasets mixed into one (FedVLMBench's
multitask setting, Fed-Nature / Fed-Med, where each client holds one task drawn from its own
source dataset).

For every split of the config's ``splits``, at most ``splits[split]`` samples are drawn from
the parts' own split (``results/data/{part}``) and written with their original image bytes:

* **Spread** (:func:`spread`): the cap is shared evenly over the parts, in the config's order;
  the remainder of an uneven division goes one each to the first parts; a part with fewer
  samples than its share gives all it has and its unused share is spread over the others
  the same way. So the split holds ``min(cap, sum of the parts' sizes)`` samples and the
  non-exhausted parts' counts differ by at most one.
* **Draw**: each part's samples are a seeded shuffle of its split (stream ``(seed, split,
  part)``, so resizing one split or part leaves the others' draws unchanged), first ``n`` kept.
* **Records**: unchanged except ``id``, prefixed ``{safe_key(part)}_`` so ids stay unique
  across parts, and a top-level ``dataset`` holding the part's name (``source.dataset``,
  where the part has one, is kept), which ``partition.label: dataset`` reads.
* **Order**: parts in config order, each part's samples in its shard order.
"""

from __future__ import annotations

import itertools
import logging
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from fedumm.data.shards import (
    IMAGE_EXTENSIONS,
    iter_members,
    read_records,
    shard_paths,
    split_code,
    split_shards,
    value_counts,
    write_encoded_shard,
)
from fedumm.data.sources.common import check_record, safe_key
from fedumm.io import atomic_write_json

log = logging.getLogger(__name__)

DEFAULT_SHARD_SIZE = 1000


def spread(cap: int, available: dict[str, int]) -> dict[str, int]:
    """Samples to take from each part (keys in config order): ``cap`` shared evenly, see the module doc."""
    counts = dict.fromkeys(available, 0)
    remaining = cap
    open_parts = [part for part, n in available.items() if n > 0]
    # Each pass either places every remaining sample or exhausts at least one part: it ends.
    while remaining > 0 and open_parts:
        share, extra = divmod(remaining, len(open_parts))
        for i, part in enumerate(open_parts):
            give = min(share + (i < extra), available[part] - counts[part])
            counts[part] += give
            remaining -= give
        open_parts = [part for part in open_parts if counts[part] < available[part]]
    return counts


def mixed_id(part: str, record_id: str) -> str:
    """The id of a part's sample in the mixture: tar-safe part name, ``_``, original id."""
    return f"{safe_key(part)}_{record_id}"


def draw(n_records: int, n: int, seed: int, split: str, part: str) -> list[int]:
    """Positions of the ``n`` samples drawn from a part's split of ``n_records``, ascending."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, split_code(split), split_code(part)]))
    return sorted(int(i) for i in rng.permutation(n_records)[:n])


def mixed_record(record: dict, part: str) -> dict:
    """A part's record as the mixture stores it: prefixed id and the part name in ``dataset``."""
    return {**record, "id": mixed_id(part, record["id"]), "dataset": part}


def part_shards(part: str, part_dir: Path, split: str) -> list[Path]:
    """The shards of a part's split; a split the part lacks is an error naming both."""
    try:
        return split_shards(part_dir, split)
    except KeyError:
        raise ValueError(
            f"mixture part {part!r} ({part_dir}) has no {split!r} split; set splits.{split}: 0 "
            f"or mix datasets that have one"
        ) from None


def _check_unique(records: Sequence[dict], split: str) -> None:
    counts = Counter(record["id"] for record in records)
    duplicates = sorted(i for i, c in counts.items() if c > 1)
    if duplicates:  # two part names equal after safe_key, e.g. "a.b" and "a_b"
        raise ValueError(
            f"split {split!r}: {len(duplicates)} mixed id(s) occur twice, e.g. {duplicates[:3]}; rename a part"
        )


def _samples(
    chosen: dict[str, list[dict]], shards: dict[str, list[Path]]
) -> Iterator[tuple[dict, str, bytes]]:
    """``(record, extension, image bytes)`` of the chosen records, streamed from the parts' shards
    (images are read one at a time, not held in memory)."""
    for part, records in chosen.items():
        by_key = {record["source_key"]: record for record in records}
        seen: set[str] = set()
        for shard in shards[part]:
            members = iter_members(shard, lambda key, ext: key in by_key and ext in IMAGE_EXTENSIONS)
            for key, ext, encoded in members:
                if key in seen:
                    raise ValueError(f"{shard}: sample {key!r} has more than one image member")
                seen.add(key)
                record = dict(by_key[key])
                del record["source_key"]
                yield record, ext, encoded
        missing = sorted(set(by_key) - seen)
        if missing:
            raise ValueError(f"mixture part {part!r}: sample(s) without an image member, e.g. {missing[:3]}")


def select_split(
    parts: dict[str, Path], split: str, cap: int, seed: int
) -> tuple[dict[str, list[dict]], dict[str, list[Path]]]:
    """The mixed records drawn from each part's ``split`` (each with a transient ``source_key``,
    the part's own id, to find its image) and the parts' shards."""
    shards = {part: part_shards(part, path, split) for part, path in parts.items()} if cap > 0 else {}
    part_records = {part: read_records(paths) for part, paths in shards.items()}
    counts = spread(cap, {part: len(records) for part, records in part_records.items()})
    chosen = {}
    for part, records in part_records.items():
        picked = [records[i] for i in draw(len(records), counts[part], seed, split, part)]
        chosen[part] = [{**mixed_record(r, part), "split": split, "source_key": r["id"]} for r in picked]
    if sum(counts.values()) < cap:
        log.warning("split %s: the parts hold %d samples, fewer than the %d asked for",
                    split, sum(counts.values()), cap)
    return chosen, shards


def write_mixture(name: str, spec: dict, part_dirs: dict[str, Path], out_dir: Path) -> dict:
    """Write mixture ``name`` (``spec``: ``parts``, ``splits``, ``seed``, ``shard_size``) from the
    normalized datasets in ``part_dirs`` (part name → directory) as shards + ``card.json``
    (written last); return the card."""
    out_dir = Path(out_dir)
    parts = {part: Path(part_dirs[part]) for part in spec["parts"]}
    seed, shard_size = spec.get("seed", 0), spec.get("shard_size", DEFAULT_SHARD_SIZE)
    card: dict = {
        "name": name, "kind": "mixture", "parts": list(parts), "seed": seed, "splits_requested": spec["splits"],
        "shard_size": shard_size, "num_samples": {}, "samples_per_part": {}, "shards": {}, "value_counts": {},
    }
    for split, cap in spec["splits"].items():
        chosen, shards = select_split(parts, split, cap, seed)
        records = [record for part_records in chosen.values() for record in part_records]
        _check_unique(records, split)
        for record in records:
            check_record(record, f"mixture {name}")
        paths = shard_paths(out_dir, split, len(records), shard_size)
        samples = _samples(chosen, shards)
        for path in paths:
            write_encoded_shard(path, itertools.islice(samples, shard_size))
        if next(samples, None) is not None:  # also runs the last part's missing-image check
            raise RuntimeError(f"split {split!r}: more samples than records")
        card["num_samples"][split] = len(records)
        card["samples_per_part"][split] = {part: len(chosen.get(part, [])) for part in parts}
        card["shards"][split] = [p.name for p in paths]
        card["value_counts"][split] = value_counts(records)
        log.info("split %s: %s", split, card["samples_per_part"][split])
    atomic_write_json(out_dir / "card.json", card)
    return card
