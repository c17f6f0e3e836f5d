"""Text-to-image evaluation of a unified model (the ``evaluate_generation`` rule): seeded images for
every ``generate`` record of a split, written in GenEval's folder layout and scored by GenEval's rules
(``fedumm.evaluation.geneval``), next to the same model's images for an empty prompt.

GenEval (Ghosh et al., 2023) generates 4 images per prompt and scores each image; a task's score is the
share of correct images. The folder ``{index:05d}/metadata.jsonl`` + ``{index:05d}/samples/{k:05d}.png``
is what GenEval's own generation scripts write and what its ``evaluation/evaluate_images.py`` reads,
so images of a real model can be scored by the official evaluator as well (README, "Generation").
The empty-prompt baseline draws one image per prompt from the unconditional model (every prompt
token masked, as in classifier-free guidance) and scores it against the prompt's metadata: the
score a model gets without reading the prompt.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from PIL import Image
from tqdm import tqdm

from fedumm.data.shards import GENERATE_TASK, read_records
from fedumm.evaluation.evaluate import each_adapter
from fedumm.evaluation.geneval import detect, evaluate_image, score_images
from fedumm.evaluation.scores import mean_scores
from fedumm.io import atomic_dir
from fedumm.models import families
from fedumm.reports.samples import samples_grid_png

PROMPT_METADATA = "metadata.jsonl"
PROMPT_SAMPLES = "samples"
DEFAULT_IMAGES_PER_PROMPT = 4
"""GenEval's images per prompt, unless ``eval.images_per_prompt`` is set."""


def sample_images(model_inputs, model, prompts: list[str], images_per_prompt: int, seed: int, batch_size: int,
                  device) -> list[list[Image.Image]]:
    """``images_per_prompt`` images of every prompt (prompt -> its images), drawn with one generator
    seeded by ``seed``: the k-th image of every prompt comes from the k-th pass over the prompts."""
    generator = torch.Generator().manual_seed(seed)
    images: list[list[Image.Image]] = [[] for _ in prompts]
    for _ in tqdm(range(images_per_prompt), desc="generate images", mininterval=5):
        for start in range(0, len(prompts), batch_size):
            chunk = model_inputs.generate_images(model, prompts[start : start + batch_size], generator, device)
            for offset, image in enumerate(chunk):
                images[start + offset].append(image)
    return images


def write_geneval_folder(out_dir: Path, records: list[dict], images: list[list[Image.Image]]) -> None:
    """GenEval's layout: one folder per prompt with its metadata line and its images (``out_dir`` lies
    inside the rule's atomic output directory)."""
    for index, (record, samples) in enumerate(zip(records, images)):
        folder = out_dir / f"{index:05d}"
        (folder / PROMPT_SAMPLES).mkdir(parents=True)
        (folder / PROMPT_METADATA).write_text(json.dumps(record["geneval"], sort_keys=True) + "\n")
        for k, image in enumerate(samples):
            image.save(folder / PROMPT_SAMPLES / f"{k:05d}.png")


def image_verdicts(records: list[dict], images: list[list[Image.Image]]) -> list[list[bool]]:
    """GenEval's verdict on every image of every record."""
    return [[evaluate_image(detect(image), record["geneval"])[0] for image in samples]
            for record, samples in zip(records, images)]


def geneval_scores(records: list[dict], verdicts: list[list[bool]]) -> dict:
    """``score_images`` over every image of every record (GenEval scores images, not prompts)."""
    return score_images([(record["geneval"], correct) for record, row in zip(records, verdicts) for correct in row])


def evaluate_text_to_image(model_inputs, model, records: list[dict], images_per_prompt: int, seed: int,
                           batch_size: int, device, samples_dir: Path) -> tuple[dict, list[list[Image.Image]], list[list[bool]]]:
    """The ``geneval`` block of eval.json for ``model`` on ``records``, the images behind it (written
    to ``samples_dir`` in GenEval's layout) and their verdicts. The block: the six task scores,
    ``overall``, counts, ``images_per_prompt``, ``seed`` and ``empty_prompt`` (the scores of one
    unconditional image per prompt)."""
    model.eval()
    prompts = [record["prompt"] for record in records]
    images = sample_images(model_inputs, model, prompts, images_per_prompt, seed, batch_size, device)
    write_geneval_folder(samples_dir, records, images)
    verdicts = image_verdicts(records, images)
    unconditional = sample_images(model_inputs, model, [""] * len(prompts), 1, seed, batch_size, device)
    empty = geneval_scores(records, image_verdicts(records, unconditional))
    block = {**geneval_scores(records, verdicts), "images_per_prompt": images_per_prompt, "seed": seed,
             "empty_prompt": {"overall": empty["overall"], "tasks": empty["tasks"]}}
    return block, images, verdicts


def personalized_geneval(records: list[dict], verdicts: dict[str, list[list[bool]]],
                         client_ids: dict[str, list[str]]) -> dict:
    """Each client's text-to-image records of the split scored with its own model's images (the local
    models) or the global model's, and the mean over the clients that have such records; the same
    shape as the personalized block of the other tasks (``fedumm.evaluation.scores.personalized_scores``)."""
    position = {record["id"]: index for index, record in enumerate(records)}
    clients = {}
    for client, ids in client_ids.items():
        own = [position[i] for i in ids if i in position]
        if not own:
            continue
        model = verdicts[client] if client in verdicts else next(iter(verdicts.values()))
        clients[client] = geneval_scores([records[i] for i in own], [model[i] for i in own])
    return {"model": "global" if len(verdicts) == 1 else "local", "clients": clients,
            "mean": mean_scores(list(clients.values())) if clients else None}


def evaluate_generation(*, base_dir: Path, adapters: dict[str, Path], shards: list[Path], eval_config: dict,
                        seed: int, device, samples_dir: Path, title: str,
                        client_ids: dict[str, list[str]]) -> tuple[dict, bytes]:
    """The ``evaluate_generation`` rule: every adapter's ``geneval`` block on the split's text-to-image
    records (several adapters, the local models: their mean, and ``per_client``) with the
    ``personalized`` scores of each client on its own records (``client_ids``: the partition's ids
    of the split by client), each adapter's images under ``samples_dir/{name}``, and the sample
    grid of the first adapter as PNG bytes."""
    records = [record for record in read_records(shards) if record.get("task") == GENERATE_TASK]
    if not records:
        raise ValueError(f"split {eval_config['split']!r} has no text-to-image records to evaluate generation on")
    base = families.load_base(base_dir)
    model_inputs = base.family.inputs(base, shards, {record["id"] for record in records})
    images_per_prompt = eval_config.get("images_per_prompt", DEFAULT_IMAGES_PER_PROMPT)
    blocks, verdicts_by_model, grid = {}, {}, None
    with atomic_dir(samples_dir) as tmp:
        for name, model in each_adapter(base.model, adapters, device):
            blocks[name], images, verdicts = evaluate_text_to_image(
                model_inputs, model, records, images_per_prompt, seed, eval_config["batch_size"], device, tmp / name)
            if grid is None:
                grid = samples_grid_png([record["prompt"] for record in records], [row[0] for row in images],
                                        f"{title}: GenEval-shapes overall {blocks[name]['overall']:.3f} "
                                        f"(empty prompt {blocks[name]['empty_prompt']['overall']:.3f})",
                                        [row[0] for row in verdicts])
            verdicts_by_model[name] = verdicts
    personalized = personalized_geneval(records, verdicts_by_model, client_ids)
    if len(blocks) == 1:
        return {**next(iter(blocks.values())), "personalized": personalized}, grid
    return {**mean_scores(list(blocks.values())), "per_client": blocks, "personalized": personalized}, grid
