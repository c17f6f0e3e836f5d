"""Per-experiment metrics.csv, lineage.jsonl and resolved config.yaml (rule experiment_tables)."""

from pathlib import Path

from fedumm.reports import identity, lineage, summary, tracking
from fedumm.runlog import log_to

with log_to(snakemake.log[0]) as log:
    evals = {summary.read_eval(path)["round"]: Path(path) for path in snakemake.input.evals}
    rows = summary.eval_rows(snakemake.wildcards.exp, evals)
    summary.write_metrics_csv(rows, snakemake.output.metrics)
    records = lineage.lineage_records(
        [Path(p) for p in snakemake.input.adapters], snakemake.params.config_hash, lineage.code_version()
    )
    lineage.write_lineage(Path(snakemake.output.lineage), records)
    identity.write_resolved_config(snakemake.output.config, snakemake.params.resolved)
    tracking.track_run(snakemake.config.get("tracking"), snakemake.wildcards.exp, snakemake.params.experiment,
                       [snakemake.output.metrics, snakemake.output.config, snakemake.output.lineage])
    log.info("%d evaluated rounds, %d lineage records", len(rows), len(records))
