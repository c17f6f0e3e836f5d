"""One client's local training for one round (the ``client_train`` rule).

Config in, files out: load the base model and the round's starting adapter, train the
groups of this round on the client's own partition (with the client half of the experiment's
strategy, ``fedumm.federated.strategies``), score the local validation split, and write the
adapter (a PEFT directory), ``client_state.safetensors`` and ``metrics.json``.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from safetensors.torch import save

from fedumm.artifacts import (
    ADAPTER_WEIGHTS,
    CLIENT_STATE,
    LOCAL,
    METRICS,
    UPLOAD_BINDING,
    client_state_part,
    client_state_tensors,
    file_sha256,
    read_weights,
    write_metrics,
    write_weights,
)
from fedumm.data.shards import read_records
from fedumm.evaluation import evaluate
from fedumm.federated import attacks, strategies
from fedumm.federated.modalities import tensor_modality
from fedumm.federated.strategies.base import ClientContext
from fedumm.models import adapters, batches, families
from fedumm.models.groups import GROUP_MODALITY, parameter_group
from fedumm.models.training import OptimConfig, configure_torch, learning_rates, train
from fedumm.partition import rounds


@dataclass(frozen=True)
class LocalTraining:
    """The experiment's ``train:`` block: the optimizer, and how many batches of what size."""

    optim: OptimConfig
    batch_size: int
    local_epochs: float
    local_steps: int | None = None

    @classmethod
    def from_config(cls, train_config: dict) -> LocalTraining:
        optim_keys = {f.name for f in dataclasses.fields(OptimConfig)}
        return cls(
            optim=OptimConfig(**{key: value for key, value in train_config.items() if key in optim_keys}),
            batch_size=train_config["batch_size"],
            local_epochs=train_config["local_epochs"],
            local_steps=train_config["local_steps"],
        )


@dataclass(frozen=True)
class ClientInputs:
    """The files a client job reads. ``shards`` and ``feature_files`` map the splits train and val to
    the dataset's shards and, with a frozen vision encoder, to the cached features; ``server_state``
    (round r − 1) and ``previous_client_dir`` (this client's directory of the last round it took part
    in) are given when the strategy's client half needs them."""

    base_dir: Path
    start_adapter: Path
    index_file: Path
    shards: dict[str, list[Path]]
    feature_files: dict[str, Path] | None = None
    server_state: Path | None = None
    previous_client_dir: Path | None = None


@dataclass(frozen=True)
class ClientJob:
    """What one client does in one round: which groups it trains, how, and with which strategy.
    ``experiment``, ``client`` and ``round_index`` bind its upload (``fedumm.artifacts.UPLOAD_BINDING``);
    ``attack`` makes it a simulated byzantine client (``fedumm.federated.attacks``, with the seeds
    ``seed`` and ``round_seed`` the workflow adds)."""

    experiment: str
    client: int
    round_index: int
    seed: int
    groups: list[str]
    training: LocalTraining
    eval_config: dict
    strategy: dict = field(default_factory=lambda: {"name": "fedavg"})
    threads: int = 1
    attack: dict | None = None


def client_records(shard_paths: list[Path], ids: list[str]) -> list[dict]:
    """The records of ``shard_paths`` whose id is in the client's index, in index order."""
    by_id = {record["id"]: record for record in read_records(shard_paths)}
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


def group_upload_sizes(state: dict, trained: set[str]) -> dict[str, int]:
    """Bytes of the trained tensors of each parameter group (vision, connector, language), each group
    serialized on its own: what a deployment that sends groups separately would upload."""
    by_group: dict[str, dict] = {}
    for key in sorted(trained):
        by_group.setdefault(parameter_group(key), {})[key] = state[key].contiguous()
    return {group: len(save(tensors)) for group, tensors in by_group.items()}


def trained_groups_with_data(groups: list[str], counts: dict[str, int]) -> list[str]:
    """The round's groups whose modality this client has training records of: a client without
    text-to-image records leaves the generation adapter as it received it (and uploads none of it)."""
    with_data = [group for group in groups if counts[GROUP_MODALITY[group]] > 0]
    if not with_data:
        raise ValueError(f"the client has no training records for the groups of this round ({', '.join(groups)}); "
                         f"its records by modality: {counts}")
    return with_data


def counts_toward(modality: str, groups: list[str]) -> bool:
    """Whether records of ``modality`` train one of ``groups``."""
    return any(GROUP_MODALITY[group] == modality for group in groups)


def modality_parameters(trained: dict, groups: list[str]) -> dict[str, set[int]] | None:
    """Ids of each modality's trained parameters, so that a batch trains only its modality's adapter
    (``fedumm.models.training.train``); None when the client trains understanding groups only."""
    if "generation" not in groups:
        return None
    by_modality: dict[str, set[int]] = {"understanding": set(), "generation": set()}
    for name, param in trained.items():
        by_modality[tensor_modality(name)].add(id(param))
    return by_modality


def read_client_context(inputs: ClientInputs, rates: list[float], seed: int, train_batches) -> ClientContext:
    """What a client half may read: the start adapter, and the files its strategy asked for."""
    previous = inputs.previous_client_dir
    return ClientContext(
        global_weights=read_weights(inputs.start_adapter / ADAPTER_WEIGHTS),
        learning_rates=rates,
        seed=seed,
        server_state=read_weights(inputs.server_state) if inputs.server_state else {},
        previous_state=client_state_part(read_weights(previous / CLIENT_STATE), LOCAL) if previous else None,
        previous_weights=read_weights(previous / ADAPTER_WEIGHTS) if previous else None,
        train_batches=train_batches,
    )


def train_client(inputs: ClientInputs, job: ClientJob, out_dir: Path) -> dict:
    """Train one client for round ``job.round_index``; return (and write) its metrics.

    The client trains on its partition's train ids of that round (all of them, or the round's
    part of a one-pass partition: ``fedumm.partition.rounds.round_train_ids``).
    """
    started = time.perf_counter()
    device = configure_torch(job.seed, job.threads)
    base = families.load_base(inputs.base_dir)

    index = json.loads(inputs.index_file.read_text())
    ids_by_split = {"train": rounds.round_train_ids(index, job.round_index), "val": index["val"]}
    model_inputs = {}
    records_by_split = {}
    for split, ids in ids_by_split.items():
        records_by_split[split] = client_records(inputs.shards[split], ids)
        feature_file = inputs.feature_files[split] if inputs.feature_files else None
        model_inputs[split] = base.family.inputs(base, inputs.shards[split], set(ids), feature_file=feature_file)

    training = job.training
    counts = batches.modality_counts(records_by_split["train"])
    groups = trained_groups_with_data(job.groups, counts)
    train_records = [record for record in records_by_split["train"]
                     if counts_toward(batches.record_modality(record), groups)]
    if job.attack and job.attack["kind"] in attacks.DATA_ATTACKS:
        train_records = attacks.flipped_labels(train_records, job.attack["seed"])
    train_inputs = model_inputs["train"]
    examples = train_inputs.examples(train_records)
    modalities = [batches.example_modality(example) for example in examples]
    steps = batches.steps_for(len(examples), training.batch_size, training.local_epochs, training.local_steps)
    stream = (
        train_inputs.collate([examples[i] for i in indices])
        for indices in batches.modality_batches(modalities, training.batch_size, steps, job.seed)
    )

    def train_batches():
        """The training examples once, in order, for client halves that measure the trained model."""
        for i in range(0, len(examples), training.batch_size):
            yield train_inputs.collate(examples[i : i + training.batch_size])

    context = read_client_context(inputs, learning_rates(training.optim, steps), job.seed, train_batches)
    algorithm = strategies.build(job.strategy).client_algorithm(context)
    peft_model = algorithm.load_model(base.model, inputs.start_adapter)
    adapters.trainable_groups(peft_model, set(groups))
    peft_model.to(device)
    algorithm.prepare(peft_model)
    trained_parameters = {name: param for name, param in adapters.adapter_parameters(peft_model).items()
                          if param.requires_grad}
    trained = set(trained_parameters)
    losses = train(peft_model, stream, steps, training.optim, device, description=f"client {out_dir.name}",
                   hooks=[algorithm], modality_parameters=modality_parameters(trained_parameters, groups))
    client_state = algorithm.finish(peft_model)

    val_records = batches.understanding_records(records_by_split["val"])
    val_scores = evaluate.evaluate_records(
        peft_model, model_inputs["val"], val_records, job.eval_config, device
    ) if val_records else None

    peft_model.cpu()
    adapters.save_adapter(peft_model, out_dir)
    if job.attack and job.attack["kind"] in attacks.UPDATE_ATTACKS:
        weights_file = out_dir / ADAPTER_WEIGHTS
        write_weights(weights_file, attacks.attacked_update(
            context.global_weights, read_weights(weights_file), job.attack, job.attack["seed"], job.attack["round_seed"]))
    adapter_state = adapters.adapter_state(peft_model)
    write_weights(out_dir / CLIENT_STATE, client_state_tensors(client_state.local, client_state.upload))
    metrics = {
        "num_samples": len(train_records),
        "num_samples_by_modality": batches.modality_counts(train_records),
        "steps": steps,
        "train_loss": sum(losses) / len(losses),
        "train_loss_last": losses[-1],
        "val_vqa_accuracy": val_scores["vqa"]["accuracy"] if val_scores and val_scores["vqa"] else None,
        # The primary score of the validation split (fedumm.evaluation.scores.primary_metric), for non-VQA data.
        "val_score": val_scores["score"] if val_scores else None,
        "val_samples": len(val_records),
        "trained_groups": groups,
        "bytes_uploaded": upload_size(adapter_state, trained, client_state.upload),
        "bytes_uploaded_by_group": group_upload_sizes(adapter_state, trained),
        "seconds": time.perf_counter() - started,
        **client_state.metrics,
        **({"attack": job.attack["kind"]} if job.attack else {}),
        UPLOAD_BINDING: {
            "experiment": job.experiment,
            "round": job.round_index,
            "client": job.client,
            "start_sha256": file_sha256(inputs.start_adapter / ADAPTER_WEIGHTS),
            "weights_sha256": file_sha256(out_dir / ADAPTER_WEIGHTS),
        },
    }
    write_metrics(out_dir / METRICS, metrics)
    return metrics
