"""Cache frozen vision-encoder features of one split (rule features)."""

from pathlib import Path

from fedumm.data import shards
from fedumm.models import images, vlm
from fedumm.models.features import extract_features
from fedumm.models.training import configure_torch
from fedumm.runlog import log_to

with log_to(snakemake.log[0]) as log:
    device = configure_torch(0, snakemake.threads)
    model, _, spec = vlm.load_base(Path(snakemake.input.base))
    count = extract_features(
        model,
        images.image_transform(spec),
        shards.split_shards(Path(snakemake.input.data), snakemake.wildcards.split),
        Path(snakemake.output[0]),
        batch_size=snakemake.params.batch_size,
        device=device,
    )
    log.info("cached features of %d samples", count)
