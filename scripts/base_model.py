"""Build and pretrain the base model (rule base_model)."""

from pathlib import Path

from fedumm.data import shards
from fedumm.models.families import family_of
from fedumm.runlog import log_to

with log_to(snakemake.log[0]) as log:
    spec = snakemake.params.spec
    public = (
        shards.split_shards(Path(snakemake.input.public), spec["pretrain"].get("split", "public"))
        if snakemake.input.public
        else []
    )
    summary = family_of(spec).build_base(spec, public, Path(snakemake.output[0]), threads=snakemake.threads)
    log.info("base model: %s", summary)
