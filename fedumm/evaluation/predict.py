"""Answers of a trained model to one's own images and questions (``fedumm predict``).

The images and questions become records of a one-shard dataset in the pipeline's own format, so
the answers come from exactly the code that the ``evaluate`` rule scores: the family's inputs, its
prompt template and greedy decoding.
"""

from __future__ import annotations

import io
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from fedumm.artifacts import ADAPTER_WEIGHTS, BASE_SPEC
from fedumm.data.shards import IMAGE_EXTENSIONS, write_encoded_shard
from fedumm.evaluation.evaluate import predict_answers
from fedumm.models import families, text
from fedumm.models.adapters import load_adapter


class PredictError(ValueError):
    """A question or image that the model cannot take, named."""


@dataclass(frozen=True)
class Question:
    image: Path
    question: str


def pair_questions(images: Sequence[Path], questions: Sequence[str]) -> list[Question]:
    """Images and questions paired in order; one of either side is paired with every one of the other."""
    if not images or not questions:
        raise PredictError("give at least one image and one question")
    if len(images) == 1 or len(questions) == 1 or len(images) == len(questions):
        count = max(len(images), len(questions))
        return [Question(images[i % len(images)], questions[i % len(questions)]) for i in range(count)]
    raise PredictError(f"{len(images)} images and {len(questions)} questions: give as many of each, "
                       "or one image (asked every question), or one question (asked of every image)")


def _encoded_image(path: Path) -> tuple[str, bytes]:
    """The image file as the shard stores it: PNG/JPEG bytes as they are, anything else as PNG."""
    if not path.is_file():
        raise PredictError(f"image {path}: no such file")
    extension = path.suffix.lower().lstrip(".")
    try:
        with Image.open(path) as image:
            image.verify()
    except Exception as error:  # Pillow raises many kinds for a file that is no image
        raise PredictError(f"image {path}: not an image Pillow can read ({error})") from None
    if extension in IMAGE_EXTENSIONS:
        return extension, path.read_bytes()
    with Image.open(path) as image, io.BytesIO() as buffer:
        image.convert("RGB").save(buffer, format="PNG")
        return "png", buffer.getvalue()


def check_vocabulary(tokenizer, questions: Sequence[str]) -> None:
    """Refuse words a word-level tokenizer does not know: they would silently become `<unk>`."""
    unknown = text.out_of_vocabulary(tokenizer, questions)
    if unknown:
        shown = ", ".join(repr(word) for word in unknown[:20]) + (" …" if len(unknown) > 20 else "")
        raise PredictError(f"the model's word-level vocabulary lacks {shown}: rephrase with the words of its "
                           "training data (the tokenizer/ folder of the base model lists them)")


def predict(
    base_dir: Path,
    adapter_dir: Path | None,
    questions: Sequence[Question],
    device: str = "cpu",
    batch_size: int = 16,
    max_new_tokens: int = 8,
) -> list[str]:
    """The model's greedy answer to each question about its image, in order.

    ``adapter_dir``: a round's ``global/`` (or a client's) adapter; None answers with the base model.
    """
    images = [_encoded_image(q.image) for q in questions]  # every file is checked before a model loads
    if not (Path(base_dir) / BASE_SPEC).is_file():
        raise PredictError(f"base {base_dir}: not a base-model directory (no {BASE_SPEC}); "
                           "the workflow writes them to results/models/<model>/base")
    if adapter_dir is not None and not (Path(adapter_dir) / ADAPTER_WEIGHTS).is_file():
        raise PredictError(f"adapter {adapter_dir}: not an adapter directory (no {ADAPTER_WEIGHTS}); "
                           "a round's is results/<experiment>/round_<r>/global")
    base = families.load_base(base_dir)
    check_vocabulary(getattr(base.processor, "tokenizer", base.processor), [q.question for q in questions])
    records = [{"id": f"q{index:06d}", "task": "vqa", "question": q.question} for index, q in enumerate(questions)]
    with tempfile.TemporaryDirectory(prefix="fedumm-predict-") as tmp:
        shard = Path(tmp) / "predict-000000.tar"
        write_encoded_shard(shard, [(record, *image) for record, image in zip(records, images)])
        model_inputs = base.family.inputs(base, [shard], {record["id"] for record in records})
        model = base.model if adapter_dir is None else load_adapter(base.model, adapter_dir, is_trainable=False)
        model.to(device)
        answers = predict_answers(model, model_inputs, records, batch_size, {"vqa": max_new_tokens}, device)
    return [answers[record["id"]] for record in records]
