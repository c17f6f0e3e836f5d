"""Web image-caption pairs (Conceptual Captions CC3M and CC12M): a list of (caption, URL) rows
whose images are fetched in parallel.

List formats (``format``):

* ``cc3m_tsv``: ``caption<TAB>url`` per line, no header (``Train_GCC-training.tsv``,
  ``Validation_GCC-1.1.0-Validation.tsv``);
* ``cc12m_tsv``: ``url<TAB>caption`` per line, no header (``cc12m.tsv``);
* ``parquet``: a table with string columns ``url`` and ``caption``.

The download stage reads rows ``[0, max_samples)`` of each list and fetches their images with
a thread pool into raw shards of ``rows_per_shard`` rows, ``images_{rows}/{split}-{i:05d}.tar``
(``{row:09d}.json`` = ``{id, row, url, caption}`` and the image as served, JPEG or PNG). A raw
shard is written atomically once all its rows were tried, after its ``.status.json`` (its row
range and failures), so a rerun keeps every finished shard and resumes at the first missing one;
a shard whose row range changed (a larger ``max_samples`` extends the last one) is fetched
again. URLs that fail (after the retries), or serve anything but a complete JPEG or PNG image,
are skipped and recorded in the status file and in ``failures.tsv`` (``split, row, url,
error``). Each record's domain is the image's web host. Changing a list's content needs a
fresh download folder.
"""

from __future__ import annotations

import io
import logging
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from PIL import Image
from tqdm import tqdm

from fedumm.data import download
from fedumm.data.shards import read_records, write_encoded_shard
from fedumm.data.sources.common import (
    Item,
    image_extension,
    load_json,
    make_record,
    retry_policy,
    single_answer,
    source_and_checksum,
)
from fedumm.data.sources.folder import image_members
from fedumm.io import atomic_write_json, atomic_write_text

log = logging.getLogger(__name__)

FORMATS: tuple[str, ...] = ("cc3m_tsv", "cc12m_tsv", "parquet")
ID_PREFIX: dict[str, str] = {"cc3m_tsv": "cc3m", "cc12m_tsv": "cc12m", "parquet": "imagetext"}
DEFAULT_WORKERS = 16
DEFAULT_ROWS_PER_SHARD = 1000


def _tsv_rows(path: Path, caption_first: bool, limit: int | None) -> list[tuple[str, str]]:
    rows = []
    with open(path, encoding="utf-8", newline="") as handle:
        for number, line in enumerate(handle, start=1):
            if limit is not None and len(rows) >= limit:
                break
            fields = line.rstrip("\r\n").split("\t")
            if len(fields) != 2 or not all(f.strip() for f in fields):
                raise ValueError(f"{path}:{number}: expected two non-empty tab-separated fields, got {line[:200]!r}")
            caption, url = fields if caption_first else fields[::-1]
            rows.append((caption.strip(), url.strip()))
    return rows


def _parquet_rows(path: Path, limit: int | None) -> list[tuple[str, str]]:
    import pyarrow.parquet as pq

    table = pq.ParquetFile(path)
    missing = {"url", "caption"} - set(table.schema_arrow.names)
    if missing:
        raise ValueError(f"{path}: parquet table lacks column(s) {sorted(missing)} (has {table.schema_arrow.names})")
    rows: list[tuple[str, str]] = []
    for batch in table.iter_batches(columns=["caption", "url"]):
        for caption, url in zip(*(column.to_pylist() for column in batch.columns)):
            if limit is not None and len(rows) >= limit:
                return rows
            if not caption or not url:
                raise ValueError(f"{path}: row {len(rows)} has an empty caption or url")
            rows.append((caption.strip(), url.strip()))
    return rows


def read_rows(path: Path, list_format: str, limit: int | None = None) -> list[tuple[str, str]]:
    """The first ``limit`` (all if None) (caption, url) rows of a list in ``list_format``."""
    if list_format == "parquet":
        return _parquet_rows(path, limit)
    if list_format in ("cc3m_tsv", "cc12m_tsv"):
        return _tsv_rows(path, list_format == "cc3m_tsv", limit)
    raise ValueError(f"list format must be one of {FORMATS}, got {list_format!r}")


def fetch_image(url: str, policy: download.RetryPolicy) -> tuple[str, bytes]:
    """(extension, bytes) of a web image that decodes completely as JPEG or PNG; else an error."""
    encoded = download.fetch_bytes(url, policy)
    extension = image_extension(encoded, url)
    try:
        with Image.open(io.BytesIO(encoded)) as image:
            image.load()  # a truncated file fails here, not later in training
    except OSError as error:
        raise ValueError(f"{url}: truncated or corrupt image ({error})") from None
    return extension, encoded


def _try_fetch(url: str, policy: download.RetryPolicy) -> tuple[str, bytes] | str:
    try:
        return fetch_image(url, policy)
    except (download.DownloadError, ValueError) as error:
        return str(error)


def fetch_shard(
    rows: list[tuple[int, str, str]], path: Path, workers: int, policy: download.RetryPolicy
) -> list[dict]:
    """Fetch the images of ``rows`` (row, caption, url) into raw shard ``path``; return the failures.

    The status file is written before the shard, and the shard (atomically) last: a shard next
    to a status of the same row range means these rows are done.
    """
    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = list(pool.map(lambda row: _try_fetch(row[2], policy), rows))
    samples, failures = [], []
    for (row, caption, url), result in zip(rows, results):
        if isinstance(result, str):
            failures.append({"row": row, "url": url, "error": result})
        else:
            samples.append(({"id": f"{row:09d}", "row": row, "url": url, "caption": caption}, *result))
    atomic_write_json(status_file(path), {"rows": [rows[0][0], rows[-1][0] + 1], "failures": failures})
    write_encoded_shard(path, samples)
    return failures


def status_file(shard: Path) -> Path:
    return shard.with_name(shard.name.removesuffix(".tar") + ".status.json")


def shard_done(shard: Path, rows: list[int]) -> bool:
    """True when ``shard`` exists and holds exactly the row range ``rows`` ([start, stop))."""
    status = status_file(shard)
    return shard.exists() and status.exists() and load_json(status)["rows"] == rows


def download_list(
    split: str,
    rows: list[tuple[str, str]],
    raw_dir: Path,
    rows_per_shard: int,
    workers: int,
    policy: download.RetryPolicy,
) -> list[str]:
    """Raw shards of one list, fetching only those not finished by an earlier run."""
    shards = []
    starts = range(0, len(rows), rows_per_shard)
    for i, start in enumerate(tqdm(starts, desc=f"images {split}", unit="shard", mininterval=5)):
        path = raw_dir / f"{split}-{i:05d}.tar"
        stop = min(len(rows), start + rows_per_shard)
        if shard_done(path, [start, stop]):
            log.info("%s: done in an earlier run", path)
        else:
            path.unlink(missing_ok=True)  # rows changed: never keep a shard beside a newer status
            chunk = [(row, *rows[row]) for row in range(start, stop)]
            failures = fetch_shard(chunk, path, workers, policy)
            log.info("%s: %d of %d images fetched", path, len(chunk) - len(failures), len(chunk))
        shards.append(str(path))
    return shards


def download_image_text(spec: dict, cache: Path) -> dict:
    """Fetch every list of ``spec["sources"]`` and its images; return the manifest."""
    policy = retry_policy(spec)
    rows_per_shard = spec.get("rows_per_shard", DEFAULT_ROWS_PER_SHARD)
    raw_dir = Path(cache) / f"images_{rows_per_shard}"
    manifest: dict = {"shards": {}, "failures": str(Path(cache) / "failures.tsv")}
    for split, entry in sorted(spec["sources"].items()):
        source, checksum = source_and_checksum(entry)
        listing = download.fetch(source, Path(cache) / "lists" / split / download.source_name(source), checksum, policy)
        rows = read_rows(listing, spec["format"], spec.get("max_samples"))
        manifest["shards"][split] = download_list(
            split, rows, raw_dir, rows_per_shard, spec.get("workers", DEFAULT_WORKERS), policy
        )
    lines = ["split\trow\turl\terror"] + [
        f"{split}\t{f['row']}\t{f['url']}\t{' '.join(f['error'].split())}"
        for split, shards in manifest["shards"].items()
        for shard in shards
        for f in load_json(status_file(Path(shard)))["failures"]
    ]
    atomic_write_text(manifest["failures"], "\n".join(lines) + "\n")
    log.info("%d URL(s) failed; see %s", len(lines) - 1, manifest["failures"])
    return manifest


def image_text_pools(spec: dict, manifest: dict) -> dict[str, list[Item]]:
    prefix = ID_PREFIX[spec["format"]]
    pools: dict[str, list[Item]] = {}
    for split, shards in manifest["shards"].items():
        for shard in shards:
            images = image_members(Path(shard))
            for raw in read_records([Path(shard)]):
                record = make_record(
                    id=f"{prefix}-{split}-{raw['id']}",
                    task="caption",
                    answers=single_answer(raw["caption"]),
                    captions=[raw["caption"]],
                    domain=urllib.parse.urlsplit(raw["url"]).hostname or "unknown",
                    source={
                        "dataset": prefix, "split": split, "image_id": raw["row"], "row": raw["row"], "url": raw["url"]
                    },
                )
                pools.setdefault(split, []).append(Item(record, shard, images[raw["id"]], record["id"]))
    return pools
