"""Normalize a downloaded dataset into webdataset shards + card.json (rule normalize_dataset)."""

import json
from pathlib import Path

from fedumm.data import sources
from fedumm.runlog import log_to

with log_to(snakemake.log[0]) as log:
    card = sources.normalize_dataset(
        snakemake.wildcards.dataset,
        snakemake.params.spec,
        json.loads(Path(snakemake.input.manifest).read_text()),
        Path(snakemake.output[0]),
    )
    log.info("samples per split: %s", card["num_samples"])
