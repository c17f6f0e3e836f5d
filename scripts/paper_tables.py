"""FedUMM Tables 1 to 4 and the score-vs-bytes curve from every experiment (rule paper_tables)."""

from fedumm.reports import accounting, replicates, summary, tables
from fedumm.runlog import log_to

with log_to(snakemake.log[0]) as log:
    params = snakemake.params
    entries = {
        name: summary.experiment_entry(name, experiment, params.eval_files[name], params.round_files[name])
        for name, experiment in sorted(params.experiments.items())
    }
    runs = [
        tables.run_record(name, params.experiments[name], summary.summary_row(entry))
        for name, entry in entries.items()
    ]
    model_bytes = {}
    for model, base_dir in params.base_models.items():
        size = accounting.read_model_size(base_dir)
        if size is None:
            log.warning("model %s: config not readable here, full fine-tuning size unknown", model)
            model_bytes[model] = None
        else:
            model_bytes[model] = size[0] * size[1]
            log.info("model %s: %d parameters, %d bytes each", model, *size)
    compute = [
        tables.compute_record(
            run,
            tables.read_benchmarks(params.benchmarks[run["name"]]["client_train"]),
            tables.read_benchmarks(params.benchmarks[run["name"]]["aggregate"]),
            tables.read_uploads(params.round_files[run["name"]]),
            model_bytes[params.experiments[run["name"]]["model"]],
        )
        for run in runs
        if run["kind"] == "federated"
    ]
    built = {"table1": tables.table1(runs), "table2": tables.table2(runs), "table3": tables.table3(runs),
             "table4": tables.table4(compute, params.gpus)}
    for name, table in built.items():
        tables.write_table(table, {extension: snakemake.output[f"{name}_{extension}"] for extension in tables.FORMATTERS})
    # Seed replicates are drawn as one curve (or line), their mean with a band of ± one standard deviation.
    groups = {name: run["group"] for name, run in zip(entries, runs)}
    names = replicates.group_names(groups)
    references: dict[str, list[float]] = {}
    for run in runs:
        if run["kind"] != "federated":
            references.setdefault(names[run["name"]], []).append(run["score"])
    summary.plot_accuracy_vs_bytes(
        replicates.replicate_curves(
            {name: summary.cumulative_bytes_curve(e["metrics"], e["bytes_uploaded"]) for name, e in entries.items() if e["kind"] == "federated"},
            groups),
        {label: replicates.estimate(scores) for label, scores in references.items()},
        {names[run["name"]]: run["metric"] for run in runs},
        snakemake.output.bytes_plot,
    )
    log.info("tables of %d experiments (%d federated)", len(runs), len(compute))
