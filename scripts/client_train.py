"""Train one client for one round (rule client_train)."""

from pathlib import Path

from fedumm.artifacts import client_index_name
from fedumm.data.shards import split_shards
from fedumm.federated.client import ClientInputs, ClientJob, LocalTraining, train_client
from fedumm.runlog import job_header, log_to

header = job_header(snakemake.rule, snakemake.wildcards, strategy=snakemake.params.job["strategy"]["name"])
with log_to(snakemake.log[0], header) as log:
    inputs, params = snakemake.input, snakemake.params.job
    # Base model, partition, dataset and features: declared as inputs by round 1's clients only
    # (later rounds depend on them through the start adapter; workflow/rules/common.smk).
    files = params["files"]
    k = int(snakemake.wildcards.k)
    client_inputs = ClientInputs(
        base_dir=Path(files["base"]),
        start_adapter=Path(inputs.start_weights).parent,
        index_file=Path(files["partition"]) / client_index_name(k),
        shards={split: split_shards(Path(files["data"]), split) for split in ("train", "val")},
        feature_files=(
            {split: Path(files[f"{split}_features"]) for split in ("train", "val")}
            if "train_features" in files
            else None
        ),
        server_state=Path(inputs.server_state) if "server_state" in inputs.keys() else None,
        previous_client_dir=(
            Path(inputs.previous_client_state).parent if "previous_client_state" in inputs.keys() else None
        ),
    )
    job = ClientJob(
        experiment=snakemake.wildcards.exp,
        client=k,
        round_index=int(snakemake.wildcards.r),
        seed=params["seed"],
        groups=params["groups"],
        training=LocalTraining.from_config(params["train"]),
        eval_config=params["eval"],
        strategy=params["strategy"],
        threads=snakemake.threads,
        attack=params.get("attack"),
    )
    metrics = train_client(client_inputs, job, Path(snakemake.output.metrics).parent)
    log.info("client %d: %s", k, metrics)
