"""Partition an experiment's data over its clients and describe the partition (rule partition)."""

from pathlib import Path

from fedumm.data import shards
from fedumm.io import atomic_write_json
from fedumm.partition import files, heterogeneity, rounds, schemes
from fedumm.runlog import log_to

with log_to(snakemake.log[0]) as log:
    spec = snakemake.params.partition
    seed = snakemake.params.seed
    inputs, outputs = snakemake.input, snakemake.output
    records = {
        split: shards.read_records(shards.split_shards(Path(inputs.data), split)) for split in schemes.SPLITS
    }
    embeddings = None
    if "train_embeddings" in inputs.keys():
        # Imported here: fedumm.partition.embeddings pulls in torch and transformers, which the
        # partitions without an embedder do not need.
        from fedumm.partition.embeddings import load_embeddings

        embeddings = {
            split: load_embeddings(Path(inputs[f"{split}_embeddings"])).rows([r["id"] for r in rs])
            for split, rs in records.items()
        }
    parts = schemes.partition_splits(
        {split: [schemes.label_of(r, spec["label"]) for r in rs] for split, rs in records.items()},
        scheme=spec["scheme"],
        num_clients=snakemake.params.clients,
        seed=seed,
        alpha=spec.get("alpha"),
        min_size=spec["min_size"],
        sizes=spec.get("sizes", "dirichlet"),
        exponent=spec.get("exponent"),
        embeddings=embeddings,
        mode=spec.get("mode", "image"),
        max_cluster_size=spec.get("max_cluster_size"),
        center=spec.get("center", True),
    )
    train_rounds = rounds.one_pass_rounds(parts["train"], spec["one_pass"], seed) if spec.get("one_pass") else None
    if snakemake.params.pooled:
        # The centralized baseline holds exactly the union of the federated clients' data.
        parts = rounds.pool(parts)
        train_rounds = rounds.pool_rounds(train_rounds) if train_rounds else None
    files.write_partition(
        Path(outputs.clients), Path(outputs.counts), Path(outputs.heatmap), records, parts, spec["label"],
        train_rounds=train_rounds,
    )
    summary = files.write_heterogeneity(
        Path(outputs.heterogeneity), Path(outputs.heterogeneity_plot), records["train"], parts["train"], spec["label"]
    )
    sizes = heterogeneity.partition_sizes({split: len(rs) for split, rs in records.items()}, parts)
    atomic_write_json(Path(outputs.sizes), {"scheme": spec["scheme"], "splits": sizes})
    if "projection" in outputs.keys():
        mode = spec["mode"] if spec["scheme"] == "cluster" else "joint"
        files.write_projection(
            Path(outputs.projection), *embeddings["train"], parts["train"], mode,
            f"{snakemake.wildcards.exp}: train samples by client\nPCA of {mode} embeddings ({spec['embedder']})",
            center=spec.get("center", True),
        )
    log.info("train samples per client: %s; unassigned: %s", sizes["train"]["clients"],
             {split: s["unassigned"] for split, s in sizes.items()})
    log.info("mean pairwise JS divergence of %s: %.4f", spec["label"], summary["mean_pairwise_js_divergence"])
