"""A local HTTP file server with scripted faults, and tiny datasets in their published formats.

``FileServer`` serves a folder on 127.0.0.1 with HTTP Range support (206 + Content-Range),
and can, per file, cut the connection after some bytes, answer an error status, or ignore
Range requests; it records every request. The ``write_*`` builders create a few samples of
each dataset exactly as it is published (file names, archive layout, JSON/text/pickle
formats), with small JPEG/PNG images whose bytes the tests compare with the shards.
"""

from __future__ import annotations

import contextlib
import io
import json
import pickle
import re
import tarfile
import threading
import urllib.parse
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from PIL import Image


@dataclass
class Fault:
    """What the next ``times`` requests of a file get: the connection cut after ``drop_after``
    body bytes, or an error ``status``."""

    times: int = 1
    drop_after: int | None = None
    status: int | None = None


@dataclass
class FileServer:
    root: Path
    port: int = 0
    faults: dict[str, Fault] = field(default_factory=dict)
    no_range: set[str] = field(default_factory=set)
    requests: list[tuple[str, str | None]] = field(default_factory=list)

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{urllib.parse.quote(name)}"

    def requests_for(self, name: str) -> list[str | None]:
        """The Range header of every request of ``name`` so far (None: no Range)."""
        return [header for path, header in self.requests if path == name]


class _Handler(BaseHTTPRequestHandler):
    server_version = "FixtureHTTP/1.0"

    def log_message(self, format: str, *args) -> None:  # keep pytest output clean
        pass

    def do_GET(self) -> None:
        files: FileServer = self.server.files  # type: ignore[attr-defined]
        name = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path).lstrip("/")
        range_header = self.headers.get("Range")
        files.requests.append((name, range_header))
        fault = files.faults.get(name)
        active = fault is not None and fault.times > 0
        if active:
            fault.times -= 1
        if active and fault.status is not None:
            self.send_error(fault.status)
            return
        path = files.root / name
        if not path.is_file():
            self.send_error(404)
            return
        body = path.read_bytes()
        start = 0
        match = re.fullmatch(r"bytes=(\d+)-", range_header or "")
        if match and name not in files.no_range:
            start = int(match.group(1))
            if start >= len(body):
                self.send_error(416)
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(body) - start))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        payload = body[start:]
        if active and fault.drop_after is not None:
            payload = payload[: fault.drop_after]
            self.close_connection = True
        self.wfile.write(payload)


@contextlib.contextmanager
def serve(root: Path) -> Iterator[FileServer]:
    """Serve ``root`` on a free port of 127.0.0.1 for the duration of the block."""
    files = FileServer(Path(root))
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.files = files  # type: ignore[attr-defined]
    files.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield files
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


# ----------------------------------------------------------------------------- images


def jpeg_bytes(color: tuple[int, int, int], size: tuple[int, int] = (40, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def png_bytes(color: tuple[int, int, int], size: tuple[int, int] = (36, 28)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    return buffer.getvalue()


def color_of(index: int) -> tuple[int, int, int]:
    return (37 * index % 256, 91 * index % 256, 53 * index % 256)


def write_zip(path: Path, members: dict[str, bytes]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zipped:
        for name, content in members.items():
            zipped.writestr(name, content)
    return path


def write_coco_images(root: Path, subset: str, image_ids: list[int]) -> dict[int, bytes]:
    """``{subset}.zip`` with ``{subset}/COCO_{subset}_%012d.jpg``; returns the JPEG bytes by id."""
    images = {i: jpeg_bytes(color_of(i)) for i in image_ids}
    write_zip(root / f"{subset}.zip", {f"{subset}/COCO_{subset}_{i:012d}.jpg": b for i, b in images.items()})
    return images


def _json(obj) -> bytes:
    return json.dumps(obj).encode("utf-8")


# ----------------------------------------------------------------------------- VQA v2

VQA_TRAIN_IMAGES = [9, 25, 30]
VQA_VAL_IMAGES = [42, 73, 74, 133]


def vqa_answers(answer: str, wrong: str, n_wrong: int) -> list[dict]:
    texts = [wrong] * n_wrong + [answer] * (10 - n_wrong)
    return [{"answer": t, "answer_confidence": "yes", "answer_id": k + 1} for k, t in enumerate(texts)]


def write_vqav2(root: Path) -> dict:
    """VQA v2 train/val question and annotation zips (2 questions per image) plus COCO image zips."""
    images = {"train2014": write_coco_images(root, "train2014", VQA_TRAIN_IMAGES)}
    images["val2014"] = write_coco_images(root, "val2014", VQA_VAL_IMAGES)
    questions: dict[str, list[dict]] = {}
    annotations: dict[str, list[dict]] = {}
    for subset, ids, zip_part in (("train2014", VQA_TRAIN_IMAGES, "Train"), ("val2014", VQA_VAL_IMAGES, "Val")):
        questions[subset], annotations[subset] = [], []
        for image_id in ids:
            for k, (question, answer, wrong, answer_type, question_type) in enumerate(
                [
                    ("What color is the cat?", "black", "gray", "other", "what color is the"),
                    ("Is there a dog?", "yes", "no", "yes/no", "is there a"),
                ]
            ):
                qid = image_id * 1000 + k
                questions[subset].append({"image_id": image_id, "question": question, "question_id": qid})
                annotations[subset].append(
                    {
                        "question_type": question_type,
                        "multiple_choice_answer": answer,
                        "answers": vqa_answers(answer, wrong, k + 1),
                        "image_id": image_id,
                        "answer_type": answer_type,
                        "question_id": qid,
                    }
                )
        write_zip(
            root / f"v2_Questions_{zip_part}_mscoco.zip",
            {
                f"v2_OpenEnded_mscoco_{subset}_questions.json": _json(
                    {"info": {}, "task_type": "Open-Ended", "data_type": "mscoco", "license": {},
                     "data_subtype": subset, "questions": questions[subset]}
                )
            },
        )
        write_zip(
            root / f"v2_Annotations_{zip_part}_mscoco.zip",
            {
                f"v2_mscoco_{subset}_annotations.json": _json(
                    {"info": {}, "license": {}, "data_subtype": subset, "annotations": annotations[subset],
                     "data_type": "mscoco"}
                )
            },
        )
    return {"images": images, "questions": questions, "annotations": annotations}


def vqav2_sources(url: Callable[[str], str]) -> dict:
    """The ``sources`` of a vqav2 config entry for the files of ``write_vqav2``; ``url`` maps a
    file name to its URL."""
    return {
        split: {
            "questions": url(f"v2_Questions_{part}_mscoco.zip"),
            "annotations": url(f"v2_Annotations_{part}_mscoco.zip"),
            "images": url(f"{subset}.zip"),
        }
        for split, part, subset in (("train", "Train", "train2014"), ("val", "Val", "val2014"))
    }


# ----------------------------------------------------------------------------- COCO Karpathy


def write_karpathy(root: Path) -> dict:
    """``caption_datasets.zip`` (dataset_coco.json + a flickr file) over train2014/val2014 images."""
    images = {"train2014": write_coco_images(root, "train2014", [9, 25, 30]),
              "val2014": write_coco_images(root, "val2014", [42, 73])}
    entries = []
    plan = [("train2014", 9, "train"), ("train2014", 25, "restval"), ("train2014", 30, "train"),
            ("val2014", 42, "val"), ("val2014", 73, "test")]
    for imgid, (subset, cocoid, split) in enumerate(plan):
        sentences = [
            {"tokens": ["a", "cat"], "raw": f"A cat number {cocoid}.", "imgid": imgid, "sentid": 10 * imgid},
            {"tokens": ["a", "pet"], "raw": f"A pet {cocoid} ", "imgid": imgid, "sentid": 10 * imgid + 1},
        ]
        entries.append({"filepath": subset, "sentids": [10 * imgid, 10 * imgid + 1],
                        "filename": f"COCO_{subset}_{cocoid:012d}.jpg", "imgid": imgid, "split": split,
                        "sentences": sentences, "cocoid": cocoid})
    write_zip(root / "caption_datasets.zip", {
        "dataset_coco.json": _json({"images": entries, "dataset": "coco"}),
        "dataset_flickr8k.json": _json({"images": [], "dataset": "flickr8k"}),
    })
    return {"images": images, "entries": entries}


# ----------------------------------------------------------------------------- COCO-QA


def write_cocoqa(root: Path) -> dict:
    """``cocoqa-2015-05-17.zip`` with train/ and test/ text files (one line per question)."""
    images = {"train2014": write_coco_images(root, "train2014", [9, 25, 30]),
              "val2014": write_coco_images(root, "val2014", [42, 73])}
    rows = {
        "train": [("what is on the table ?", "cup", 9, 0), ("how many dogs are there ?", "two", 25, 1),
                  ("what is the color of the bus ?", "red", 30, 2), ("where is the cat ?", "bed", 9, 3)],
        "test": [("what is the man holding ?", "umbrella", 42, 0), ("what color is the kite ?", "blue", 73, 2)],
    }
    members = {}
    for split, lines in rows.items():
        for column, position in (("questions", 0), ("answers", 1), ("img_ids", 2), ("types", 3)):
            members[f"{split}/{column}.txt"] = ("\n".join(str(line[position]) for line in lines) + "\n").encode()
    write_zip(root / "cocoqa-2015-05-17.zip", members)
    return {"images": images, "rows": rows}


# ----------------------------------------------------------------------------- RefCOCO


def write_refcoco(root: Path) -> dict:
    """``refcoco.zip`` with ``refcoco/refs(unc).p`` (pickle protocol 2), ``refs(google).p`` and
    ``instances.json``, over train2014 images."""
    images = {"train2014": write_coco_images(root, "train2014", [9, 25, 30])}
    instances = {
        "images": [{"id": i, "file_name": f"COCO_train2014_{i:012d}.jpg", "width": 40, "height": 30}
                   for i in (9, 25, 30)],
        "annotations": [
            {"id": 501, "image_id": 9, "bbox": [2.4, 3.6, 10.2, 12.0], "category_id": 1, "area": 122.4, "iscrowd": 0},
            {"id": 502, "image_id": 25, "bbox": [10.0, 5.0, 20.0, 15.0], "category_id": 18, "area": 300.0, "iscrowd": 0},
            {"id": 503, "image_id": 30, "bbox": [0.0, 0.0, 39.6, 29.5], "category_id": 1, "area": 1168.2, "iscrowd": 0},
        ],
        "categories": [{"id": 1, "name": "person", "supercategory": "person"},
                       {"id": 18, "name": "dog", "supercategory": "animal"}],
    }
    refs = [
        {"sent_ids": [0, 1], "file_name": "COCO_train2014_000000000009_501.jpg", "ann_id": 501, "ref_id": 0,
         "image_id": 9, "split": "train", "category_id": 1,
         "sentences": [{"tokens": ["man", "left"], "raw": "Man on the LEFT", "sent_id": 0, "sent": "man on the left"},
                       {"tokens": ["left", "guy"], "raw": "left guy", "sent_id": 1, "sent": "left guy"}]},
        {"sent_ids": [2], "file_name": "COCO_train2014_000000000025_502.jpg", "ann_id": 502, "ref_id": 1,
         "image_id": 25, "split": "testA", "category_id": 18,
         "sentences": [{"tokens": ["brown", "dog"], "raw": "brown dog", "sent_id": 2, "sent": "brown dog"}]},
        {"sent_ids": [3], "file_name": "COCO_train2014_000000000030_503.jpg", "ann_id": 503, "ref_id": 2,
         "image_id": 30, "split": "val", "category_id": 1,
         "sentences": [{"tokens": ["woman"], "raw": "woman", "sent_id": 3, "sent": "woman"}]},
    ]
    write_zip(root / "refcoco.zip", {
        "refcoco/refs(unc).p": pickle.dumps(refs, protocol=2),
        "refcoco/refs(google).p": pickle.dumps([], protocol=2),
        "refcoco/instances.json": _json(instances),
    })
    return {"images": images, "refs": refs, "instances": instances}


# ----------------------------------------------------------------------------- FGVC-Aircraft


FGVC_ROWS = {
    "train": [("1025794", "Boeing"), ("1340192", "British Aerospace"), ("0056978", "Airbus")],
    "val": [("0062781", "Boeing"), ("1514522", "Airbus")],
    "test": [("1196092", "British Aerospace"), ("0838794", "Boeing")],
}


def write_fgvc(root: Path) -> dict:
    """``fgvc-aircraft-2013b.tar.gz`` with data/images/*.jpg and images_manufacturer_*.txt."""
    images = {image_id: jpeg_bytes(color_of(int(image_id) % 97)) for rows in FGVC_ROWS.values() for image_id, _ in rows}
    members = {f"fgvc-aircraft-2013b/data/images/{i}.jpg": b for i, b in images.items()}
    for split, rows in FGVC_ROWS.items():
        members[f"fgvc-aircraft-2013b/data/images_manufacturer_{split}.txt"] = (
            "".join(f"{i} {m}\n" for i, m in rows).encode()
        )
        members[f"fgvc-aircraft-2013b/data/images_{split}.txt"] = "".join(f"{i}\n" for i, _ in rows).encode()
    members["fgvc-aircraft-2013b/data/manufacturers.txt"] = b"Airbus\nBoeing\nBritish Aerospace\n"
    with tarfile.open(root / "fgvc-aircraft-2013b.tar.gz", "w:gz") as tar:
        for name, content in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    return {"images": images}


# ----------------------------------------------------------------------------- ScienceQA


def write_scienceqa(root: Path) -> dict:
    """problems.json, pid_splits.json, captions.json and {train,val,test}.zip of {split}/{pid}/image.png."""
    plan = {"train": ["1", "2", "3", "4"], "val": ["5"], "test": ["6", "7"]}
    problems, images = {}, {}
    for split, pids in plan.items():
        for pid in pids:
            has_image = pid != "4"  # a text-only problem, skipped
            problems[pid] = {"question": f"Which is {pid}?", "choices": ["a", "b"], "answer": 0, "hint": "",
                             "image": "image.png" if has_image else None, "task": "closed choice",
                             "grade": "grade4", "subject": "natural science" if int(pid) % 2 else "social science",
                             "topic": "x", "category": "y", "skill": "z", "lecture": "", "solution": "",
                             "split": split}
            if has_image:
                images[pid] = png_bytes(color_of(int(pid)))
        write_zip(root / f"{split}.zip", {f"{split}/{pid}/image.png": images[pid] for pid in pids if pid in images})
    captions = {pid: f"A diagram of item {pid}." for pid in problems if pid != "3"}  # 3 has no caption
    (root / "problems.json").write_bytes(_json(problems))
    (root / "pid_splits.json").write_bytes(_json({**plan, "trainval": plan["train"] + plan["val"]}))
    (root / "captions.json").write_bytes(_json({"captions": captions}))
    return {"images": images, "captions": captions}


# ----------------------------------------------------------------------------- CC3M / CC12M


def write_web_images(root: Path, n: int) -> dict[str, bytes]:
    """``web/img{k}.jpg`` files that image-text lists point at; returns bytes by file name."""
    (root / "web").mkdir(parents=True, exist_ok=True)
    images = {}
    for k in range(n):
        name = f"web/img{k}.jpg"
        images[name] = jpeg_bytes(color_of(k + 3))
        (root / name).write_bytes(images[name])
    (root / "web" / "page.html").write_text("<html>not an image</html>")
    return images


def cc3m_rows(server: FileServer, n: int, broken: dict[int, str]) -> list[tuple[str, str]]:
    """(caption, url) rows; row k in ``broken`` points at that file name instead of an image."""
    return [
        (f"a photo of thing {k} in the park", server.url(broken.get(k, f"web/img{k}.jpg")))
        for k in range(n)
    ]


def write_cc3m_tsv(path: Path, rows: list[tuple[str, str]]) -> Path:
    path.write_text("".join(f"{caption}\t{url}\n" for caption, url in rows), encoding="utf-8")
    return path


def write_cc12m_parquet(path: Path, rows: list[tuple[str, str]]) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({"url": [u for _, u in rows], "caption": [c for c, _ in rows]})
    pq.write_table(table, path, row_group_size=2)
    return path
