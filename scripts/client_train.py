"""Train one client for one round (rule client_train)."""

from pathlib import Path

from fedumm.artifacts import client_index_name
from fedumm.data.shards import split_shards
from fedumm.federated.client import ClientInputs, ClientJob, LocalTraining, train_client
from fedumm.runlog import log_to

with log_to(snakemake.log[0]) as log:
    inputs = snakemake.input
    k = int(snakemake.wildcards.k)
    client_inputs = ClientInputs(
        base_dir=Path(inputs.base),
        start_adapter=Path(inputs.start_weights).parent,
        index_file=Path(inputs.partition) / client_index_name(k),
        shards={split: split_shards(Path(inputs.data), split) for split in ("train", "val")},
        feature_files=(
            {split: Path(inputs[f"{split}_features"]) for split in ("train", "val")}
            if "train_features" in inputs.keys()
            else None
        ),
        server_state=Path(inputs.server_state) if "server_state" in inputs.keys() else None,
        previous_client_dir=(
            Path(inputs.previous_client_state).parent if "previous_client_state" in inputs.keys() else None
        ),
    )
    params = snakemake.params.job
    job = ClientJob(
        round_index=int(snakemake.wildcards.r),
        seed=params["seed"],
        groups=params["groups"],
        training=LocalTraining.from_config(params["train"]),
        eval_config=params["eval"],
        strategy=params["strategy"],
        threads=snakemake.threads,
    )
    metrics = train_client(client_inputs, job, Path(snakemake.output.metrics).parent)
    log.info("client %d: %s", k, metrics)
