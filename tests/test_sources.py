"""Each dataset kind downloaded from a local HTTP server (published formats, a few samples) and
normalized into shards: record values, image bytes, splits, card, and failure handling."""

from __future__ import annotations

import datetime
import io
import json
import pickle
import tarfile
from pathlib import Path

import pytest
from fixtures_http import (
    FGVC_ROWS,
    Fault,
    cc3m_rows,
    serve,
    vqav2_sources,
    write_cc3m_tsv,
    write_cc12m_parquet,
    write_cocoqa,
    write_fgvc,
    write_karpathy,
    write_refcoco,
    write_scienceqa,
    write_vqav2,
    write_web_images,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from fedumm.data import shapes, shards, sources
from fedumm.data.download import DownloadError
from fedumm.data.sources import common, image_text
from fedumm.data.sources.coco import load_plain_pickle
from fedumm.evaluation import grounding

FAST = {"retries": 2, "backoff": 0.01, "timeout": 5}
ALL = {"train": 100, "val": 100, "test": 100}


def prepare(name: str, spec: dict, tmp_path: Path) -> tuple[dict, dict[str, list[dict]], dict[str, bytes]]:
    """Download and normalize; return the card, records per split and stored image bytes by id."""
    spec = {"download": FAST, "shard_size": 3, "seed": 0, **spec}
    manifest = sources.download_dataset(name, spec, tmp_path / "cache")
    out = tmp_path / "data"
    card = sources.normalize_dataset(name, spec, manifest, out)
    records = {split: shards.read_records(shards.split_shards(out, split)) for split in card["shards"]}
    images = {}
    for split in card["shards"]:
        for shard in shards.split_shards(out, split):
            with tarfile.open(shard) as tar:
                for member in tar:
                    key, _, ext = member.name.partition(".")
                    if ext != "json":
                        images[key] = (ext, tar.extractfile(member).read())
    return card, records, images


def check_card(card: dict, records: dict[str, list[dict]], shard_size: int = 3) -> None:
    for split, rs in records.items():
        assert card["num_samples"][split] == len(rs)
        assert len(card["shards"][split]) == max(1, -(-len(rs) // shard_size))
        assert card["value_counts"][split] == shards.value_counts(rs)
        for r in rs:
            assert r["split"] == split
            common.check_record(r, "test")


def by_id(records: dict[str, list[dict]]) -> dict[str, dict]:
    return {r["id"]: r for rs in records.values() for r in rs}


# ----------------------------------------------------------------------------- VQA v2


@pytest.fixture
def vqa_server(tmp_path):
    root = tmp_path / "served"
    root.mkdir()
    published = write_vqav2(root)
    with serve(root) as server:
        yield server, published


def vqav2_spec(server) -> dict:
    return {"kind": "vqav2", "splits": {"train": 6, "val": 4, "test": 4}, "sources": vqav2_sources(server.url)}


def test_vqav2_records_images_and_splits(vqa_server, tmp_path):
    server, published = vqa_server
    card, records, images = prepare("vqa", vqav2_spec(server), tmp_path)
    check_card(card, records)
    assert card["num_samples"] == {"train": 6, "val": 4, "test": 4}
    assert card["kind"] == "vqav2" and card["name"] == "vqa"
    train = records["train"]
    assert [r["id"] for r in train] == sorted(f"vqav2-train2014-{q['question_id']}" for q in published["questions"]["train2014"])
    record = by_id(records)["vqav2-train2014-25001"]
    annotation = next(a for a in published["annotations"]["train2014"] if a["question_id"] == 25001)
    assert record["question"] == "Is there a dog?"
    assert record["answers"] == annotation["answers"] and len(record["answers"]) == 10
    assert (record["multiple_choice_answer"], record["answer_type"], record["question_type"]) == ("yes", "yes/no", "is there a")
    assert record["task"] == "vqa" and record["domain"] == "mscoco" and record["box"] is None
    assert record["source"] == {"dataset": "vqav2", "subset": "train2014", "image_id": 25, "question_id": 25001}
    # Original JPEG bytes, no re-encoding.
    assert images[record["id"]] == ("jpg", published["images"]["train2014"][25])
    # val and test are both carved out of val2014, by image: disjoint, together all of it.
    val_images = {r["source"]["image_id"] for r in records["val"]}
    test_images = {r["source"]["image_id"] for r in records["test"]}
    assert not val_images & test_images and val_images | test_images == {42, 73, 74, 133}
    assert len(val_images) == len(test_images) == 2
    # The pipeline can read them.
    samples = shards.read_samples(shards.split_shards(tmp_path / "data", "test"))
    assert [s["image"].size for s in samples] == [(40, 30)] * 4
    assert {"What", "color", "black", "gray", "yes", "no"} <= set(shards.vocabulary(train))


def test_vqav2_split_selection_is_seeded(vqa_server, tmp_path):
    server, _ = vqa_server
    spec = vqav2_spec(server)
    _, first, _ = prepare("vqa", spec, tmp_path / "a")
    _, again, _ = prepare("vqa", spec, tmp_path / "b")
    assert first == again
    spec["splits"] = {"train": 2, "val": 4, "test": 2}
    _, capped, _ = prepare("vqa", spec, tmp_path / "c")
    assert len(capped["train"]) == 2
    # Both questions of one image: whole images are drawn.
    assert len({r["source"]["image_id"] for r in capped["train"]}) == 1


def test_vqav2_download_resumes_a_dropped_image_archive(vqa_server, tmp_path):
    server, published = vqa_server
    server.faults["train2014.zip"] = Fault(times=1, drop_after=500)
    _, records, images = prepare("vqa", vqav2_spec(server), tmp_path)
    assert server.requests_for("train2014.zip") == [None, "bytes=500-"]
    assert images["vqav2-train2014-9000"] == ("jpg", published["images"]["train2014"][9])


def test_vqav2_corrupt_annotation_archive_fails_clearly_then_reruns(vqa_server, tmp_path):
    server, _ = vqa_server
    annotations = server.root / "v2_Annotations_Val_mscoco.zip"
    good = annotations.read_bytes()
    annotations.write_bytes(good[: len(good) // 2])
    spec = {**vqav2_spec(server), "download": FAST}
    cache = tmp_path / "cache"
    with pytest.raises(DownloadError, match=r"v2_Annotations_Val_mscoco\.zip: .*corrupt or truncated archive"):
        sources.download_dataset("vqa", spec, cache)
    assert list((cache / "val.annotations").iterdir()) == []  # neither the bad zip nor a half-extracted folder
    annotations.write_bytes(good)
    manifest = sources.download_dataset("vqa", spec, cache)
    assert Path(manifest["val.annotations"], "v2_mscoco_val2014_annotations.json").is_file()
    # What the first run finished (the train sources, in role order) is not fetched again.
    assert server.requests_for("train2014.zip") == [None]
    assert len(server.requests_for("v2_Annotations_Val_mscoco.zip")) == 2


def test_vqav2_checksum_mismatch_names_the_url(vqa_server, tmp_path):
    server, _ = vqa_server
    spec = vqav2_spec(server)
    spec["sources"]["val"]["questions"] = {"url": server.url("v2_Questions_Val_mscoco.zip"), "md5": "0" * 32}
    with pytest.raises(DownloadError, match=r"v2_Questions_Val_mscoco\.zip: md5 checksum mismatch"):
        sources.download_dataset("vqa", {**spec, "download": FAST}, tmp_path / "cache")


def test_local_paths_replace_urls(vqa_server, tmp_path):
    server, published = vqa_server
    spec = vqav2_spec(server)
    # An extracted image folder and a file:// archive instead of the published URLs.
    folder = tmp_path / "coco" / "val2014"
    folder.mkdir(parents=True)
    for image_id, encoded in published["images"]["val2014"].items():
        (folder / f"COCO_val2014_{image_id:012d}.jpg").write_bytes(encoded)
    spec["sources"]["val"]["images"] = str(folder.parent)
    spec["sources"]["train"]["questions"] = (server.root / "v2_Questions_Train_mscoco.zip").as_uri()
    _, records, images = prepare("vqa", spec, tmp_path)
    record = records["test"][0]
    assert images[record["id"]] == ("jpg", published["images"]["val2014"][record["source"]["image_id"]])
    assert server.requests_for("v2_Questions_Train_mscoco.zip") == []


# ----------------------------------------------------------------------------- other kinds


@pytest.fixture
def served(tmp_path):
    root = tmp_path / "served"
    root.mkdir()
    with serve(root) as server:
        yield server


def test_coco_karpathy(served, tmp_path):
    published = write_karpathy(served.root)
    spec = {"kind": "coco_karpathy", "splits": ALL, "sources": {
        "annotations": served.url("caption_datasets.zip"),
        "train2014": served.url("train2014.zip"), "val2014": served.url("val2014.zip")}}
    card, records, images = prepare("karpathy", spec, tmp_path)
    check_card(card, records)
    # restval joins train.
    assert {s: [r["id"] for r in rs] for s, rs in records.items()} == {
        "train": ["karpathy-25", "karpathy-30", "karpathy-9"], "val": ["karpathy-42"], "test": ["karpathy-73"]}
    record = by_id(records)["karpathy-25"]
    assert record["task"] == "caption" and record["question"] == "" and record["multiple_choice_answer"] == ""
    assert record["captions"] == ["A cat number 25.", "A pet 25"] and record["caption"] == "A cat number 25."
    assert record["answers"] == [{"answer": "A cat number 25.", "answer_confidence": "yes", "answer_id": 1}]
    assert record["source"]["karpathy_split"] == "restval"
    assert images["karpathy-73"] == ("jpg", published["images"]["val2014"][73])
    assert {"pet", "number"} <= set(shards.vocabulary(records["train"]))


def test_cocoqa(served, tmp_path):
    published = write_cocoqa(served.root)
    spec = {"kind": "cocoqa", "splits": {"train": 100, "val": 1, "test": 100}, "sources": {
        "archive": served.url("cocoqa-2015-05-17.zip"),
        "train2014": served.url("train2014.zip"), "val2014": served.url("val2014.zip")}}
    card, records, images = prepare("cocoqa", spec, tmp_path)
    check_card(card, records)
    assert [r["id"] for r in records["test"]] == ["cocoqa-test-000000", "cocoqa-test-000001"]
    kite = by_id(records)["cocoqa-test-000001"]
    assert kite["question"] == "what color is the kite ?" and kite["multiple_choice_answer"] == "blue"
    assert kite["answers"] == [{"answer": "blue", "answer_confidence": "yes", "answer_id": k} for k in range(1, 11)]
    assert (kite["question_type"], kite["answer_type"]) == ("color", "other")
    assert images["cocoqa-test-000001"] == ("jpg", published["images"]["val2014"][73])
    # val is carved out of train by image: one record, its image in no other split.
    assert len(records["val"]) == 1
    val_image = records["val"][0]["source"]["image_id"]
    assert val_image not in {r["source"]["image_id"] for r in records["train"]}
    counted = [r for r in by_id(records).values() if r["question_type"] == "number"]
    assert all(r["answer_type"] == "number" for r in counted)


def test_refcoco(served, tmp_path):
    published = write_refcoco(served.root)
    spec = {"kind": "refcoco", "splits": ALL, "sources": {
        "archive": served.url("refcoco.zip"), "train2014": served.url("train2014.zip")}}
    card, records, images = prepare("refcoco", spec, tmp_path)
    check_card(card, records)
    assert {s: [r["id"] for r in rs] for s, rs in records.items()} == {
        "train": ["refcoco-0-0", "refcoco-0-1"], "val": ["refcoco-2-3"], "test": ["refcoco-1-2"]}
    left = by_id(records)["refcoco-0-0"]
    # COCO bbox [2.4, 3.6, 10.2, 12.0] (x, y, w, h) -> pixels [x0, y0, x1, y1].
    assert left["box"] == [2, 4, 13, 16]
    assert left["multiple_choice_answer"] == "[2, 4, 13, 16]" == grounding.format_box(left["box"])
    assert grounding.parse_box(left["multiple_choice_answer"], 40, 30) == (2, 4, 13, 16)
    assert left["question"] == "where is man on the left ?" and left["task"] == "ground"
    assert (left["label"], left["domain"]) == ("person", "person")
    assert by_id(records)["refcoco-1-2"]["domain"] == "animal"
    assert left["source"]["split"] == "train" and by_id(records)["refcoco-1-2"]["source"]["split"] == "testA"
    assert images["refcoco-0-1"] == ("jpg", published["images"]["train2014"][9])


def test_refcoco_pickle_with_a_class_is_refused(tmp_path):
    path = tmp_path / "refs(unc).p"
    path.write_bytes(pickle.dumps([{"when": datetime.date(2016, 1, 1)}], protocol=2))
    with pytest.raises(ValueError, match=r"refs\(unc\)\.p: not a plain-data pickle \(refusing to load datetime\.date"):
        load_plain_pickle(path)


def test_fgvc_aircraft(served, tmp_path):
    published = write_fgvc(served.root)
    spec = {"kind": "fgvc_aircraft", "splits": ALL, "sources": {"archive": served.url("fgvc-aircraft-2013b.tar.gz")}}
    card, records, images = prepare("fgvc", spec, tmp_path)
    check_card(card, records)
    assert {s: len(rs) for s, rs in records.items()} == {s: len(rows) for s, rows in FGVC_ROWS.items()}
    bae = by_id(records)["fgvc-1340192"]
    assert bae["label"] == bae["multiple_choice_answer"] == "British Aerospace"
    assert bae["task"] == "classify" and bae["question"] == "what is the manufacturer of this aircraft ?"
    assert images["fgvc-1340192"] == ("jpg", published["images"]["1340192"])
    assert card["value_counts"]["train"]["label"] == {"Airbus": 1, "Boeing": 1, "British Aerospace": 1}


def test_scienceqa(served, tmp_path):
    published = write_scienceqa(served.root)
    spec = {"kind": "scienceqa", "splits": ALL, "sources": {
        name: served.url(f"{name}.json") for name in ("problems", "pid_splits", "captions")}}
    spec["sources"]["images"] = {split: served.url(f"{split}.zip") for split in ("train", "val", "test")}
    card, records, images = prepare("sqa", spec, tmp_path)
    check_card(card, records)
    # 3 has no caption and 4 no image.
    assert {s: [r["id"] for r in rs] for s, rs in records.items()} == {
        "train": ["scienceqa-1", "scienceqa-2"], "val": ["scienceqa-5"], "test": ["scienceqa-6", "scienceqa-7"]}
    record = by_id(records)["scienceqa-2"]
    assert record["captions"] == ["A diagram of item 2."] and record["domain"] == "social science"
    assert images["scienceqa-2"] == ("png", published["images"]["2"])


def test_scienceqa_without_image_sources_names_the_key(tmp_path):
    with pytest.raises(DownloadError, match=r"datasets\.sqa\.sources\.images\.test: no published URL"):
        sources.download_dataset("sqa", {"kind": "scienceqa", "splits": ALL, "sources": {
            "problems": "p.json", "pid_splits": "s.json", "captions": "c.json",
            "images": {"train": "x.zip", "val": "y.zip"}}}, tmp_path)


# ----------------------------------------------------------------------------- CC3M / CC12M


def test_cc3m_fetches_images_records_failures_and_resumes(served, tmp_path):
    web = write_web_images(served.root, 7)
    rows = cc3m_rows(served, 7, broken={2: "web/gone.jpg", 4: "web/page.html"})
    write_cc3m_tsv(served.root / "Train_GCC-training.tsv", rows)
    served.faults["web/img1.jpg"] = Fault(times=1, drop_after=100)  # retried, then fine
    spec = {"kind": "image_text", "format": "cc3m_tsv", "splits": {"train": 100, "val": 1, "test": 1},
            "sources": {"train": served.url("Train_GCC-training.tsv")},
            "max_samples": 6, "rows_per_shard": 3, "workers": 3}
    card, records, images = prepare("cc3m", spec, tmp_path)
    check_card(card, records)
    fetched = {r["source"]["row"]: r for r in by_id(records).values()}
    assert sorted(fetched) == [0, 1, 3, 5]  # 2 and 4 failed, 6 is past max_samples
    assert {s: len(rs) for s, rs in records.items()} == {"train": 2, "val": 1, "test": 1}
    record = fetched[3]
    assert record["id"] == "cc3m-train-000000003" and record["task"] == "caption"
    assert record["captions"] == ["a photo of thing 3 in the park"] and record["domain"] == "127.0.0.1"
    assert images[record["id"]] == ("jpg", web["web/img3.jpg"])
    failures = (tmp_path / "cache" / "failures.tsv").read_text().splitlines()
    assert failures[0] == "split\trow\turl\terror"
    assert [line.split("\t")[:3] for line in failures[1:]] == [
        ["train", "2", served.url("web/gone.jpg")], ["train", "4", served.url("web/page.html")]]
    assert "HTTP 404" in failures[1] and "not a readable image" in failures[2]
    assert served.requests_for("web/img6.jpg") == []
    # A rerun keeps finished shards and fetches only the missing one.
    raw = tmp_path / "cache" / "images_3"
    assert sorted(p.name for p in raw.iterdir()) == [
        "train-00000.status.json", "train-00000.tar", "train-00001.status.json", "train-00001.tar"]
    (raw / "train-00001.tar").unlink()
    sources.download_dataset("cc3m", {**spec, "download": FAST}, tmp_path / "cache")
    assert len(served.requests_for("web/img0.jpg")) == 1
    assert len(served.requests_for("web/img3.jpg")) == 2
    # Another max_samples changes the last shard's rows: only that shard is fetched again.
    sources.download_dataset("cc3m", {**spec, "max_samples": 5, "download": FAST}, tmp_path / "cache")
    assert json.loads((raw / "train-00001.status.json").read_text())["rows"] == [3, 5]
    sources.download_dataset("cc3m", {**spec, "max_samples": 7, "download": FAST}, tmp_path / "cache")
    assert json.loads((raw / "train-00002.status.json").read_text())["rows"] == [6, 7]
    assert [len(served.requests_for(f"web/img{k}.jpg")) for k in (0, 3, 6)] == [1, 4, 1]


def test_cc12m_parquet(served, tmp_path):
    write_web_images(served.root, 4)
    rows = cc3m_rows(served, 4, broken={})
    write_cc12m_parquet(served.root / "cc12m.parquet", rows)
    spec = {"kind": "image_text", "format": "parquet", "splits": {"train": 2, "val": 1, "test": 1},
            "sources": {"train": served.url("cc12m.parquet")}, "rows_per_shard": 2, "workers": 2}
    card, records, _ = prepare("cc12m", spec, tmp_path)
    check_card(card, records)
    assert sorted(r["source"]["row"] for r in by_id(records).values()) == [0, 1, 2, 3]
    assert by_id(records)["imagetext-train-000000002"]["caption"] == "a photo of thing 2 in the park"


def test_list_formats_and_their_errors(tmp_path):
    tsv = tmp_path / "cc12m.tsv"
    tsv.write_text("http://a/1.jpg\tfirst caption\nhttp://a/2.jpg\tsecond\n")
    assert image_text.read_rows(tsv, "cc12m_tsv") == [("first caption", "http://a/1.jpg"), ("second", "http://a/2.jpg")]
    assert image_text.read_rows(tsv, "cc12m_tsv", limit=1) == [("first caption", "http://a/1.jpg")]
    bad = tmp_path / "bad.tsv"
    bad.write_text("caption\thttp://a/1.jpg\nno tab here\n")
    with pytest.raises(ValueError, match=r"bad\.tsv:2: expected two non-empty tab-separated fields"):
        image_text.read_rows(bad, "cc3m_tsv")
    table = write_cc12m_parquet(tmp_path / "t.parquet", [("c", "http://a/1.jpg")])
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"link": ["http://a/1.jpg"], "caption": ["c"]}), tmp_path / "bad.parquet")
    with pytest.raises(ValueError, match=r"bad\.parquet: parquet table lacks column\(s\) \['url'\]"):
        image_text.read_rows(tmp_path / "bad.parquet", "parquet")
    assert image_text.read_rows(table, "parquet") == [("c", "http://a/1.jpg")]


# ----------------------------------------------------------------------------- folder


def test_folder_of_normalized_shards_is_validated_and_copied(tmp_path):
    folder = tmp_path / "private"
    shapes.generate_shapes(folder, {"train": 5, "val": 2, "test": 3}, seed=1, shard_size=2)
    spec = {"kind": "folder", "path": str(folder), "splits": {"train": 100, "val": 100, "test": 2}}
    card, records, images = prepare("private", spec, tmp_path)
    check_card(card, records)
    original = {r["id"]: r for s in ("train", "val", "test") for r in shards.read_records(shards.split_shards(folder, s))}
    assert {s: len(rs) for s, rs in records.items()} == {"train": 5, "val": 2, "test": 2}
    for record in by_id(records).values():
        assert record == original[record["id"]]
    with tarfile.open(folder / "train-00000.tar") as tar:
        png = tar.extractfile("shapes-train-000000.png").read()
    assert images["shapes-train-000000"] == ("png", png)


def _write_shard(path: Path, members: dict[str, bytes]) -> None:
    with tarfile.open(path, "w") as tar:
        for name, content in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))


@pytest.mark.parametrize(
    ("key", "message"),
    [
        ("bad_record", r"train-00000\.tar: record 'bad_record' lacks key\(s\) answer_type"),
        ("bad.id", r"train-00000\.tar: member 'bad\.id\.json' is neither \{id\}\.json nor an image"),
    ],
)
def test_folder_with_a_bad_record_names_it(tmp_path, key, message):
    folder = tmp_path / "private"
    folder.mkdir()
    record = {"id": key, "task": "vqa", "question": "q", "answers": [{"answer": "a"}]}
    _write_shard(folder / "train-00000.tar", {f"{key}.json": json.dumps(record).encode(), f"{key}.png": b"x"})
    (folder / "card.json").write_text(json.dumps({"shards": {"train": ["train-00000.tar"]}}))
    spec = {"kind": "folder", "path": str(folder), "splits": {"train": 1, "val": 0, "test": 0}}
    manifest = sources.download_dataset("private", spec, tmp_path / "cache")
    with pytest.raises(ValueError, match=message):
        sources.normalize_dataset("private", spec, manifest, tmp_path / "data")


def test_folder_without_a_card_names_the_key(tmp_path):
    spec = {"kind": "folder", "path": str(tmp_path / "nothing"), "splits": ALL}
    with pytest.raises(DownloadError, match=r"datasets\.private\.path: .*nothing has no card\.json"):
        sources.download_dataset("private", spec, tmp_path / "cache")


# ----------------------------------------------------------------------------- split assignment


@settings(max_examples=60, deadline=None)
@given(
    groups=st.lists(st.integers(1, 4), min_size=1, max_size=12),
    has_val=st.booleans(),
    caps=st.fixed_dictionaries({"train": st.integers(1, 20), "val": st.integers(0, 6), "test": st.integers(1, 6)}),
    seed=st.integers(0, 3),
)
def test_assign_splits_never_shares_an_image(groups, has_val, caps, seed):
    pools: dict[str, list[common.Item]] = {"train": [], "val": []}
    for g, size in enumerate(groups):
        split = "val" if has_val and g % 3 == 0 else "train"
        pools[split] += [common.Item({"id": f"r{g}-{k}"}, "store", "img", f"g{g}") for k in range(size)]
    try:
        assigned = common.assign_splits(pools, caps, seed)
    except ValueError as error:
        assert "has no records left to carve it from" in str(error)
        return
    assert assigned == common.assign_splits(pools, caps, seed)
    seen: dict[str, str] = {}
    for split, items in assigned.items():
        assert len(items) <= caps[split]
        assert [i.record["id"] for i in items] == sorted(i.record["id"] for i in items)
        for item in items:
            assert seen.setdefault(item.group, split) == split
    total = sum(groups)
    if not pools["val"] and caps["test"] + 3 + caps["val"] <= total:
        # Carved splits get exactly their cap when the donor has enough records (carving test
        # drops at most the 3 other records of the one group it cuts).
        assert (len(assigned["val"]), len(assigned["test"])) == (caps["val"], caps["test"])


def test_check_record_names_the_problem():
    record = common.make_record(id="x-1", task="vqa", answers=common.single_answer("a"), domain="d", source={})
    common.check_record({**record, "split": "train"}, "here")
    with pytest.raises(ValueError, match=r"here: record 'x\.1': id must match"):
        common.check_record({**record, "id": "x.1", "split": "train"}, "here")
    with pytest.raises(ValueError, match=r"task must be one of"):
        common.check_record({**record, "task": "detect", "split": "train"}, "here")
    with pytest.raises(ValueError, match=r"a caption record needs at least one reference caption"):
        common.check_record({**record, "task": "caption", "split": "train"}, "here")


def test_names_pattern_routes_each_dataset_to_its_rules():
    datasets = {"shapes": {"kind": "shapes"}, "vqa.v2": {"kind": "vqav2"}, "cc3m": {"kind": "image_text"}}
    downloaded = sources.names_pattern(datasets, downloaded=True)
    assert downloaded == r"vqa\.v2|cc3m"
    assert sources.names_pattern(datasets, downloaded=False) == "shapes"
    assert sources.names_pattern({"shapes": {"kind": "shapes"}}, downloaded=True) == "(?!)"
