"""Mix normalized datasets into one (rule mixture_dataset)."""

from pathlib import Path

from fedumm.data.sources import mixture
from fedumm.runlog import log_to

with log_to(snakemake.log[0]) as log:
    spec = snakemake.params.spec
    card = mixture.write_mixture(
        snakemake.wildcards.dataset,
        spec,
        dict(zip(spec["parts"], (Path(p) for p in snakemake.input.parts))),
        Path(snakemake.output[0]),
    )
    log.info("samples per split and part: %s", card["samples_per_part"])
