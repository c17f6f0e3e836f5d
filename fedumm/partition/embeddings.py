"""Image and text embeddings of a dataset split from a CLIP or SigLIP model (the ``embeddings`` rule).

Fed-CMP (App. E.1) embeds every image–text pair with a contrastive encoder (SigLIP2) and
partitions on the L2-normalised embeddings; :mod:`fedumm.partition.clustering` does the partitioning.
This is not the ``features`` cache, which stores the VLM's own frozen vision tower outputs.

An embedder spec (an entry of the config's ``embedders``) is ``{id: <hub id or local dir>}``
or ``{config: {model_type: clip | siglip, ...}}`` (an inline transformers config of the full
two-tower model, randomly initialised under ``seed``), plus ``text`` (what text of a record is
embedded, :func:`record_text`), ``seed`` and ``batch_size``.

Inline configs have no tokenizer; their text is tokenized by :class:`HashingTokenizer`, a
fixed word-hashing map, so that they run offline and deterministically.

File format (``results/embeddings/{embedder}/{dataset}/{split}.safetensors``): ``image`` and
``text`` float32 matrices (samples × dim), row i belonging to the i-th sample id, and ``ids``,
the UTF-8 bytes of the ids joined by newlines (uint8); the metadata key ``fedumm`` holds the
embedder spec as JSON. Whole matrices rather than one tensor
per id keep the header small at Fed-CMP's scale (millions of samples would exceed the
safetensors header limit) and load in one read; :class:`Embeddings` looks rows up by id.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from tqdm import tqdm
from transformers import AutoConfig, AutoModel, AutoTokenizer

from fedumm.data.shards import read_samples
from fedumm.io import atomic_path
from fedumm.models.images import (
    ImageTransform,
    image_transform,
    transform_from_preprocessor,
)
from fedumm.models.vlm import seeded

MODEL_TYPES: tuple[str, ...] = ("clip", "siglip")
TEXT_SOURCES: tuple[str, ...] = ("question", "caption", "question_caption")
SPEC_KEYS: frozenset[str] = frozenset({"id", "config", "text", "seed", "batch_size"})
DEFAULT_TEXT = "question_caption"
DEFAULT_BATCH_SIZE = 64


def record_text(record: dict, source: str = DEFAULT_TEXT) -> str:
    """The text of a record that is embedded.

    ``question``: the question alone (what a VQA client's prompts are about). ``caption``: the
    caption (Fed-CMP's setting, image–caption pairs), or the question when the record has none.
    ``question_caption`` (default): the question, then the caption when present, so that the text
    side carries both what is asked and what the image shows.
    """
    if source not in TEXT_SOURCES:
        raise ValueError(f"embedder `text` must be one of {TEXT_SOURCES}, got {source!r}")
    caption = record.get("caption")
    if source == "question" or not caption:
        return record["question"]
    if source == "caption":
        return caption
    return f"{record['question']} {caption}"


def validate_spec(spec: dict, name: str = "embedder") -> dict:
    """The spec with defaults filled in; raises ValueError naming the offending key."""
    unknown = set(spec) - SPEC_KEYS
    if unknown:
        raise ValueError(f"{name}: unknown keys {sorted(unknown)} (allowed: {', '.join(sorted(SPEC_KEYS))})")
    if ("id" in spec) == ("config" in spec):
        raise ValueError(f"{name}: give exactly one of `id` or `config`")
    if "config" in spec and spec["config"].get("model_type") not in MODEL_TYPES:
        raise ValueError(f"{name}.config.model_type must be one of {MODEL_TYPES}, got {spec['config'].get('model_type')!r}")
    out = {"text": DEFAULT_TEXT, "seed": 0, "batch_size": DEFAULT_BATCH_SIZE, **spec}
    if out["text"] not in TEXT_SOURCES:
        raise ValueError(f"{name}.text must be one of {TEXT_SOURCES}, got {out['text']!r}")
    for key in ("seed", "batch_size"):
        value = out[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < (1 if key == "batch_size" else 0):
            raise ValueError(f"{name}.{key} must be an integer >= {1 if key == 'batch_size' else 0}, got {value!r}")
    return out


# ----------------------------------------------------------------------------- tokenizing


@dataclass(frozen=True)
class HashingTokenizer:
    """Word-hashing tokenizer for inline (random-init) text towers.

    Lower-cased whitespace words map to ``1 + crc32(word) mod (vocab_size − 2)``; 0 pads and
    ``vocab_size − 1`` ends every sequence. The end token is the largest id, so CLIP pools it
    both with a current ``eos_token_id`` and with the legacy argmax rule. ``pad_to_max``
    pads every sequence to ``max_length`` (SigLIP pools the last position, as it was trained).
    """

    vocab_size: int
    max_length: int
    pad_to_max: bool

    @property
    def eos_id(self) -> int:
        return self.vocab_size - 1

    def __call__(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        rows = []
        for text in texts:
            words = [1 + zlib.crc32(w.encode("utf-8")) % (self.vocab_size - 2) for w in text.lower().split()]
            rows.append(words[: self.max_length - 1] + [self.eos_id])
        width = self.max_length if self.pad_to_max else max((len(r) for r in rows), default=1)
        ids = torch.zeros(len(rows), width, dtype=torch.long)
        mask = torch.zeros(len(rows), width, dtype=torch.long)
        for i, row in enumerate(rows):
            ids[i, : len(row)] = torch.tensor(row)
            mask[i, : len(row)] = 1
        return {"input_ids": ids, "attention_mask": mask}


def _hub_tokenizer(model_id: str, model_type: str, max_length: int) -> Callable[[Sequence[str]], dict]:
    tokenizer = AutoTokenizer.from_pretrained(model_id)
    # SigLIP was trained on text padded to max_length and pools the last position.
    padding = "max_length" if model_type == "siglip" else True

    def tokenize(texts: Sequence[str]) -> dict[str, torch.Tensor]:
        encoded = tokenizer(list(texts), padding=padding, truncation=True, max_length=max_length, return_tensors="pt")
        return {key: encoded[key] for key in ("input_ids", "attention_mask") if key in encoded}

    return tokenize


# ----------------------------------------------------------------------------- model


@dataclass
class Embedder:
    """A two-tower model with its image preprocessing and tokenizer."""

    model: torch.nn.Module
    transform: ImageTransform
    tokenize: Callable[[Sequence[str]], dict[str, torch.Tensor]]
    text_source: str
    batch_size: int


def inline_config(config: dict) -> AutoConfig:
    """The transformers config of an inline spec, with the special tokens of :class:`HashingTokenizer`."""
    text = dict(config.get("text_config", {}))
    vocab_size = text.setdefault("vocab_size", 1024)
    text.update(pad_token_id=0, bos_token_id=None, eos_token_id=vocab_size - 1)
    return AutoConfig.for_model(**{**config, "text_config": text})


def build_embedder(spec: dict, device: torch.device) -> Embedder:
    """Load or build the model of an embedder spec; bfloat16 on a GPU, float32 on the CPU."""
    spec = validate_spec(spec)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    if "config" in spec:
        config = inline_config(spec["config"])
        with seeded(spec["seed"]):
            model = AutoModel.from_config(config)
        transform = transform_from_preprocessor({}, config.vision_config.image_size)
        tokenize = HashingTokenizer(
            config.text_config.vocab_size,
            config.text_config.max_position_embeddings,
            pad_to_max=config.model_type == "siglip",
        )
    else:
        config = AutoConfig.from_pretrained(spec["id"])
        if config.model_type not in MODEL_TYPES:
            raise ValueError(f"embedder id {spec['id']!r} has model_type {config.model_type!r}; supported: {MODEL_TYPES}")
        model = AutoModel.from_pretrained(spec["id"], dtype=dtype)
        transform = image_transform({"vision": {"id": spec["id"]}})
        tokenize = _hub_tokenizer(spec["id"], config.model_type, config.text_config.max_position_embeddings)
    return Embedder(model.to(device=device, dtype=dtype).eval(), transform, tokenize, spec["text"], spec["batch_size"])


def _pooled(output) -> torch.Tensor:
    # transformers < 5 returns the projected embedding, >= 5 an output whose pooler_output it is.
    return output if isinstance(output, torch.Tensor) else output.pooler_output


@torch.no_grad()
def embed_batch(embedder: Embedder, samples: Sequence[dict]) -> tuple[torch.Tensor, torch.Tensor]:
    """L2-normalised float32 (image, text) embeddings of records that carry an ``"image"``."""
    parameter = next(embedder.model.parameters())
    pixels = torch.stack([embedder.transform(s["image"]) for s in samples]).to(parameter.device, parameter.dtype)
    tokens = {k: v.to(parameter.device) for k, v in embedder.tokenize([record_text(s, embedder.text_source) for s in samples]).items()}
    image = _pooled(embedder.model.get_image_features(pixel_values=pixels)).float()
    text = _pooled(embedder.model.get_text_features(**tokens)).float()
    return torch.nn.functional.normalize(image, dim=-1).cpu(), torch.nn.functional.normalize(text, dim=-1).cpu()


# ----------------------------------------------------------------------------- files


@dataclass(frozen=True)
class Embeddings:
    """Embeddings of one split: row i of ``image`` and ``text`` belongs to ``ids[i]``."""

    ids: list[str]
    image: np.ndarray
    text: np.ndarray

    def rows(self, ids: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """(image, text) matrices of ``ids``, in that order; a KeyError names a missing id."""
        row_of = {sample_id: i for i, sample_id in enumerate(self.ids)}
        missing = [i for i in ids if i not in row_of]
        if missing:
            raise KeyError(f"no embeddings for {len(missing)} sample id(s), e.g. {missing[0]!r}")
        rows = np.fromiter((row_of[i] for i in ids), dtype=np.int64, count=len(ids))
        return self.image[rows], self.text[rows]


def write_embeddings(path: Path, ids: Sequence[str], image: torch.Tensor, text: torch.Tensor, metadata: dict) -> None:
    """Write the embeddings file atomically (format in the module docstring)."""
    if not (len(ids) == len(image) == len(text)):
        raise ValueError(f"ids, image and text differ in length: {len(ids)}, {len(image)}, {len(text)}")
    id_bytes = "\n".join(ids).encode("utf-8")
    tensors = {
        "ids": torch.frombuffer(bytearray(id_bytes), dtype=torch.uint8) if id_bytes else torch.zeros(0, dtype=torch.uint8),
        "image": image.float().contiguous(),
        "text": text.float().contiguous(),
    }
    with atomic_path(path) as tmp:
        # One metadata key: safetensors writes several in hash order, which would change the bytes.
        save_file(tensors, str(tmp), metadata={"fedumm": json.dumps(metadata, sort_keys=True)})


def load_embeddings(path: Path) -> Embeddings:
    """Read an embeddings file written by :func:`write_embeddings`."""
    with safe_open(str(path), framework="pt") as handle:
        id_bytes = handle.get_tensor("ids").numpy().tobytes()
        image, text = handle.get_tensor("image").numpy(), handle.get_tensor("text").numpy()
    ids = id_bytes.decode("utf-8").split("\n") if id_bytes else []
    if not (len(ids) == len(image) == len(text)):
        raise ValueError(f"{path}: {len(ids)} ids but {len(image)} image and {len(text)} text rows")
    return Embeddings(ids, image, text)


def embed_split(
    spec: dict, shards: Sequence[Path], out_file: Path, device: torch.device, total: int | None = None
) -> int:
    """Embed every sample of ``shards`` in batches (a tqdm bar over samples) and write ``out_file``.

    Shards are decoded one at a time, so memory holds one shard's images. Returns the sample count.
    """
    spec = validate_spec(spec)
    embedder = build_embedder(spec, device)
    ids: list[str] = []
    images: list[torch.Tensor] = []
    texts: list[torch.Tensor] = []
    with tqdm(total=total, desc=f"embeddings {out_file.name}", unit="sample", mininterval=5) as bar:
        for shard in shards:
            samples = read_samples([shard])
            for start in range(0, len(samples), embedder.batch_size):
                chunk = samples[start : start + embedder.batch_size]
                image, text = embed_batch(embedder, chunk)
                ids.extend(s["id"] for s in chunk)
                images.append(image)
                texts.append(text)
                bar.update(len(chunk))
    empty = torch.zeros(0, 0)  # an empty split (e.g. no val samples) still gets a file
    write_embeddings(
        out_file,
        ids,
        torch.cat(images) if images else empty,
        torch.cat(texts) if texts else empty,
        {"spec": spec, "normalised": True},
    )
    return len(ids)
