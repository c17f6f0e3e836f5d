"""Cache frozen vision-encoder features of one split (rule features)."""

from pathlib import Path

from fedumm import data, model
from fedumm.features import extract_features
from fedumm.runlog import log_to
from fedumm.training import configure_torch

with log_to(snakemake.log[0]) as log:
    device = configure_torch(0, snakemake.threads)
    vlm, _, spec = model.load_base(Path(snakemake.input.base))
    count = extract_features(
        vlm,
        model.image_transform(spec),
        data.split_shards(Path(snakemake.input.data), snakemake.wildcards.split),
        Path(snakemake.output[0]),
        batch_size=snakemake.params.batch_size,
        device=device,
    )
    log.info("cached features of %d samples", count)
