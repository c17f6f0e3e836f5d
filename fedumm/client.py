"""One client's local training for one round (the ``client_train`` rule).

Config in, files out: load the base model and the round's starting adapter, train the
groups of this round on the client's own partition (with the client part of the experiment's
strategy, ``fedumm.client_algorithms``), score the local validation split, and write the
adapter (a PEFT directory), ``client_state.safetensors`` and ``metrics.json``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from safetensors.torch import save

from fedumm import batches, data, inference, model, partition, strategies
from fedumm.alignment import mean_alignment_error
from fedumm.client_algorithms import ClientContext, for_strategy
from fedumm.io import atomic_write_json
from fedumm.server import (
    ADAPTER_WEIGHTS,
    CLIENT_STATE,
    LOCAL,
    client_state_part,
    client_state_tensors,
    read_weights,
    write_weights,
)
from fedumm.training import OptimConfig, configure_torch, learning_rates, train


def client_records(shards: list[Path], ids: list[str]) -> list[dict]:
    """The records of ``shards`` whose id is in the client's index, in index order."""
    by_id = {record["id"]: record for record in data.read_records(shards)}
    missing = [i for i in ids if i not in by_id]
    if missing:
        raise KeyError(f"partition index names {len(missing)} unknown sample(s), e.g. {missing[0]}")
    return [by_id[i] for i in ids]


def upload_size(state: dict, trained: set[str], extra: dict) -> int:
    """Bytes a client must send: the safetensors serialization of the tensors it trained, plus
    that of what its client algorithm uploads besides (``extra``, e.g. SCAFFOLD's Δc_k).

    Tensors frozen this round (e.g. LoRA during a connector-only round, FFA-LoRA's A) equal
    the global adapter, so a deployment would not send them; the adapter file holds all of them.
    """
    size = len(save({k: v.contiguous() for k, v in state.items() if k in trained}))
    return size + (len(save({k: v.contiguous() for k, v in extra.items()})) if extra else 0)


def read_client_context(
    start_adapter: Path,
    rates: list[float],
    seed: int,
    server_state: Path | None,
    previous_client_dir: Path | None,
) -> ClientContext:
    """What a client algorithm may read: the start adapter, and the files its strategy asked for."""
    return ClientContext(
        global_weights=read_weights(start_adapter / ADAPTER_WEIGHTS),
        learning_rates=rates,
        seed=seed,
        server_state=read_weights(server_state) if server_state else {},
        previous_state=client_state_part(read_weights(previous_client_dir / CLIENT_STATE), LOCAL)
        if previous_client_dir else None,
        previous_weights=read_weights(previous_client_dir / ADAPTER_WEIGHTS) if previous_client_dir else None,
    )


def train_client(
    *,
    base_dir: Path,
    start_adapter: Path,
    index_file: Path,
    round_index: int,
    shards: dict[str, list[Path]],
    feature_files: dict[str, Path] | None,
    train_config: dict,
    groups: list[str],
    seed: int,
    threads: int,
    out_dir: Path,
    eval_config: dict,
    strategy: dict | None = None,
    server_state: Path | None = None,
    previous_client_dir: Path | None = None,
) -> dict:
    """Train one client for round ``round_index``; return (and write) its metrics.

    The client trains on its partition's train ids of that round (all of them, or the round's
    part of a one-pass partition: ``fedumm.partition.round_train_ids``).

    ``shards`` and ``feature_files`` map split names (train, val) to the dataset's shards and,
    with a frozen vision encoder, to the cached features. ``strategy`` (the experiment's
    strategy config; default FedAvg) supplies the client algorithm; ``server_state`` (round
    r − 1) and ``previous_client_dir`` (this client's directory of the last round it took part
    in) are given when the strategy declares that its clients need them.
    """
    started = time.perf_counter()
    device = configure_torch(seed, threads)
    base, tokenizer, spec = model.load_base(base_dir)

    index = json.loads(index_file.read_text())
    ids_by_split = {"train": partition.round_train_ids(index, round_index), "val": index["val"]}
    visual_by_split = {}
    records_by_split = {}
    for split, ids in ids_by_split.items():
        records_by_split[split] = client_records(shards[split], ids)
        visual_by_split[split] = batches.VisualSource(
            shards[split],
            set(ids),
            feature_file=feature_files[split] if feature_files else None,
            transform=None if feature_files else model.image_transform(spec),
        )

    train_records = records_by_split["train"]
    examples = batches.build_examples(train_records, tokenizer)
    steps = batches.steps_for(
        len(examples), train_config["batch_size"], train_config["local_epochs"], train_config["local_steps"]
    )
    stream = (
        batches.collate([examples[i] for i in indices], visual_by_split["train"], tokenizer.pad_token_id)
        for indices in batches.shuffled_batches(len(examples), train_config["batch_size"], steps, seed)
    )
    optim = OptimConfig(
        lr=train_config["lr"],
        weight_decay=train_config["weight_decay"],
        warmup_ratio=train_config["warmup_ratio"],
        grad_clip=train_config["grad_clip"],
        prox_mu=train_config["prox_mu"],
    )
    context = read_client_context(start_adapter, learning_rates(optim, steps), seed, server_state, previous_client_dir)
    algorithm = for_strategy(strategies.build(strategy or {"name": "fedavg"}), context)
    peft_model = algorithm.load_model(base, start_adapter)
    model.trainable_groups(peft_model, set(groups))
    peft_model.to(device)
    algorithm.prepare(peft_model)
    trained = {name for name, param in model.adapter_parameters(peft_model).items() if param.requires_grad}
    losses = train(peft_model, stream, steps, optim, device, description=f"client {out_dir.name}", hooks=[algorithm])
    client_state = algorithm.finish(peft_model)
    # Fed-CMP weights clients by how well their projected visual tokens match their text embeddings.
    batch_size = train_config["batch_size"]
    alignment = mean_alignment_error(
        peft_model,
        (
            batches.collate(examples[i : i + batch_size], visual_by_split["train"], tokenizer.pad_token_id)
            for i in range(0, len(examples), batch_size)
        ),
    )

    val_scores = inference.evaluate_records(
        peft_model, tokenizer, records_by_split["val"], visual_by_split["val"], eval_config, device
    ) if records_by_split["val"] else None

    peft_model.cpu()
    model.save_adapter(peft_model, out_dir)
    write_weights(out_dir / CLIENT_STATE, client_state_tensors(client_state.local, client_state.upload))
    metrics = {
        "num_samples": len(train_records),
        "steps": steps,
        "train_loss": sum(losses) / len(losses),
        "train_loss_last": losses[-1],
        "val_vqa_accuracy": val_scores["vqa"]["accuracy"] if val_scores and val_scores["vqa"] else None,
        # The primary score of the validation split (fedumm.evaluate.primary_metric), for non-VQA data.
        "val_score": val_scores["score"] if val_scores else None,
        "val_samples": len(records_by_split["val"]),
        "alignment_error": alignment,
        "trained_groups": groups,
        "bytes_uploaded": upload_size(model.adapter_state(peft_model), trained, client_state.upload),
        "seconds": time.perf_counter() - started,
    }
    atomic_write_json(out_dir / "metrics.json", metrics)
    return metrics
