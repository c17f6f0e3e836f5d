"""A local folder already in the normalized format (private data): ``card.json`` listing
``shards`` per split, and webdataset shards of ``{id}.json`` + ``{id}.{jpg,jpeg,png}``.

Every record is checked against the normalized schema and rewritten (images byte for byte)
through the same split selection as the downloaded kinds, so caps and carving apply too.
"""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

from fedumm.data import shards
from fedumm.data.sources.common import Item, load_json


def image_members(shard: Path) -> dict[str, str]:
    """Sample key -> name of its image member (``{key}.jpg``, ``.jpeg`` or ``.png``) in a shard.

    Every member must be ``{key}.json`` or such an image: a dotted id would split into a
    different key and extension, and its sample would silently vanish from readers.
    """
    with tarfile.open(shard) as tar:
        names = [m.name for m in tar if m.isfile()]
    images = {}
    for name in names:
        key, _, extension = Path(name).name.partition(".")
        if extension in shards.IMAGE_EXTENSIONS:
            images[key] = name
        elif extension != "json":
            raise ValueError(
                f"{shard}: member {name!r} is neither {{id}}.json nor an image {{id}}.jpg/.jpeg/.png "
                "(ids may not contain dots)"
            )
    return images


def folder_items(shard: Path) -> list[Item]:
    """Items of one shard, in tar order; each record's image is the member of the same key."""
    images = image_members(shard)
    items = []
    for record in shards.read_records([shard]):
        if record.get("id") not in images:
            raise ValueError(f"{shard}: sample {record.get('id')!r} has no image member")
        rest = {k: v for k, v in record.items() if k != "split"}
        items.append(Item(rest, str(shard), images[record["id"]], record["id"]))
    return items


def folder_pools(spec: dict, manifest: dict[str, str]) -> dict[str, list[Item]]:
    root = Path(manifest["path"])
    card = load_json(root / "card.json")
    if not isinstance(card, dict) or not isinstance(card.get("shards"), dict):
        raise ValueError(f"{root / 'card.json'}: expected a card with 'shards' per split, got {json.dumps(card)[:200]}")
    return {
        split: [item for name in names for item in folder_items(root / name)]
        for split, names in card["shards"].items()
    }
