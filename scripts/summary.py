"""One table and one plot comparing every experiment (rule summary)."""

from fedumm.reports import summary
from fedumm.runlog import log_to

with log_to(snakemake.log[0]) as log:
    entries = [
        summary.experiment_entry(name, experiment, snakemake.params.eval_files[name], snakemake.params.round_files[name])
        for name, experiment in sorted(snakemake.params.experiments.items())
    ]
    rows = summary.summary_rows(entries)
    summary.write_summary(rows, snakemake.output.csv, snakemake.output.md)
    baselines = {entry["majority_baseline"] for entry in entries}
    summary.plot_score_vs_round(
        {e["name"]: [(m["round"], m["score"]) for m in e["metrics"]] for e in entries},
        {row["name"]: row["score_metric"] for row in rows},
        snakemake.output.plot,
        baseline=baselines.pop() if len(baselines) == 1 else None,
    )
    log.info("summary of %d experiments", len(rows))
