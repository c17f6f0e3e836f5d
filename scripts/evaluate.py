"""Evaluate the model(s) of one round (rule evaluate)."""

import json
from pathlib import Path

from fedumm.data import shards
from fedumm.evaluation.evaluate import evaluate_adapters
from fedumm.io import atomic_write_json
from fedumm.models.training import configure_torch
from fedumm.reports import tracking
from fedumm.runlog import job_header, log_to

with log_to(snakemake.log[0], job_header(snakemake.rule, snakemake.wildcards)) as log:
    device = configure_torch(0, snakemake.threads)
    select_split = snakemake.params.eval.get("select_split")
    scores = evaluate_adapters(
        base_dir=Path(snakemake.input.base),
        adapters={name: Path(d) for name, d in snakemake.params.adapters.items()},
        shards=shards.split_shards(Path(snakemake.input.data), snakemake.params.eval["split"]),
        feature_file=Path(snakemake.input.features) if "features" in snakemake.input.keys() else None,
        train_shards=shards.split_shards(Path(snakemake.input.data), "train"),
        partition_dir=Path(snakemake.input.partition),
        eval_config=snakemake.params.eval,
        device=device,
        selection=None if select_split is None else (
            shards.split_shards(Path(snakemake.input.data), select_split),
            Path(snakemake.input.select_features) if "select_features" in snakemake.input.keys() else None,
        ),
    )
    if "geneval" in snakemake.input.keys():
        scores["geneval"] = json.loads(Path(snakemake.input.geneval).read_text())
    atomic_write_json(snakemake.output[0], {"round": int(snakemake.wildcards.r), **scores})
    tracking.track_metrics(snakemake.config.get("tracking"), snakemake.wildcards.exp, int(snakemake.wildcards.r),
                           tracking.eval_metrics(scores))
    log.info(
        "round %s: %s %s (mean over clients on their own split: %s; on the selection split: %s)",
        snakemake.wildcards.r,
        scores["score_metric"],
        scores["score"],
        scores["personalized"]["mean"]["score"],
        (scores["selection"] or {}).get("score"),
    )
