"""Datasets over COCO 2014 images: VQA v2, COCO captions (Karpathy split), COCO-QA, RefCOCO.

Images are the published COCO 2014 files ``COCO_{train,val}2014_%012d.jpg``, read from
``train2014.zip``/``val2014.zip`` (or an extracted folder) without extracting them.

* VQA v2 (Goyal et al. 2017): ``v2_OpenEnded_mscoco_{subset}_questions.json``
  (``{data_subtype, questions: [{image_id, question, question_id}]}``) and
  ``v2_mscoco_{subset}_annotations.json`` (``{data_type, annotations: [{question_id, image_id,
  answers: [{answer, answer_confidence, answer_id}] x10, multiple_choice_answer, answer_type,
  question_type}]}``), each in its published zip. train2014 -> train, val2014 -> val; the test
  split is carved out of val2014 by image (the test annotations are not public).
* COCO captions, Karpathy split: ``dataset_coco.json`` of ``caption_datasets.zip``
  (``{images: [{filepath, filename, split, sentences: [{raw}], cocoid}]}``); its ``restval``
  images join ``train`` (the usual 113k training images).
* COCO-QA (Ren et al. 2015): ``cocoqa-2015-05-17.zip`` with ``{train,test}/{questions,answers,
  img_ids,types}.txt``, one line per question; types 0-3 are object, number, color, location.
  Train images are train2014, test images val2014; val is carved out of train.
* RefCOCO (Yu et al. 2016, UNC release): ``refcoco.zip`` with ``refs(unc).p`` (a Python pickle of
  ``[{ref_id, ann_id, image_id, split, category_id, sentences: [{sent, sent_id}]}]``; read with
  an unpickler that refuses every class, so only plain lists, dicts and strings load) and
  ``instances.json`` (COCO format). One grounding record per referring expression; the
  target is the annotation's box as text. testA and testB together make ``test``.
"""

from __future__ import annotations

import pickle
from pathlib import Path

from fedumm.data.sources.common import (
    NUM_VQA_ANSWERS,
    Item,
    find_file,
    load_json,
    make_record,
    single_answer,
    text_lines,
)
from fedumm.evaluation import grounding

VQA_URL = "https://s3.amazonaws.com/cvmlp/vqa/mscoco/vqa"
COCO_ZIPS = "http://images.cocodataset.org/zips"
VQAV2_SOURCES = {
    "train": {
        "questions": f"{VQA_URL}/v2_Questions_Train_mscoco.zip",
        "annotations": f"{VQA_URL}/v2_Annotations_Train_mscoco.zip",
        "images": f"{COCO_ZIPS}/train2014.zip",
    },
    "val": {
        "questions": f"{VQA_URL}/v2_Questions_Val_mscoco.zip",
        "annotations": f"{VQA_URL}/v2_Annotations_Val_mscoco.zip",
        "images": f"{COCO_ZIPS}/val2014.zip",
    },
}
KARPATHY_SOURCES = {
    "annotations": "https://cs.stanford.edu/people/karpathy/deepimagesent/caption_datasets.zip",
    "train2014": f"{COCO_ZIPS}/train2014.zip",
    "val2014": f"{COCO_ZIPS}/val2014.zip",
}
COCOQA_SOURCES = {
    "archive": "http://www.cs.toronto.edu/~mren/research/imageqa/data/cocoqa/cocoqa-2015-05-17.zip",
    "train2014": f"{COCO_ZIPS}/train2014.zip",
    "val2014": f"{COCO_ZIPS}/val2014.zip",
}
REFCOCO_SOURCES = {
    "archive": "https://bvisionweb1.cs.unc.edu/licheng/referit/data/refcoco.zip",
    "train2014": f"{COCO_ZIPS}/train2014.zip",
}
COCOQA_TYPES: tuple[str, ...] = ("object", "number", "color", "location")
REFCOCO_SPLITS: dict[str, str] = {"train": "train", "val": "val", "test": "test", "testA": "test", "testB": "test"}
GROUND_QUESTION = "where is {expression} ?"


def coco_image_name(subset: str, image_id: int) -> str:
    """``COCO_train2014_000000000009.jpg`` for (``train2014``, 9)."""
    return f"COCO_{subset}_{int(image_id):012d}.jpg"


def coco_box(bbox: list[float]) -> list[int]:
    """COCO's ``[x, y, width, height]`` (floats) as integer pixels ``[x0, y0, x1, y1]``, x1/y1 exclusive."""
    x, y, w, h = bbox
    return [round(x), round(y), round(x + w), round(y + h)]


# ----------------------------------------------------------------------------- VQA v2


def vqav2_items(questions: dict, annotations: dict, images: str, where: str) -> list[Item]:
    """Items of one VQA v2 subset from its parsed questions and annotations files."""
    subset = questions["data_subtype"]
    by_question = {a["question_id"]: a for a in annotations["annotations"]}
    items = []
    for q in questions["questions"]:
        a = by_question.get(q["question_id"])
        if a is None:
            raise ValueError(f"{where}: question {q['question_id']} has no annotation")
        record = make_record(
            id=f"vqav2-{subset}-{q['question_id']}",
            task="vqa",
            question=q["question"],
            answers=a["answers"],
            multiple_choice_answer=a["multiple_choice_answer"],
            answer_type=a["answer_type"],
            question_type=a["question_type"],
            domain=annotations.get("data_type", "mscoco"),
            source={"dataset": "vqav2", "subset": subset, "image_id": q["image_id"], "question_id": q["question_id"]},
        )
        items.append(Item(record, images, coco_image_name(subset, q["image_id"]), f"{subset}-{q['image_id']}"))
    return items


def vqav2_pools(spec: dict, manifest: dict[str, str]) -> dict[str, list[Item]]:
    pools = {}
    for split in ("train", "val"):
        if f"{split}.questions" not in manifest:
            continue
        questions_file = find_file(manifest[f"{split}.questions"], "*questions.json")
        annotations_file = find_file(manifest[f"{split}.annotations"], "*annotations.json")
        pools[split] = vqav2_items(
            load_json(questions_file), load_json(annotations_file), manifest[f"{split}.images"], str(annotations_file)
        )
    return pools


# ----------------------------------------------------------------------------- Karpathy captions


def karpathy_items(document: dict, stores: dict[str, str], where: str) -> dict[str, list[Item]]:
    """Items per split of a parsed ``dataset_coco.json``; ``stores`` maps filepath -> image store."""
    pools: dict[str, list[Item]] = {}
    for image in document["images"]:
        split = "train" if image["split"] == "restval" else image["split"]
        if image["filepath"] not in stores:
            raise ValueError(f"{where}: image {image['filename']} is in {image['filepath']!r}, which has no source")
        record = make_record(
            id=f"karpathy-{image['cocoid']}",
            task="caption",
            answers=single_answer(image["sentences"][0]["raw"].strip()),
            captions=[s["raw"].strip() for s in image["sentences"]],
            domain="coco",
            source={"dataset": "coco_karpathy", "image_id": image["cocoid"], "karpathy_split": image["split"]},
        )
        pools.setdefault(split, []).append(
            Item(record, stores[image["filepath"]], image["filename"], str(image["cocoid"]))
        )
    return pools


def karpathy_pools(spec: dict, manifest: dict[str, str]) -> dict[str, list[Item]]:
    path = find_file(manifest["annotations"], "dataset_coco.json")
    return karpathy_items(load_json(path), {k: manifest[k] for k in ("train2014", "val2014")}, str(path))


# ----------------------------------------------------------------------------- COCO-QA


def cocoqa_items(folder: Path, split: str, images: str, subset: str) -> list[Item]:
    """Items of one COCO-QA folder (``questions.txt``, ``answers.txt``, ``img_ids.txt``, ``types.txt``)."""
    columns = {name: text_lines(folder / f"{name}.txt") for name in ("questions", "answers", "img_ids", "types")}
    lengths = {name: len(lines) for name, lines in columns.items()}
    if len(set(lengths.values())) != 1:
        raise ValueError(f"{folder}: the four files differ in length: {lengths}")
    items = []
    for i, (question, answer, image_id, kind) in enumerate(zip(*columns.values())):
        question_type = COCOQA_TYPES[int(kind)]
        record = make_record(
            id=f"cocoqa-{split}-{i:06d}",
            task="vqa",
            question=question.strip(),
            # One reference answer, repeated: the official VQA accuracy becomes exact match.
            answers=single_answer(answer.strip(), copies=NUM_VQA_ANSWERS),
            multiple_choice_answer=answer.strip(),
            answer_type="number" if question_type == "number" else "other",
            question_type=question_type,
            domain="coco",
            source={"dataset": "cocoqa", "split": split, "index": i, "image_id": int(image_id)},
        )
        items.append(Item(record, images, coco_image_name(subset, int(image_id)), f"{subset}-{int(image_id)}"))
    return items


def cocoqa_pools(spec: dict, manifest: dict[str, str]) -> dict[str, list[Item]]:
    root = Path(manifest["archive"])
    return {
        split: cocoqa_items(find_file(root, f"{split}/questions.txt").parent, split, manifest[subset], subset)
        for split, subset in (("train", "train2014"), ("test", "val2014"))
    }


# ----------------------------------------------------------------------------- RefCOCO


class _PlainUnpickler(pickle.Unpickler):
    """Loads only pickles of built-in containers and scalars: every class lookup is refused,
    so a crafted file cannot run code."""

    def find_class(self, module: str, name: str):
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}: only plain data is accepted")


def load_plain_pickle(path: Path):
    """A pickle of plain data (Python 2 ``str`` decoded as Latin-1, as the published refs files need)."""
    with open(path, "rb") as handle:
        try:
            return _PlainUnpickler(handle, encoding="latin1").load()
        except (pickle.UnpicklingError, EOFError) as error:
            raise ValueError(f"{path}: not a plain-data pickle ({error})") from None


def refcoco_items(refs: list[dict], instances: dict, images: str, split_by: str) -> dict[str, list[Item]]:
    """Grounding items per split: one per referring expression of each ref."""
    annotations = {a["id"]: a for a in instances["annotations"]}
    categories = {c["id"]: c for c in instances["categories"]}
    files = {i["id"]: i["file_name"] for i in instances["images"]}
    pools: dict[str, list[Item]] = {}
    for ref in refs:
        box = coco_box(annotations[ref["ann_id"]]["bbox"])
        category = categories[ref["category_id"]]
        for sentence in ref["sentences"]:
            record = make_record(
                id=f"refcoco-{ref['ref_id']}-{sentence['sent_id']}",
                task="ground",
                question=GROUND_QUESTION.format(expression=sentence["sent"].strip()),
                answers=single_answer(grounding.format_box(box)),
                multiple_choice_answer=grounding.format_box(box),
                answer_type="box",
                question_type="where is",
                label=category["name"],
                box=box,
                domain=category["supercategory"],
                source={
                    "dataset": "refcoco",
                    "split_by": split_by,
                    "split": ref["split"],
                    "image_id": ref["image_id"],
                    "ann_id": ref["ann_id"],
                    "ref_id": ref["ref_id"],
                    "sent_id": sentence["sent_id"],
                },
            )
            item = Item(record, images, files[ref["image_id"]], str(ref["image_id"]))
            pools.setdefault(REFCOCO_SPLITS[ref["split"]], []).append(item)
    return pools


def refcoco_pools(spec: dict, manifest: dict[str, str]) -> dict[str, list[Item]]:
    split_by = spec.get("split_by", "unc")
    refs = load_plain_pickle(find_file(manifest["archive"], f"refs({split_by}).p"))
    instances = load_json(find_file(manifest["archive"], "instances.json"))
    return refcoco_items(refs, instances, manifest["train2014"], split_by)
