"""Embed the images and texts of one split with a CLIP or SigLIP embedder (rule embeddings)."""

import json
from pathlib import Path

from fedumm.data import shards
from fedumm.models.training import configure_torch
from fedumm.partition.embeddings import embed_split
from fedumm.runlog import log_to

with log_to(snakemake.log[0]) as log:
    spec = snakemake.params.spec
    device = configure_torch(spec.get("seed", 0), snakemake.threads)
    dataset = Path(snakemake.input.data)
    split = snakemake.wildcards.split
    total = json.loads((dataset / "card.json").read_text())["num_samples"][split]
    count = embed_split(spec, shards.split_shards(dataset, split), Path(snakemake.output[0]), device, total=total)
    log.info("embedded %d samples of %s/%s with %s on %s", count, snakemake.wildcards.dataset, split,
             snakemake.wildcards.embedder, device)
