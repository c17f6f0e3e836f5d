"""What every dataset normalizer shares: the normalized record, image stores, split
assignment, and writing shards plus the dataset card.

Normalized record (one image + one task per sample; the pipeline reads these keys):

``id``
    unique within the dataset and safe as a tar member key: letters, digits, ``_``, ``-``.
``split``
    ``public``, ``train``, ``val`` or ``test`` (set when the record is assigned to a split).
``task``
    ``vqa``, ``caption``, ``classify`` or ``ground``.
``question``
    the prompt text; ``""`` for captions.
``answers``
    ``[{answer, answer_confidence, answer_id}, ...]``: VQA v2's 10 annotator answers; for
    single-answer VQA data (COCO-QA) the answer repeated 10 times so that the official VQA
    accuracy equals exact match; for the other tasks one entry holding the target.
``multiple_choice_answer``
    the training target of question tasks: the answer, the class name, or the box as text
    (``fedumm.evaluation.grounding.format_box``); ``""`` for captions, whose targets are ``captions``.
``answer_type``, ``question_type``
    VQA v2's fields; elsewhere the source's own types (COCO-QA), the question's opening words
    (``what is the manufacturer``, ``where is``), or the task's name (captions).
``caption``, ``captions``
    the first reference caption and all of them (``""``/``[]`` outside captioning).
``label``
    class or category name, ``""`` if none.
``box``
    ``[x0, y0, x1, y1]`` integer pixels with exclusive ``x1``/``y1``, or ``None``.
``domain``
    a partitionable attribute (source dataset, supercategory, subject, web host).
``source``
    provenance: ``{dataset, image_id, question_id/ann_id/..., ...}``.

Images keep their original encoded bytes (JPEG or PNG, no re-encoding), stored as
``{id}.jpg`` or ``{id}.png`` next to ``{id}.json``.
"""

from __future__ import annotations

import io
import json
import logging
import re
import tarfile
import zipfile
import zlib
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from fedumm.data import download, shards
from fedumm.io import atomic_write_json

log = logging.getLogger(__name__)

TASKS: tuple[str, ...] = ("vqa", "caption", "classify", "ground")
# A split the source lacks is carved (by image) out of the first of these the source has.
CARVE_FROM: dict[str, tuple[str, ...]] = {"test": ("val", "train"), "val": ("train",), "public": ("train",)}
# VQA v2 has 10 annotator answers per question; single-answer VQA data repeat theirs this often.
NUM_VQA_ANSWERS = 10
ID_PATTERN = re.compile(r"^[A-Za-z0-9_-]+$")
# What the pipeline reads from every record (batches, partition, evaluation, card).
REQUIRED_KEYS: frozenset[str] = frozenset(
    {"id", "split", "task", "question", "answers", "multiple_choice_answer", "caption", "label", *shards.CARD_FIELDS}
)
# Pillow format name -> member extension of the stored image.
IMAGE_FORMATS: dict[str, str] = {"JPEG": "jpg", "PNG": "png"}


# ----------------------------------------------------------------------------- records


def safe_key(text: str) -> str:
    """``text`` with every character outside ``[A-Za-z0-9_-]`` replaced by ``_`` (for ids)."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", text)


def single_answer(text: str, copies: int = 1) -> list[dict]:
    """``copies`` identical answer entries in the VQA v2 layout (answer ids 1..copies)."""
    return [{"answer": text, "answer_confidence": "yes", "answer_id": i + 1} for i in range(copies)]


def make_record(
    *,
    id: str,
    task: str,
    answers: list[dict],
    domain: str,
    source: dict,
    question: str = "",
    multiple_choice_answer: str = "",
    answer_type: str | None = None,
    question_type: str | None = None,
    captions: Sequence[str] = (),
    label: str = "",
    box: Sequence[int] | None = None,
) -> dict:
    """A normalized record without its ``split``; types default to the task's name."""
    return {
        "id": id,
        "task": task,
        "question": question,
        "answers": answers,
        "multiple_choice_answer": multiple_choice_answer,
        "answer_type": answer_type if answer_type is not None else task,
        "question_type": question_type if question_type is not None else task,
        "caption": captions[0] if captions else "",
        "captions": list(captions),
        "label": label,
        "box": list(box) if box is not None else None,
        "domain": domain,
        "source": source,
    }


def check_record(record: dict, where: str) -> None:
    """Raise ValueError naming ``where`` and the record when it breaks the normalized schema."""
    name = f"{where}: record {record.get('id')!r}"
    missing = sorted(REQUIRED_KEYS - set(record))
    if missing:
        raise ValueError(f"{name} lacks key(s) {', '.join(missing)}")
    if not isinstance(record["id"], str) or not ID_PATTERN.match(record["id"]):
        raise ValueError(f"{name}: id must match {ID_PATTERN.pattern} (letters, digits, _ and -)")
    if record["task"] not in TASKS:
        raise ValueError(f"{name}: task must be one of {TASKS}, got {record['task']!r}")
    for key in ("split", "question", "multiple_choice_answer", "caption", *shards.CARD_FIELDS):
        if not isinstance(record[key], str):
            raise ValueError(f"{name}: {key} must be a string, got {record[key]!r}")
    answers = record["answers"]
    if not isinstance(answers, list) or not answers or not all(
        isinstance(a, dict) and isinstance(a.get("answer"), str) for a in answers
    ):
        raise ValueError(f"{name}: answers must be a non-empty list of {{answer: str, ...}}")
    captions = record.get("captions", [])
    if not isinstance(captions, list) or not all(isinstance(c, str) for c in captions):
        raise ValueError(f"{name}: captions must be a list of strings")
    if record["task"] == "caption" and not (captions or record["caption"]):
        raise ValueError(f"{name}: a caption record needs at least one reference caption")
    box = record.get("box")
    if box is not None and (len(box) != 4 or not all(isinstance(v, (int, float)) for v in box)):
        raise ValueError(f"{name}: box must be [x0, y0, x1, y1] or null, got {box!r}")


# ----------------------------------------------------------------------------- source files


def load_json(path: Path) -> dict | list:
    """Parse a JSON file; a syntax error names the file."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON ({error})") from None


def find_file(root: str | Path, name: str) -> Path:
    """``root`` itself if it is a file, else the one file called ``name`` (a glob) under it."""
    root = Path(root)
    if root.is_file():
        return root
    matches = sorted(p for p in root.rglob(name) if p.is_file() and not p.name.startswith("."))
    if len(matches) != 1:
        found = ", ".join(str(m) for m in matches) or "none"
        raise FileNotFoundError(f"{root}: expected exactly one file matching {name!r}, found {found}")
    return matches[0]


def text_lines(path: Path) -> list[str]:
    """Lines of a UTF-8 text file without line ends; a trailing empty line is dropped."""
    return Path(path).read_text(encoding="utf-8").splitlines()


# ----------------------------------------------------------------------------- image stores


def _suffix_index(names: Iterable[str]) -> dict[str, str | None]:
    """Every trailing sub-path of every name -> the name, or None when several names share it.

    Lets ``train2014/COCO_train2014_000000000009.jpg`` be found as
    ``COCO_train2014_000000000009.jpg`` and ``train/17/image.png`` as ``17/image.png``,
    whatever folder the archive or directory wraps them in.
    """
    index: dict[str, str | None] = {}
    for name in names:
        parts = name.split("/")
        for k in range(len(parts)):
            key = "/".join(parts[k:])
            index[key] = name if index.get(key, name) == name else None
    return index


class ImageStore:
    """Encoded images by name from a folder, a zip archive or a tar file, read in place."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        if self.path.is_dir():
            self.kind = "folder"
            names = [p.relative_to(self.path).as_posix() for p in self.path.rglob("*") if p.is_file()]
        elif zipfile.is_zipfile(self.path):
            self.kind = "zip"
            self._zip = zipfile.ZipFile(self.path)
            names = [i.filename for i in self._zip.infolist() if not i.is_dir()]
        elif self.path.is_file() and tarfile.is_tarfile(self.path):
            self.kind = "tar"
            with tarfile.open(self.path) as tar:
                # Offsets allow reading one member with a seek instead of walking the tar.
                self._tar = {m.name: (m.offset_data, m.size) for m in tar if m.isfile()}
            names = list(self._tar)
        else:
            raise ValueError(f"{self.path}: not an image folder, zip or tar archive")
        self._index = _suffix_index(names)

    def member(self, name: str) -> str:
        """The stored name that ``name`` (a trailing sub-path) refers to."""
        found = self._index.get(name.strip("/"), "")
        if not found:
            problem = "several files" if found is None else "no file"
            raise KeyError(f"{self.path}: {problem} named {name!r}")
        return found

    def read(self, name: str) -> bytes:
        """The bytes of image ``name``; a missing or corrupt member is an error naming both."""
        member = self.member(name)
        try:
            if self.kind == "folder":
                return (self.path / member).read_bytes()
            if self.kind == "zip":
                return self._zip.read(member)
            offset, size = self._tar[member]
            with open(self.path, "rb") as handle:
                handle.seek(offset)
                return handle.read(size)
        except (zipfile.BadZipFile, zlib.error, OSError) as error:
            raise ValueError(f"{self.path}: cannot read {member!r} ({error})") from None


def image_extension(encoded: bytes, where: str) -> str:
    """``jpg`` or ``png`` from the image bytes themselves; anything else is an error naming ``where``."""
    try:
        with Image.open(io.BytesIO(encoded)) as image:
            image_format = image.format
    except (UnidentifiedImageError, OSError) as error:
        raise ValueError(f"{where}: not a readable image ({error})") from None
    if image_format not in IMAGE_FORMATS:
        raise ValueError(f"{where}: unsupported image format {image_format} (JPEG and PNG are kept as they are)")
    return IMAGE_FORMATS[image_format]


# ----------------------------------------------------------------------------- splits


@dataclass(frozen=True)
class Item:
    """A record waiting for its split, and where its image is: ``store`` (path) + ``image`` (name).

    Items of one ``group`` (one image) always land in the same split.
    """

    record: dict
    store: str
    image: str
    group: str


def _rng(seed: int, purpose: str, split: str) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, shards.split_code(purpose), shards.split_code(split)]))


def take(items: Sequence[Item], n: int, rng: np.random.Generator) -> tuple[list[Item], list[Item]]:
    """The first ``n`` items of a seeded permutation of whole groups, and the items of every
    group left untouched (a group cut by ``n`` goes to neither side, so no image is shared)."""
    groups: dict[str, list[Item]] = {}
    for item in items:
        groups.setdefault(item.group, []).append(item)
    keys = list(groups)
    chosen: list[Item] = []
    rest: list[Item] = []
    for k in rng.permutation(len(keys)):
        group = groups[keys[k]]
        if len(chosen) < n:
            chosen.extend(group[: n - len(chosen)])
        else:
            rest.extend(group)
    return chosen, rest


def assign_splits(pools: dict[str, list[Item]], caps: dict[str, int], seed: int) -> dict[str, list[Item]]:
    """Records of each split in ``caps``: at most ``caps[split]`` of the source's own split, drawn
    by image with a seeded shuffle, sorted by id.

    A split the source lacks (e.g. VQA v2 has no test annotations) is carved out of another by
    image (:data:`CARVE_FROM`): exactly ``caps[split]`` records if the donor has them, before the
    donor's own selection, so no image is in two splits.
    """
    pools = dict(pools)
    for split in ("test", "val", "public"):
        if caps.get(split, 0) > 0 and not pools.get(split):
            donor = next((d for d in CARVE_FROM[split] if pools.get(d)), None)
            if donor is None:
                raise ValueError(
                    f"split {split!r}: the source has no {split} split, and {' or '.join(CARVE_FROM[split])} "
                    "has no records left to carve it from"
                )
            pools[split], pools[donor] = take(pools[donor], caps[split], _rng(seed, "carve", split))
            log.info("carved %d %s records out of %s", len(pools[split]), split, donor)
    assigned = {}
    for split, cap in caps.items():
        chosen, _ = take(pools.get(split, []), cap, _rng(seed, "select", split))
        if len(chosen) < cap:
            log.warning("split %s: %d records available, fewer than the %d asked for", split, len(chosen), cap)
        assigned[split] = sorted(chosen, key=lambda item: item.record["id"])
    return assigned


# ----------------------------------------------------------------------------- output


def _encoded_samples(
    items: Sequence[Item], split: str, stores: dict[str, ImageStore]
) -> Iterator[tuple[dict, str, bytes]]:
    for item in items:
        record = {**item.record, "split": split}
        check_record(record, item.store)
        if item.store not in stores:  # opened once: a zip's directory is read once
            stores[item.store] = ImageStore(Path(item.store))
        encoded = stores[item.store].read(item.image)
        yield record, image_extension(encoded, f"{item.store}: {item.image}"), encoded


def write_dataset(out_dir: Path, assigned: dict[str, list[Item]], shard_size: int, card: dict) -> dict:
    """Write each split as shards ``{split}-{i:05d}.tar`` and ``card.json`` (written last); return the card.

    The card is ``card`` plus ``shard_size``, ``num_samples``, ``shards`` and per split
    ``value_counts`` over ``fedumm.data.shards.CARD_FIELDS``, as for the shapes dataset.
    """
    out_dir = Path(out_dir)
    counts = Counter(item.record["id"] for items in assigned.values() for item in items)
    duplicates = sorted(i for i, c in counts.items() if c > 1)
    if duplicates:
        raise ValueError(f"{len(duplicates)} record id(s) occur more than once, e.g. {duplicates[:3]}")
    card = {**card, "shard_size": shard_size, "num_samples": {}, "shards": {}, "value_counts": {}}
    stores: dict[str, ImageStore] = {}
    for split, items in assigned.items():
        paths = shards.shard_paths(out_dir, split, len(items), shard_size)
        for k, path in enumerate(tqdm(paths, desc=f"write {split}", mininterval=5)):
            chunk = items[k * shard_size : (k + 1) * shard_size]
            shards.write_encoded_shard(path, _encoded_samples(chunk, split, stores))
        card["num_samples"][split] = len(items)
        card["shards"][split] = [p.name for p in paths]
        card["value_counts"][split] = shards.value_counts({**item.record, "split": split} for item in items)
    atomic_write_json(out_dir / "card.json", card)
    return card


# ----------------------------------------------------------------------------- sources


def source_and_checksum(entry: str | dict) -> tuple[str, str | None]:
    """A config source entry (a URL/path, or ``{url, sha256 | md5}``) as (source, checksum)."""
    if isinstance(entry, str):
        return entry, None
    for algorithm in download.CHECKSUM_ALGORITHMS:
        if algorithm in entry:
            return entry["url"], f"{algorithm}:{entry[algorithm]}"
    return entry["url"], None


def _is_entry(value: object) -> bool:
    return value is None or isinstance(value, str) or (isinstance(value, dict) and "url" in value)


def source_roles(defaults: dict, overrides: dict, prefix: str = "") -> dict[str, str | dict | None]:
    """Config ``sources`` merged over a kind's published defaults, flattened to roles such as
    ``train.questions`` (nested keys joined by dots)."""
    roles: dict[str, str | dict | None] = {}
    for key in sorted(set(defaults) | set(overrides)):
        value = overrides.get(key, defaults.get(key))
        if _is_entry(value):
            roles[prefix + key] = value
        else:
            roles.update(source_roles(defaults.get(key, {}), overrides.get(key, {}), f"{prefix}{key}."))
    return roles


def resolve_source(role: str, entry: str | dict, cache: Path, policy: download.RetryPolicy, unpack: bool) -> str:
    """The local path of one source: a folder as is, a file fetched into ``cache/role/``, and,
    with ``unpack``, an archive extracted next to it. Image zips stay packed (read in place)."""
    source, checksum = source_and_checksum(entry)
    if not download.is_remote(source) and download.local_path(source).is_dir():
        return str(download.local_path(source))
    name = download.source_name(source)
    dest = Path(cache) / role / name
    if unpack and name.lower().endswith(download.ARCHIVE_SUFFIXES):
        target = Path(cache) / role / download.archive_stem(name)
        return str(download.fetch_archive(source, dest, target, checksum, policy))
    path = download.fetch(source, dest, checksum, policy)
    if name.lower().endswith(".zip"):
        download.check_zip(path, source)
    return str(path)


def retry_policy(spec: dict) -> download.RetryPolicy:
    """The dataset's ``download`` settings (retries, backoff, timeout) over the defaults."""
    return download.RetryPolicy(**spec.get("download", {}))
