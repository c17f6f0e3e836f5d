"""Resumable, verified downloads and archive extraction for the dataset rules.

A source is an ``http(s)://`` URL, a ``file://`` URL or a plain local path.

* URLs are streamed to ``{dest}.part`` and renamed onto ``dest`` only when complete (the
  byte count matches the server's ``Content-Length``/``Content-Range``) and, when a checksum
  is given, verified. A ``.part`` left by a dropped connection or a killed job is resumed with
  an HTTP ``Range: bytes={size}-`` request (RFC 9110 §14); a server that ignores it (answers
  200 instead of 206) makes the download restart from zero. Transient failures (connection
  errors, timeouts, truncated bodies, HTTP 408/429/5xx) are retried with exponential backoff;
  other HTTP errors fail at once. Every error names the URL.
* Local sources are used in place (never copied or deleted), after the checksum check.
* Checksums are written ``"sha256:<hex>"`` or ``"md5:<hex>"``; a mismatch deletes the
  downloaded file and raises.
* Archives (zip, tar, tar.gz/tgz) are extracted into a temporary sibling directory that is
  renamed onto the target only after every member was read and checked (zip CRC-32, gzip
  CRC): a corrupt archive raises an error naming it and leaves no directory that looks
  extracted. Members that would land outside the target (absolute paths, ``..``) are refused.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import re
import shutil
import tarfile
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from tqdm import tqdm

log = logging.getLogger(__name__)

USER_AGENT = "fedumm-dataset-download/0.1"
CHUNK_BYTES = 1 << 20
CHECKSUM_ALGORITHMS: tuple[str, ...] = ("sha256", "md5")
# Status codes worth another attempt: request timeout, rate limiting, server-side failures.
RETRYABLE_STATUS: frozenset[int] = frozenset({408, 425, 429, 500, 502, 503, 504})
ARCHIVE_SUFFIXES: tuple[str, ...] = (".zip", ".tar", ".tar.gz", ".tgz")
_URL_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
T = TypeVar("T")


class DownloadError(RuntimeError):
    """A source could not be fetched, verified or extracted; the message names it."""


class _Transient(Exception):
    """A failure that another attempt may not repeat (dropped connection, 5xx, short body)."""


class _RangeRejected(_Transient):
    """The server cannot serve the rest of a partial file (HTTP 416, or a Content-Range that
    does not start where the file ends): only a fresh start helps."""


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently to retry: ``retries`` extra attempts after the first, waiting
    ``backoff * 2**k`` seconds before retry ``k`` (k = 0, 1, ...); ``timeout`` per socket operation."""

    retries: int = 4
    backoff: float = 2.0
    timeout: float = 60.0

    def delays(self) -> list[float]:
        return [self.backoff * 2**k for k in range(self.retries)]


def is_remote(source: str) -> bool:
    """True for http(s) URLs; ``file://`` URLs and plain paths are local."""
    return source.startswith(("http://", "https://"))


def local_path(source: str) -> Path:
    """The path of a ``file://`` URL or plain path; an unsupported scheme is an error."""
    if source.startswith("file://"):
        return Path(urllib.parse.unquote(urllib.parse.urlparse(source).path))
    if _URL_SCHEME.match(source):
        raise DownloadError(f"{source}: unsupported URL scheme (use http://, https://, file:// or a path)")
    return Path(source)


def source_name(source: str) -> str:
    """The file name a source is stored under: the last path segment of the URL or path."""
    path = urllib.parse.unquote(urllib.parse.urlparse(source).path) if _URL_SCHEME.match(source) else source
    name = Path(path).name
    if not name:
        raise DownloadError(f"{source}: cannot tell a file name from this source")
    return name


def parse_checksum(checksum: str) -> tuple[str, str]:
    """``"sha256:<hex>"`` -> ``("sha256", "<hex>")``; anything else is a ValueError."""
    algorithm, _, digest = checksum.partition(":")
    if algorithm not in CHECKSUM_ALGORITHMS or not re.fullmatch(r"[0-9a-fA-F]+", digest):
        raise ValueError(f"checksum must look like 'sha256:<hex>' or 'md5:<hex>', got {checksum!r}")
    return algorithm, digest.lower()


def file_digest(path: Path, algorithm: str) -> str:
    """Hex digest of a file, read in chunks."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify_checksum(path: Path, checksum: str | None, source: str) -> None:
    """Raise DownloadError naming ``source`` when ``path`` does not have ``checksum`` (None: no check)."""
    if checksum is None:
        return
    algorithm, expected = parse_checksum(checksum)
    actual = file_digest(path, algorithm)
    if actual != expected:
        raise DownloadError(f"{source}: {algorithm} checksum mismatch (expected {expected}, got {actual})")


def part_path(dest: Path) -> Path:
    """Where an unfinished download of ``dest`` lives."""
    return dest.with_name(dest.name + ".part")


def _content_range(header: str | None) -> tuple[int, int | None] | None:
    """(first byte, total or None) of a ``Content-Range: bytes a-b/total`` header."""
    match = re.fullmatch(r"\s*bytes\s+(\d+)-\d+/(\d+|\*)\s*", header or "")
    if match is None:
        return None
    return int(match.group(1)), None if match.group(2) == "*" else int(match.group(2))


def _open(url: str, start: int, timeout: float) -> http.client.HTTPResponse:
    headers = {"User-Agent": USER_AGENT}
    if start:
        headers["Range"] = f"bytes={start}-"
    try:
        return urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as error:
        error.close()
        if error.code == 416 and start:
            raise _RangeRejected(f"HTTP 416 for a resumed range at byte {start}") from None
        if error.code in RETRYABLE_STATUS:
            raise _Transient(f"HTTP {error.code} {error.reason}") from None
        raise DownloadError(f"{url}: HTTP {error.code} {error.reason}") from None


def _attempt(url: str, part: Path, timeout: float) -> None:
    """One request: append to (or restart) ``part`` until the body ends; raise _Transient if short."""
    start = part.stat().st_size if part.exists() else 0
    response = _open(url, start, timeout)
    with response:
        resumed = start > 0 and response.status == 206
        if resumed:
            content_range = _content_range(response.headers.get("Content-Range"))
            if content_range is None or content_range[0] != start:
                raise _RangeRejected(f"unusable Content-Range {response.headers.get('Content-Range')!r}; restarting")
            total = content_range[1]
        else:
            if start:
                log.info("%s: server ignored the Range request; restarting from byte 0", url)
            start = 0
            length = response.headers.get("Content-Length")
            total = int(length) if length is not None else None
        with open(part, "ab" if resumed else "wb") as handle, tqdm(
            total=total, initial=start, unit="B", unit_scale=True, desc=part.name[:-5], mininterval=5
        ) as progress:
            for chunk in iter(lambda: response.read(CHUNK_BYTES), b""):
                handle.write(chunk)
                progress.update(len(chunk))
    size = part.stat().st_size
    if total is not None and size != total:
        raise _Transient(f"connection ended after {size} of {total} bytes")


def _with_retries(url: str, policy: RetryPolicy, attempt: Callable[[], T], kept: Path | None = None) -> T:
    """``attempt()`` until it succeeds, retrying transient failures with exponential backoff."""
    delays = policy.delays()
    for k in range(policy.retries + 1):
        try:
            return attempt()
        # URLError and socket timeouts are OSErrors; IncompleteRead is an HTTPException.
        except (_Transient, OSError, http.client.HTTPException) as error:
            if isinstance(error, _RangeRejected) and kept is not None:
                kept.unlink(missing_ok=True)
            if k == policy.retries:
                note = ""
                if kept is not None and kept.exists():
                    note = f" ({kept.stat().st_size} bytes kept in {kept}; a rerun resumes)"
                attempts = policy.retries + 1
                raise DownloadError(f"{url}: download failed after {attempts} attempt(s): {error}{note}") from None
            log.warning("%s: attempt %d failed (%s); retrying in %.3g s", url, k + 1, error, delays[k])
            time.sleep(delays[k])
    raise AssertionError("unreachable: the last attempt returns or raises")


def fetch_bytes(url: str, policy: RetryPolicy = RetryPolicy()) -> bytes:
    """The body of a small http(s) resource (e.g. one image), with retries; errors name the URL."""

    def attempt() -> bytes:
        with _open(url, 0, policy.timeout) as response:
            body = response.read()
            length = response.headers.get("Content-Length")
        if length is not None and len(body) != int(length):
            raise _Transient(f"connection ended after {len(body)} of {length} bytes")
        return body

    return _with_retries(url, policy, attempt)


def fetch(source: str, dest: Path, checksum: str | None = None, policy: RetryPolicy = RetryPolicy()) -> Path:
    """The local file of ``source``: downloaded to ``dest`` (URLs) or the path itself (local sources).

    A complete ``dest`` from an earlier run is reused (re-verified when ``checksum`` is given);
    a ``.part`` is resumed. Raises DownloadError naming ``source`` on failure.
    """
    if not is_remote(source):
        path = local_path(source)
        if not path.exists():
            raise DownloadError(f"{source}: no such file or directory")
        if path.is_file():
            verify_checksum(path, checksum, source)
        return path
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.exists():
        try:
            verify_checksum(dest, checksum, source)
            return dest
        except DownloadError:
            log.warning("%s: the stored %s fails its checksum; downloading again", source, dest)
            dest.unlink()
    part = part_path(dest)
    _with_retries(source, policy, lambda: _attempt(source, part, policy.timeout), kept=part)
    try:
        verify_checksum(part, checksum, source)
    except DownloadError as error:
        part.unlink()
        raise DownloadError(f"{error}; the download was deleted") from None
    os.replace(part, dest)
    return dest


# ----------------------------------------------------------------------------- archives


def is_archive(path: Path) -> bool:
    return Path(path).is_file() and Path(path).name.lower().endswith(ARCHIVE_SUFFIXES)


def archive_stem(path: Path) -> str:
    """``train2014.zip`` -> ``train2014``, ``x.tar.gz`` -> ``x``."""
    name = Path(path).name
    for suffix in sorted(ARCHIVE_SUFFIXES, key=len, reverse=True):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def _safe_member(name: str, archive: Path) -> Path:
    """The relative path of an archive member; absolute or escaping names are refused."""
    relative = Path(name)
    if relative.is_absolute() or ".." in relative.parts:
        raise DownloadError(f"{archive}: member {name!r} would be extracted outside the target directory")
    return relative


def _extract_zip_members(archive: Path, target: Path) -> int:
    with zipfile.ZipFile(archive) as zipped:
        members = zipped.infolist()
        for info in tqdm(members, desc=f"extract {archive.name}", mininterval=5):
            out = target / _safe_member(info.filename, archive)
            if info.is_dir():
                out.mkdir(parents=True, exist_ok=True)
                continue
            out.parent.mkdir(parents=True, exist_ok=True)
            # ZipExtFile checks the member's CRC-32 when it reaches the end of the member.
            with zipped.open(info) as src, open(out, "wb") as dst:
                shutil.copyfileobj(src, dst, CHUNK_BYTES)
    return len(members)


def _extract_tar_members(archive: Path, target: Path) -> int:
    count = 0
    with tarfile.open(archive, "r:*") as tar:
        for member in tqdm(tar, desc=f"extract {archive.name}", mininterval=5):
            _safe_member(member.name, archive)
            # The "data" filter refuses links out of the target, devices and setuid bits.
            tar.extract(member, target, filter="data")
            count += 1
    return count


def extract(archive: Path, target: Path) -> Path:
    """Extract a zip or tar(.gz) archive into ``target`` atomically; reuse a finished ``target``.

    Raises DownloadError naming the archive when it is corrupt or truncated, leaving no
    ``target`` behind.
    """
    archive, target = Path(archive), Path(target)
    if target.is_dir():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.{uuid.uuid4().hex}.partial")
    tmp.mkdir()
    try:
        if archive.name.lower().endswith(".zip"):
            count = _extract_zip_members(archive, tmp)
        else:
            count = _extract_tar_members(archive, tmp)
        if count == 0:
            raise DownloadError(f"{archive}: the archive is empty")
        os.replace(tmp, target)
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, zlib.error, OSError) as error:
        raise DownloadError(f"{archive}: corrupt or truncated archive ({error})") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def fetch_archive(
    source: str, dest: Path, target: Path, checksum: str | None = None, policy: RetryPolicy = RetryPolicy()
) -> Path:
    """Fetch an archive and extract it into ``target``; return ``target``.

    A corrupt archive that was downloaded is deleted (so the next run downloads it again); a
    local one is left alone. Either way the error names the source.
    """
    target = Path(target)
    if target.is_dir():
        return target
    path = fetch(source, dest, checksum, policy)
    try:
        return extract(path, target)
    except DownloadError as error:
        if is_remote(source):
            path.unlink(missing_ok=True)
            raise DownloadError(f"{source}: {error}; the download was deleted, a rerun fetches it again") from None
        raise DownloadError(f"{source}: {error}") from None


def check_zip(path: Path, source: str) -> None:
    """Raise DownloadError naming ``source`` when ``path`` is not a readable zip (its central
    directory, at the end of the file, is missing from a truncated download)."""
    try:
        with zipfile.ZipFile(path) as zipped:
            zipped.infolist()
    except (zipfile.BadZipFile, OSError) as error:
        raise DownloadError(f"{source}: not a readable zip archive ({error})") from None
