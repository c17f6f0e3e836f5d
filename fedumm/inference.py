"""Running a model over a split: greedy answers, then the scores of ``fedumm.evaluate``.

Used by the ``evaluate`` rule (global model on the test split, or each local model) and by
clients for their local validation score.
"""

from __future__ import annotations

from pathlib import Path

import torch
from tqdm import tqdm

from fedumm import batches, data, evaluate, model, text


@torch.no_grad()
def predict_answers(
    vlm, tokenizer, records: list[dict], visual: batches.VisualSource, batch_size: int, max_new_tokens: int, device
) -> dict[str, str]:
    """Greedy answers to every record's question, keyed by record id."""
    vlm.eval()
    answers: dict[str, str] = {}
    for start in tqdm(range(0, len(records), batch_size), desc="predict", mininterval=5):
        chunk = records[start : start + batch_size]
        prompts = text.encode_prompts(tokenizer, [record["question"] for record in chunk])
        inputs = {**prompts, **visual.batch([record["id"] for record in chunk])}
        generated = model.unwrap(vlm).generate(
            **{key: value.to(device) for key, value in inputs.items()},
            max_new_tokens=max_new_tokens,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
        answers.update(zip((record["id"] for record in chunk), text.decode_answers(tokenizer, generated)))
    return answers


def score_predictions(predictions: dict[str, str], records: list[dict]) -> dict:
    """VQA accuracy over ``vqa`` records, classification accuracy over ``classify`` records."""
    vqa_records = [record for record in records if record["task"] == "vqa"]
    classify = {record["id"]: record["label"] for record in records if record["task"] == "classify"}
    return {
        "vqa": evaluate.score_vqa(predictions, vqa_records),
        "classification_accuracy": (
            evaluate.classification_accuracy({i: predictions[i] for i in classify}, classify) if classify else None
        ),
        "n": len(records),
    }


def evaluate_records(vlm, tokenizer, records: list[dict], visual, eval_config: dict, device) -> dict:
    predictions = predict_answers(
        vlm, tokenizer, records, visual, eval_config["batch_size"], eval_config["max_new_tokens"], device
    )
    return score_predictions(predictions, records)


def mean_scores(scores: list[dict]) -> dict:
    """Unweighted mean over models of every score (the local baseline: one model per client)."""

    def mean(values: list):
        if isinstance(values[0], dict):
            return {key: mean([value[key] for value in values]) for key in values[0]}
        if any(value is None for value in values):
            return None
        return sum(values) / len(values)

    return {key: mean([score[key] for score in scores]) for key in scores[0]}


def evaluate_adapters(
    *,
    base_dir: Path,
    adapters: dict[str, Path],
    shards: list[Path],
    feature_file: Path | None,
    train_shards: list[Path],
    eval_config: dict,
    device,
) -> dict:
    """Score each adapter on the whole split; with several (local models), report their mean.

    The majority-answer baseline (always answer the most frequent training answer) is
    reported beside the scores, so every table shows how far above chance a model is.
    """
    records = data.read_records(shards)
    base, tokenizer, spec = model.load_base(base_dir)
    visual = batches.VisualSource(
        shards,
        {record["id"] for record in records},
        feature_file=feature_file,
        transform=None if feature_file else model.image_transform(spec),
    )
    per_adapter = {}
    peft_model = None
    for name, adapter_dir in adapters.items():
        # One base model holds every adapter; PEFT switches LoRA and connector copies by name.
        if peft_model is None:
            peft_model = model.load_adapter(base, adapter_dir, is_trainable=False)
            active = peft_model.active_adapter
        else:
            peft_model.load_adapter(str(adapter_dir), adapter_name=name, is_trainable=False)
            active = name
        peft_model.set_adapter(active)
        peft_model.to(device)
        per_adapter[name] = evaluate_records(peft_model, tokenizer, records, visual, eval_config, device)
    vqa_records = [record for record in records if record["task"] == "vqa"]
    baseline = evaluate.majority_baseline(data.read_records(train_shards), vqa_records)
    if len(per_adapter) == 1:
        return {**next(iter(per_adapter.values())), "majority_baseline": baseline}
    return {**mean_scores(list(per_adapter.values())), "per_client": per_adapter, "majority_baseline": baseline}
