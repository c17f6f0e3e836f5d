"""Aggregate one round's client uploads into the next global adapter (rule aggregate)."""

import json
from pathlib import Path

from fedumm.federated.server import aggregate_round
from fedumm.reports import tracking
from fedumm.runlog import job_header, log_to

header = job_header(snakemake.rule, snakemake.wildcards, strategy=snakemake.params.job["strategy"]["name"])
with log_to(snakemake.log[0], header) as log:
    params = snakemake.params.job
    client_dirs = {int(Path(m).parent.name): Path(m).parent for m in snakemake.input.metrics}
    summary = aggregate_round(
        experiment=snakemake.wildcards.exp,
        strategy_config=params["strategy"],
        upload_checks=params["uploads"],
        round_index=int(snakemake.wildcards.r),
        previous_global=Path(snakemake.input.previous).parent,
        previous_state=Path(snakemake.input.previous_state),
        client_dirs=client_dirs,
        partition_dir=Path(params["partition"]),
        out_dir=Path(snakemake.output.weights).parent,
        state_out=Path(snakemake.output.state),
        summary_out=Path(snakemake.output.summary),
        excluded=tuple(params["excluded"]),
    )
    log.info("round %s: %s", snakemake.wildcards.r, summary)
    client_metrics = {k: json.loads(Path(m).read_text()) for k, m in zip(client_dirs, snakemake.input.metrics)}
    tracking.track_metrics(snakemake.config.get("tracking"), snakemake.wildcards.exp, int(snakemake.wildcards.r),
                           tracking.round_metrics(summary, client_metrics))
