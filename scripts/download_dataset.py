"""Fetch a real dataset's sources into its download cache (rule download_dataset)."""

from pathlib import Path

from fedumm.data import sources
from fedumm.io import atomic_write_json
from fedumm.runlog import log_to

with log_to(snakemake.log[0]) as log:
    manifest_file = Path(snakemake.output.manifest)
    manifest = sources.download_dataset(snakemake.wildcards.dataset, snakemake.params.spec, manifest_file.parent)
    atomic_write_json(manifest_file, manifest)
    log.info("wrote %s", manifest_file)
