"""Running a model over a split: greedy answers, then the scores of ``fedumm.evaluation.scores``.

Used by the ``evaluate`` rule (global model on the test split, or each local model, and every
client's own test split) and by clients for their local validation score.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from statistics import fmean

import torch
from tqdm import tqdm

from fedumm.artifacts import CLIENT_INDEX
from fedumm.data.shards import read_records
from fedumm.evaluation import captions, scores
from fedumm.models import batches, families
from fedumm.models.adapters import load_adapter, switch_adapter
from fedumm.models.families.base import ModelInputs

DEFAULT_CAPTION_MAX_NEW_TOKENS = 32
"""Generation length of captions unless ``eval.caption_max_new_tokens`` is set."""
DEFAULT_GROUND_MAX_NEW_TOKENS = 24
"""Generation length of boxes ("[x0, y0, x1, y1]" is 9 word-level tokens, about 20 for a BPE
tokenizer that splits digits) unless ``eval.ground_max_new_tokens`` is set."""



def generation_lengths(eval_config: Mapping) -> dict[str, int]:
    """Greedy generation length per task: ``max_new_tokens`` for short answers (vqa, classify),
    ``caption_max_new_tokens`` and ``ground_max_new_tokens`` (optional keys) for the others."""
    short = eval_config["max_new_tokens"]
    return {
        "vqa": short,
        "classify": short,
        "caption": eval_config.get("caption_max_new_tokens", DEFAULT_CAPTION_MAX_NEW_TOKENS),
        "ground": eval_config.get("ground_max_new_tokens", DEFAULT_GROUND_MAX_NEW_TOKENS),
    }


@torch.no_grad()
def predict_answers(
    model,
    model_inputs: ModelInputs,
    records: list[dict],
    batch_size: int,
    max_new_tokens: Mapping[str, int],
    device,
) -> dict[str, str]:
    """Greedy answer of every record to the prompt of its own task, keyed by record id.

    One generation pass per record. Records are batched in their order within groups of equal
    generation length (``max_new_tokens`` by task), so a split of short-answer tasks only is
    batched exactly as a plain sequence of its records.
    """
    model.eval()
    groups: dict[int, list[dict]] = {}
    for record in records:
        groups.setdefault(max_new_tokens[batches.record_task(record)], []).append(record)
    answers: dict[str, str] = {}
    for length, group in groups.items():
        for start in tqdm(range(0, len(group), batch_size), desc=f"predict ({length} tokens)", mininterval=5):
            chunk = group[start : start + batch_size]
            answers.update(zip((record["id"] for record in chunk), model_inputs.generate(model, chunk, length, device)))
    return answers


def ground_sizes(records: list[dict], model_inputs: ModelInputs) -> dict[str, tuple[int, int]]:
    """Image (width, height) of the grounding records, which their scores need."""
    return model_inputs.image_sizes({record["id"] for record in records if batches.record_task(record) == "ground"})


def check_requirements(records: list[dict], eval_config: Mapping) -> None:
    """Fail before any generation when the split's metrics cannot run here: caption metrics
    need Java, and SPICE (``eval.spice``) its own Java version and jars (``fedumm.evaluation.captions``)."""
    if any(batches.record_task(record) == "caption" for record in records):
        captions.require_java()
        if eval_config.get("spice", False):
            captions.require_spice()


def evaluate_records(model, model_inputs: ModelInputs, records: list[dict], eval_config: dict, device) -> dict:
    """`fedumm.evaluation.scores.score_records` of the model's answers on ``records`` (primary score of
    these records)."""
    check_requirements(records, eval_config)
    predictions = predict_answers(
        model, model_inputs, records, eval_config["batch_size"], generation_lengths(eval_config), device
    )
    return scores.score_records(
        predictions, records, ground_sizes(records, model_inputs), spice=eval_config.get("spice", False)
    )


def each_adapter(base_model, adapters: dict[str, Path], device) -> Iterator[tuple[str, object]]:
    """(name, model) with each adapter of ``adapters`` active in turn, on ``device``: one base model
    serves every adapter (`fedumm.models.adapters.switch_adapter`)."""
    model = None
    for name, adapter_dir in adapters.items():
        if model is None:
            model = load_adapter(base_model, adapter_dir, is_trainable=False)
        else:
            switch_adapter(model, name, adapter_dir)
        model.to(device)
        yield name, model


def read_client_splits(partition_dir: Path, split: str) -> dict[str, list[str]]:
    """Each client's sample ids of ``split`` from the partition's ``client_{k:03d}.json`` files,
    keyed ``client_{k}`` (the names of the local models), in client order."""
    indexed = sorted(
        (int(match.group(1)), path)
        for path in Path(partition_dir).iterdir()
        if (match := CLIENT_INDEX.match(path.name))
    )
    if not indexed:
        raise FileNotFoundError(f"{partition_dir}: no client_*.json partition index files")
    splits = {}
    for k, path in indexed:
        index = json.loads(path.read_text())
        if split not in index:
            raise KeyError(f"{path}: no {split!r} split (has: {', '.join(sorted(index))})")
        splits[f"client_{k}"] = index[split]
    return splits


def evaluate_adapters(
    *,
    base_dir: Path,
    adapters: dict[str, Path],
    shards: list[Path],
    feature_file: Path | None,
    train_shards: list[Path],
    partition_dir: Path,
    eval_config: dict,
    device,
    selection: tuple[list[Path], Path | None] | None = None,
) -> dict:
    """Score each adapter on the whole split and every client on its own part of it.

    With one adapter (the global model), its scores are the top level; with several (the local
    models ``client_{k}``), the top level is their mean and ``per_client`` holds each. The
    ``personalized`` block (`fedumm.evaluation.scores.personalized_scores`) scores each client of the
    partition on its own ids of ``eval_config["split"]``, with the global model or its own local
    model: these ids are a subset of the split, so the answers already generated are reused and
    every record is generated once per model. The split's primary metric (``score_metric``) is
    also used for every client. The majority-answer baseline
    (`fedumm.evaluation.scores.majority_baseline_for`) is reported beside the scores, so every table
    shows how far above chance a model is.

    ``selection`` (the shards and feature file of ``eval_config["select_split"]``) also scores the
    same models on that split: the ``selection`` block (split, score_metric, score; the mean over
    local models) by which reports choose a round without looking at the reported split.
    """
    records = batches.understanding_records(read_records(shards))
    check_requirements(records, eval_config)
    evaluated = {record["id"] for record in records}
    # A client's text-to-image records are scored by the evaluate_generation rule, not here.
    client_ids = {client: [i for i in ids if i in evaluated]
                  for client, ids in read_client_splits(partition_dir, eval_config["split"]).items()}
    metric = scores.primary_metric(records)
    spice = eval_config.get("spice", False)
    base = families.load_base(base_dir)
    model_inputs = base.family.inputs(base, shards, {record["id"] for record in records}, feature_file=feature_file)
    sizes = ground_sizes(records, model_inputs)
    lengths = generation_lengths(eval_config)
    if selection is not None:
        selection_records = batches.understanding_records(read_records(selection[0]))
        selection_inputs = base.family.inputs(base, selection[0], {record["id"] for record in selection_records},
                                              feature_file=selection[1])
        selection_metric = scores.primary_metric(selection_records)
    predictions, selection_scores = {}, []
    for name, peft_model in each_adapter(base.model, adapters, device):
        predictions[name] = predict_answers(peft_model, model_inputs, records, eval_config["batch_size"], lengths, device)
        if selection is not None:
            answers = predict_answers(peft_model, selection_inputs, selection_records, eval_config["batch_size"],
                                      lengths, device)
            selection_scores.append(scores.score_records(
                answers, selection_records, ground_sizes(selection_records, selection_inputs), spice, selection_metric
            )["score"])
    per_adapter = {
        name: scores.score_records(answers, records, sizes, spice, metric) for name, answers in predictions.items()
    }
    if len(per_adapter) == 1:
        result = next(iter(per_adapter.values()))
    else:
        result = {**scores.mean_scores(list(per_adapter.values())), "per_client": per_adapter}
    personalized = scores.personalized_scores(predictions, records, client_ids, sizes, spice, metric)
    train_records = read_records(train_shards)
    baseline = scores.majority_baseline_for(metric, train_records, records)
    return {
        **result,
        "personalized": {"split": eval_config["split"], **personalized},
        "majority_baseline": baseline,
        "chance": scores.chance_by_question_type(train_records, records),
        "selection": None if selection is None else {
            "split": eval_config["select_split"], "score_metric": selection_metric, "score": fmean(selection_scores),
        },
    }
