"""fedumm.data.download against a local HTTP server: resume, restart, retries, checksums, archives."""

from __future__ import annotations

import hashlib
import io
import tarfile
import zipfile
from pathlib import Path

import pytest
from fixtures_http import Fault, serve, write_zip

from fedumm.data import download
from fedumm.data.download import DownloadError, RetryPolicy

FAST = RetryPolicy(retries=2, backoff=0.01, timeout=5)
BODY = bytes(range(256)) * 400  # 102,400 bytes


@pytest.fixture
def server(tmp_path):
    root = tmp_path / "served"
    root.mkdir()
    (root / "blob.bin").write_bytes(BODY)
    with serve(root) as files:
        yield files


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_fetch_downloads_the_whole_file(server, tmp_path):
    dest = tmp_path / "out" / "blob.bin"
    assert download.fetch(server.url("blob.bin"), dest, policy=FAST) == dest
    assert dest.read_bytes() == BODY
    assert _leftovers(dest.parent) == ["blob.bin"]
    # A finished file is reused: no second request.
    download.fetch(server.url("blob.bin"), dest, policy=FAST)
    assert server.requests_for("blob.bin") == [None]


def test_dropped_connection_resumes_with_a_range_request(server, tmp_path):
    server.faults["blob.bin"] = Fault(times=1, drop_after=30_000)
    dest = tmp_path / "blob.bin"
    download.fetch(server.url("blob.bin"), dest, policy=FAST)
    assert dest.read_bytes() == BODY
    assert server.requests_for("blob.bin") == [None, "bytes=30000-"]
    assert _leftovers(tmp_path) == ["blob.bin", "served"]


def test_server_ignoring_range_restarts_from_zero(server, tmp_path):
    server.faults["blob.bin"] = Fault(times=1, drop_after=30_000)
    server.no_range.add("blob.bin")
    dest = tmp_path / "blob.bin"
    download.fetch(server.url("blob.bin"), dest, policy=FAST)
    # The 200 answer to the Range request was written from byte 0, not appended.
    assert dest.read_bytes() == BODY
    assert server.requests_for("blob.bin") == [None, "bytes=30000-"]


def test_a_part_left_by_a_killed_run_is_resumed(server, tmp_path):
    dest = tmp_path / "blob.bin"
    download.part_path(dest).write_bytes(BODY[:50_000])
    download.fetch(server.url("blob.bin"), dest, policy=FAST)
    assert dest.read_bytes() == BODY
    assert server.requests_for("blob.bin") == ["bytes=50000-"]


def test_a_part_the_server_cannot_continue_is_restarted(server, tmp_path):
    dest = tmp_path / "blob.bin"
    # Longer than the file now served (it changed upstream): the server answers 416.
    download.part_path(dest).write_bytes(b"x" * (len(BODY) + 10))
    download.fetch(server.url("blob.bin"), dest, policy=FAST)
    assert dest.read_bytes() == BODY
    assert server.requests_for("blob.bin") == [f"bytes={len(BODY) + 10}-", None]


def test_exhausted_retries_name_the_url_and_keep_only_the_part(server, tmp_path):
    server.faults["blob.bin"] = Fault(times=3, drop_after=1000)
    dest = tmp_path / "blob.bin"
    with pytest.raises(DownloadError, match=r"blob\.bin: download failed after 3 attempt\(s\).*a rerun resumes"):
        download.fetch(server.url("blob.bin"), dest, policy=FAST)
    assert not dest.exists()
    # Each attempt resumed where the previous one was cut.
    assert download.part_path(dest).read_bytes() == BODY[:3000]
    assert server.requests_for("blob.bin") == [None, "bytes=1000-", "bytes=2000-"]
    # The next run finishes it.
    download.fetch(server.url("blob.bin"), dest, policy=FAST)
    assert dest.read_bytes() == BODY
    assert not download.part_path(dest).exists()


def test_server_errors_are_retried_and_client_errors_are_not(server, tmp_path):
    server.faults["blob.bin"] = Fault(times=2, status=503)
    download.fetch(server.url("blob.bin"), tmp_path / "blob.bin", policy=FAST)
    assert len(server.requests_for("blob.bin")) == 3
    with pytest.raises(DownloadError, match=r"/missing\.bin: HTTP 404"):
        download.fetch(server.url("missing.bin"), tmp_path / "missing.bin", policy=FAST)
    assert len(server.requests_for("missing.bin")) == 1
    assert not (tmp_path / "missing.bin").exists()


def test_checksums(server, tmp_path):
    sha256 = hashlib.sha256(BODY).hexdigest()
    md5 = hashlib.md5(BODY).hexdigest()
    download.fetch(server.url("blob.bin"), tmp_path / "a.bin", f"sha256:{sha256}", FAST)
    download.fetch(server.url("blob.bin"), tmp_path / "b.bin", f"md5:{md5}", FAST)
    wrong = "0" * 64
    with pytest.raises(DownloadError, match=rf"blob\.bin: sha256 checksum mismatch \(expected {wrong}, got {sha256}\)"):
        download.fetch(server.url("blob.bin"), tmp_path / "c.bin", f"sha256:{wrong}", FAST)
    assert not (tmp_path / "c.bin").exists()
    assert not download.part_path(tmp_path / "c.bin").exists()
    with pytest.raises(ValueError, match="checksum must look like"):
        download.parse_checksum("crc32:1234")


def test_local_sources_are_used_in_place(tmp_path):
    local = tmp_path / "data.bin"
    local.write_bytes(b"local data")
    digest = hashlib.sha256(b"local data").hexdigest()
    dest = tmp_path / "cache" / "data.bin"
    assert download.fetch(str(local), dest, f"sha256:{digest}") == local
    assert download.fetch(local.as_uri(), dest) == local
    assert not dest.exists()
    with pytest.raises(DownloadError, match=r"sha256 checksum mismatch"):
        download.fetch(str(local), dest, "sha256:" + "1" * 64)
    assert local.exists()  # never deleted
    with pytest.raises(DownloadError, match=r"nope\.bin: no such file"):
        download.fetch(str(tmp_path / "nope.bin"), dest)
    with pytest.raises(DownloadError, match="unsupported URL scheme"):
        download.fetch("ftp://example.org/x.bin", dest)


def test_fetch_bytes_retries_a_truncated_body(server):
    server.faults["blob.bin"] = Fault(times=1, drop_after=10)
    assert download.fetch_bytes(server.url("blob.bin"), FAST) == BODY
    assert len(server.requests_for("blob.bin")) == 2


# ----------------------------------------------------------------------------- archives


def _zip(tmp_path: Path) -> Path:
    return write_zip(tmp_path / "ann.zip", {"ann/a.json": b'{"a": 1}' * 500, "ann/b.json": b'{"b": 2}' * 500})


def test_extract_zip(tmp_path):
    target = download.extract(_zip(tmp_path), tmp_path / "ann")
    assert (target / "ann" / "a.json").read_bytes() == b'{"a": 1}' * 500
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ann", "ann.zip"]


def _assert_nothing_extracted(folder: Path, keep: set[str]) -> None:
    assert {p.name for p in folder.iterdir()} == keep


def test_truncated_zip_is_refused_without_output(tmp_path):
    archive = _zip(tmp_path)
    archive.write_bytes(archive.read_bytes()[:-200])  # the central directory is at the end
    with pytest.raises(DownloadError, match=r"ann\.zip: corrupt or truncated archive"):
        download.extract(archive, tmp_path / "ann")
    _assert_nothing_extracted(tmp_path, {"ann.zip"})


def test_zip_with_a_bad_crc_is_refused_without_output(tmp_path):
    archive = tmp_path / "stored.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as zipped:
        zipped.writestr("first.txt", b"A" * 1000)
        zipped.writestr("second.txt", b"B" * 1000)
    raw = bytearray(archive.read_bytes())
    raw[raw.index(b"B" * 1000) + 500] = ord("C")  # flip one byte of the second member
    archive.write_bytes(bytes(raw))
    with pytest.raises(DownloadError, match=r"stored\.zip: corrupt or truncated archive \(Bad CRC-32"):
        download.extract(archive, tmp_path / "stored")
    # first.txt had been extracted into the temporary folder, which is gone.
    _assert_nothing_extracted(tmp_path, {"stored.zip"})


def test_truncated_tar_gz_is_refused_without_output(tmp_path):
    archive = tmp_path / "data.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for k in range(3):
            content = bytes(range(256)) * 64 * (k + 1)
            info = tarfile.TarInfo(f"data/{k}.bin")
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    archive.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    with pytest.raises(DownloadError, match=r"data\.tar\.gz: corrupt or truncated archive"):
        download.extract(archive, tmp_path / "data")
    _assert_nothing_extracted(tmp_path, {"data.tar.gz"})


def test_member_escaping_the_target_is_refused(tmp_path):
    archive = write_zip(tmp_path / "evil.zip", {"../evil.txt": b"x"})
    with pytest.raises(DownloadError, match=r"member '\.\./evil\.txt' would be extracted outside"):
        download.extract(archive, tmp_path / "evil")
    _assert_nothing_extracted(tmp_path, {"evil.zip"})


def test_corrupt_downloaded_archive_is_deleted_so_a_rerun_fetches_it_again(tmp_path):
    root = tmp_path / "served"
    good = _zip(root.parent).read_bytes()
    root.mkdir()
    (root / "ann.zip").write_bytes(good[:-200])
    cache = tmp_path / "cache"
    with serve(root) as server:
        with pytest.raises(DownloadError, match=r"ann\.zip: .*corrupt or truncated archive.*the download was deleted"):
            download.fetch_archive(server.url("ann.zip"), cache / "ann.zip", cache / "ann", policy=FAST)
        assert list(cache.iterdir()) == []
        (root / "ann.zip").write_bytes(good)
        target = download.fetch_archive(server.url("ann.zip"), cache / "ann.zip", cache / "ann", policy=FAST)
    assert (target / "ann" / "b.json").exists()


def test_check_zip_names_the_source(tmp_path):
    archive = _zip(tmp_path)
    download.check_zip(archive, "http://x/ann.zip")
    archive.write_bytes(archive.read_bytes()[:100])
    with pytest.raises(DownloadError, match=r"http://x/ann\.zip: not a readable zip archive"):
        download.check_zip(archive, "http://x/ann.zip")
