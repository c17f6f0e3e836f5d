"""Generate the built-in shapes dataset (rule shapes_data)."""

from pathlib import Path

from fedumm.data import shapes
from fedumm.runlog import log_to

with log_to(snakemake.log[0]) as log:
    spec = snakemake.params.spec
    card = shapes.generate_shapes(
        Path(snakemake.output[0]),
        splits=spec["splits"],
        seed=spec["seed"],
        image_size=spec["image_size"],
        shard_size=spec["shard_size"],
        classify_fraction=spec["classify_fraction"],
        generate_fraction=spec.get("generate_fraction", 0.0),
    )
    log.info("samples per split: %s", card["num_samples"])
