"""Partition an experiment's data over its clients (rule partition)."""

from pathlib import Path

from fedumm import data, partition
from fedumm.runlog import log_to

with log_to(snakemake.log[0]) as log:
    spec = snakemake.params.partition
    records = {
        split: data.read_records(data.split_shards(Path(snakemake.input.data), split))
        for split in ("train", "val", "test")
    }
    parts = partition.partition_splits(
        {split: [partition.label_of(r, spec["label"]) for r in rs] for split, rs in records.items()},
        scheme=spec["scheme"],
        num_clients=snakemake.params.clients,
        seed=snakemake.params.seed,
        alpha=spec.get("alpha"),
        min_size=spec["min_size"],
    )
    partition.write_partition(
        Path(snakemake.output.clients),
        Path(snakemake.output.counts),
        Path(snakemake.output.heatmap),
        records,
        parts,
        spec["label"],
    )
    log.info("train samples per client: %s", [len(p) for p in parts["train"]])
