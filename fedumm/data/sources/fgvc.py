"""FGVC-Aircraft (Maji et al. 2013), classified by manufacturer, in its published layout.

``fgvc-aircraft-2013b.tar.gz`` unpacks to ``fgvc-aircraft-2013b/data/`` with ``images/{id}.jpg``
and ``images_manufacturer_{train,val,test}.txt``: one ``{image id} {manufacturer}`` line per
image (the name may contain spaces, e.g. ``1025794 British Aerospace``). The images keep the
copyright banner at their bottom (the bytes are stored unchanged).
"""

from __future__ import annotations

from pathlib import Path

from fedumm.data.sources.common import (
    Item,
    find_file,
    make_record,
    single_answer,
    text_lines,
)

SOURCES = {"archive": "https://www.robots.ox.ac.uk/~vgg/data/fgvc-aircraft/archives/fgvc-aircraft-2013b.tar.gz"}
QUESTION = "what is the manufacturer of this aircraft ?"


def fgvc_items(data_dir: Path, split: str) -> list[Item]:
    """Items of ``images_manufacturer_{split}.txt`` in the ``data`` folder."""
    listing = data_dir / f"images_manufacturer_{split}.txt"
    items = []
    for number, line in enumerate(text_lines(listing), start=1):
        image_id, _, manufacturer = line.strip().partition(" ")
        if not image_id or not manufacturer:
            raise ValueError(f"{listing}:{number}: expected '<image id> <manufacturer>', got {line!r}")
        record = make_record(
            id=f"fgvc-{image_id}",
            task="classify",
            question=QUESTION,
            answers=single_answer(manufacturer),
            multiple_choice_answer=manufacturer,
            answer_type="other",
            question_type="what is the manufacturer",
            label=manufacturer,
            domain="fgvc_aircraft",
            source={"dataset": "fgvc_aircraft", "image_id": image_id, "split": split},
        )
        items.append(Item(record, str(data_dir), f"images/{image_id}.jpg", image_id))
    return items


def fgvc_pools(spec: dict, manifest: dict[str, str]) -> dict[str, list[Item]]:
    data_dir = find_file(manifest["archive"], "images_manufacturer_train.txt").parent
    return {split: fgvc_items(data_dir, split) for split in ("train", "val", "test")}
