"""ScienceQA (Lu et al. 2022) image-caption pairs, as FedVLMBench's captioning task.

Published files of the ScienceQA repository: ``data/scienceqa/problems.json``
(``{pid: {image: "image.png" | null, subject, split, ...}}``), ``data/scienceqa/pid_splits.json``
(``{train: [pid], val: [...], test: [...]}``) and ``data/captions.json`` (``{captions: {pid:
caption}}``); images in ``train.zip``/``val.zip``/``test.zip`` as ``{split}/{pid}/image.png``.
Problems without an image or a caption are skipped; the domain is the problem's subject.
"""

from __future__ import annotations

from fedumm.data.sources.common import Item, load_json, make_record, single_answer

GITHUB = "https://raw.githubusercontent.com/lupantech/ScienceQA/main/data"
# The image zips are on Google Drive without a stable direct URL: set them in the config.
SOURCES = {
    "problems": f"{GITHUB}/scienceqa/problems.json",
    "pid_splits": f"{GITHUB}/scienceqa/pid_splits.json",
    "captions": f"{GITHUB}/captions.json",
    "images": {"train": None, "val": None, "test": None},
}


def scienceqa_items(problems: dict, pids: list[str], captions: dict[str, str], images: str, split: str) -> list[Item]:
    items = []
    for pid in pids:
        problem = problems[pid]
        caption = captions.get(pid, "").strip()
        if not problem.get("image") or not caption:
            continue
        record = make_record(
            id=f"scienceqa-{pid}",
            task="caption",
            answers=single_answer(caption),
            captions=[caption],
            domain=problem.get("subject", "science"),
            source={"dataset": "scienceqa", "image_id": pid, "pid": pid, "split": split},
        )
        items.append(Item(record, images, f"{pid}/{problem['image']}", pid))
    return items


def scienceqa_pools(spec: dict, manifest: dict[str, str]) -> dict[str, list[Item]]:
    problems = load_json(manifest["problems"])
    splits = load_json(manifest["pid_splits"])
    captions = load_json(manifest["captions"])["captions"]
    return {
        split: scienceqa_items(problems, splits[split], captions, manifest[f"images.{split}"], split)
        for split in ("train", "val", "test")
    }
