"""The normalized shard format every dataset is written in, and reading it back.

A dataset directory holds webdataset tar shards ``{split}-{i:05d}.tar`` (members ``{id}.json`` + the
image as ``{id}.png``, ``.jpg`` or ``.jpeg``, with fixed tar metadata, hence byte-reproducible) and
``card.json``, which lists each split's shards and value counts. The shapes generator and every real
dataset source write this format; every later stage reads it through this module.
"""

from __future__ import annotations

import io
import json
import math
import tarfile
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from PIL import Image

from fedumm.io import atomic_path

CARD_FIELDS: tuple[str, ...] = (
    "task",
    "answer_type",
    "question_type",
    "label",
    "domain",
    "multiple_choice_answer",
)
GENERATE_TASK = "generate"
"""The ``task`` of a text-to-image record: a ``prompt`` and its image (``fedumm.data.geneval``)."""
RECORD_KEYS: frozenset[str] = frozenset(
    {
        "id",
        "split",
        "task",
        "question_id",
        "question",
        "answers",
        "multiple_choice_answer",
        "answer_type",
        "question_type",
        "caption",
        "label",
        "box",
        "box_shape",
        "domain",
        "objects",
    }
)
# Image members a shard may hold: shapes writes PNG; real datasets keep their original
# JPEG or PNG bytes (no re-encoding). The extension is the member name's, lower-case.
IMAGE_EXTENSIONS: tuple[str, ...] = ("png", "jpg", "jpeg")


def split_code(split: str) -> int:
    """Stable integer for a split name (CRC-32), used in seeds and question ids."""
    return zlib.crc32(split.encode("utf-8"))


def shard_paths(out_dir: Path, split: str, n_samples: int, shard_size: int) -> list[Path]:
    """Shard files ``{split}-{i:05d}.tar`` that hold ``n_samples`` samples.

    An empty split still gets one (empty) shard so that every split has an output file.
    """
    check_count("n_samples", n_samples)
    check_positive("shard_size", shard_size)
    n_shards = max(1, math.ceil(n_samples / shard_size))
    return [Path(out_dir) / f"{split}-{i:05d}.tar" for i in range(n_shards)]


def _png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    # Explicit settings: Pillow adds no timestamp chunk, so the bytes are a
    # function of the pixels only.
    image.save(buffer, format="PNG", compress_level=6)
    return buffer.getvalue()


def _add_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    # Fixed metadata so identical content gives identical bytes.
    info.mtime, info.mode, info.uid, info.gid, info.uname, info.gname = 0, 0o644, 0, 0, "", ""
    tar.addfile(info, io.BytesIO(data))


def write_shard(path: Path, samples: Iterable[tuple[dict, Image.Image]]) -> None:
    """Atomically write ``(record, image)`` pairs as a webdataset tar shard (PNG images)."""
    write_encoded_shard(path, ((record, "png", _png_bytes(image)) for record, image in samples))


def write_encoded_shard(path: Path, samples: Iterable[tuple[dict, str, bytes]]) -> None:
    """Atomically write ``(record, image extension, encoded image bytes)`` as a webdataset tar shard.

    Members are ``{id}.json`` then ``{id}.{extension}``; the extension must be one of
    :data:`IMAGE_EXTENSIONS`.
    """
    with atomic_path(path) as tmp, tarfile.open(tmp, "w", format=tarfile.USTAR_FORMAT) as tar:
        for record, extension, image_bytes in samples:
            if extension not in IMAGE_EXTENSIONS:
                raise ValueError(f"sample {record['id']!r}: image extension must be one of {IMAGE_EXTENSIONS}, got {extension!r}")
            _add_member(tar, f"{record['id']}.json", json.dumps(record, sort_keys=True).encode("utf-8"))
            _add_member(tar, f"{record['id']}.{extension}", image_bytes)


def value_counts(records: Iterable[dict], fields: Iterable[str] = CARD_FIELDS) -> dict[str, dict[str, int]]:
    """Per field, the number of records per value (values sorted); a record without the field (a
    ``generate`` record has no answer) is not counted in it."""
    fields = tuple(fields)
    counters: dict[str, Counter] = {f: Counter() for f in fields}
    for record in records:
        for f in fields:
            if f in record:
                counters[f][record[f]] += 1
    return {f: dict(sorted(c.items())) for f, c in counters.items()}


def check_count(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name} must be a non-negative int, got {value!r}")


def check_positive(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")


def iter_members(shard: Path, keep: Callable[[str, str], bool]) -> Iterator[tuple[str, str, bytes]]:
    """Yield (key, extension, bytes) of the shard members that ``keep(key, ext)`` accepts, in tar order."""
    with tarfile.open(shard, "r") as tar:
        for member in tar:
            key, _, ext = Path(member.name).name.partition(".")
            if member.isfile() and keep(key, ext):
                yield key, ext, tar.extractfile(member).read()


def read_records(shards: Iterable[Path]) -> list[dict]:
    """The JSON records of ``shards`` in shard order, without decoding images."""
    return [
        json.loads(data)
        for shard in shards
        for _, _, data in iter_members(shard, lambda key, ext: ext == "json")
    ]


def read_samples(shards: Iterable[Path], ids: set[str] | None = None) -> list[dict]:
    """Records with an extra ``"image"`` (RGB ``PIL.Image``), optionally only those in ``ids``.

    Each sample's image is its one ``.png``, ``.jpg`` or ``.jpeg`` member (:data:`IMAGE_EXTENSIONS`).
    """
    samples = []
    for shard in shards:
        parts: dict[str, dict[str, bytes]] = {}
        for key, ext, data in iter_members(shard, lambda key, ext: ids is None or key in ids):
            parts.setdefault(key, {})[ext] = data
        for key, files in parts.items():
            images = [ext for ext in IMAGE_EXTENSIONS if ext in files]
            if "json" not in files or len(images) != 1:
                raise ValueError(
                    f"shard {shard}: sample {key!r} needs a .json and exactly one image member "
                    f"({', '.join('.' + e for e in IMAGE_EXTENSIONS)}), has {sorted(files)}"
                )
            record = json.loads(files["json"])
            with Image.open(io.BytesIO(files[images[0]])) as image:
                record["image"] = image.convert("RGB")
            samples.append(record)
    return samples


def vocabulary(records: Iterable[dict]) -> list[str]:
    """Sorted unique whitespace-separated words of questions, all answers, captions, labels and
    the prompts of ``generate`` records.

    Captions are ``caption`` plus, when a record has them, every reference in ``captions``.
    """
    words: set[str] = set()
    for record in records:
        for key in ("question", "caption", "label", "prompt"):
            words.update(record.get(key, "").split())
        for caption in record.get("captions", ()):
            words.update(caption.split())
        for answer in record.get("answers", ()):
            words.update(answer["answer"].split())
    return sorted(words)


def majority_answer(records: Iterable[dict]) -> str:
    """Most common ``multiple_choice_answer`` (ties: alphabetically first), for the majority baseline."""
    counts = Counter(r["multiple_choice_answer"] for r in records)
    if not counts:
        raise ValueError("records must not be empty to compute a majority answer")
    return min(counts, key=lambda a: (-counts[a], a))


def split_shards(dataset_dir: Path, split: str) -> list[Path]:
    """The shards of ``split`` in a generated dataset directory, as listed by its card."""
    card_file = Path(dataset_dir) / "card.json"
    if not card_file.exists():
        raise FileNotFoundError(f"{card_file}: no dataset card; was the dataset generated?")
    shards = json.loads(card_file.read_text())["shards"]
    if split not in shards:
        raise KeyError(f"{dataset_dir}: no split {split!r} (has: {', '.join(sorted(shards))})")
    return [Path(dataset_dir) / name for name in shards[split]]
