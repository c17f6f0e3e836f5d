"""One table and one plot comparing every experiment (rule summary)."""

from fedumm.reports import replicates, summary
from fedumm.runlog import log_to

with log_to(snakemake.log[0]) as log:
    entries = [
        summary.experiment_entry(name, experiment, snakemake.params.eval_files[name], snakemake.params.round_files[name])
        for name, experiment in sorted(snakemake.params.experiments.items())
    ]
    rows = summary.summary_rows(entries)
    summary.write_summary(rows, snakemake.output.csv, snakemake.output.md)
    baselines = {entry["majority_baseline"] for entry in entries}
    # Seed replicates are drawn as one curve, their mean with a band of ± one standard deviation.
    groups = {name: replicates.seed_group(experiment) for name, experiment in snakemake.params.experiments.items()}
    names = replicates.group_names(groups)
    summary.plot_score_vs_round(
        replicates.replicate_curves({e["name"]: [(m["round"], m["score"]) for m in e["metrics"]] for e in entries}, groups),
        {names[row["name"]]: row["score_metric"] for row in rows},
        snakemake.output.plot,
        baseline=baselines.pop() if len(baselines) == 1 else None,
    )
    log.info("summary of %d experiments", len(rows))
