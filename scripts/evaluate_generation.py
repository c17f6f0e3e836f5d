"""Generate and score the text-to-image records of the evaluation split (rule evaluate_generation)."""

from pathlib import Path

from fedumm.data import shards
from fedumm.evaluation.evaluate import read_client_splits
from fedumm.evaluation.text_to_image import evaluate_generation
from fedumm.io import atomic_write_bytes, atomic_write_json
from fedumm.models.training import configure_torch
from fedumm.runlog import job_header, log_to

with log_to(snakemake.log[0], job_header(snakemake.rule, snakemake.wildcards)) as log:
    device = configure_torch(0, snakemake.threads)
    scores, grid = evaluate_generation(
        base_dir=Path(snakemake.input.base),
        adapters={name: Path(d) for name, d in snakemake.params.adapters.items()},
        shards=shards.split_shards(Path(snakemake.input.data), snakemake.params.eval["split"]),
        eval_config=snakemake.params.eval,
        seed=snakemake.params.seed,
        device=device,
        samples_dir=Path(snakemake.output.samples),
        title=f"{snakemake.wildcards.exp}, round {int(snakemake.wildcards.r)}",
        client_ids=read_client_splits(Path(snakemake.input.partition), snakemake.params.eval["split"]),
    )
    atomic_write_bytes(snakemake.output.grid, grid)
    atomic_write_json(snakemake.output.scores, scores)
    log.info("round %s: GenEval-shapes overall %.3f (empty prompt %.3f), %d images",
             snakemake.wildcards.r, scores["overall"], scores["empty_prompt"]["overall"], scores["n"])
