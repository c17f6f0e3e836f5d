"""Train one client for one round (rule client_train)."""

from pathlib import Path

from fedumm import data
from fedumm.client import train_client
from fedumm.runlog import log_to

with log_to(snakemake.log[0]) as log:
    inputs = snakemake.input
    k = int(snakemake.wildcards.k)
    metrics = train_client(
        base_dir=Path(inputs.base),
        start_adapter=Path(inputs.start_weights).parent,
        index_file=Path(inputs.partition) / f"client_{k:03d}.json",
        round_index=int(snakemake.wildcards.r),
        shards={split: data.split_shards(Path(inputs.data), split) for split in ("train", "val")},
        feature_files=(
            {split: Path(inputs[f"{split}_features"]) for split in ("train", "val")}
            if "train_features" in inputs.keys()
            else None
        ),
        train_config=snakemake.params.train,
        groups=snakemake.params.groups,
        seed=snakemake.params.seed,
        threads=snakemake.threads,
        out_dir=Path(snakemake.output.metrics).parent,
        eval_config=snakemake.params.eval,
        strategy=snakemake.params.strategy,
        server_state=Path(inputs.server_state) if "server_state" in inputs.keys() else None,
        previous_client_dir=(
            Path(inputs.previous_client_state).parent if "previous_client_state" in inputs.keys() else None
        ),
    )
    log.info("client %d: %s", k, metrics)
