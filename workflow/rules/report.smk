# Per-experiment tables and lineage, and the cross-experiment summary.


rule experiment_tables:
    input:
        evals=lambda wildcards: experiment_eval_files(wildcards.exp),
        rounds=lambda wildcards: round_summaries(wildcards.exp),
        adapters=lambda wildcards: global_adapters(wildcards.exp),
    output:
        metrics=report(
            "results/{exp}/metrics.csv",
            caption="../report/metrics.rst",
            category="Experiments",
            subcategory="{exp}",
        ),
        lineage="results/{exp}/lineage.jsonl",
        config=f"results/{{exp}}/{artifacts.RESOLVED_CONFIG}",
    log:
        "logs/experiment_tables/{exp}.log",
    benchmark:
        "benchmarks/experiment_tables/{exp}.tsv"
    params:
        experiment=lambda wildcards: EXPERIMENTS[wildcards.exp],
        config_hash=lambda wildcards: fedumm_config.config_hash(EXPERIMENTS[wildcards.exp]),
        resolved=lambda wildcards: identity.resolved_config(wildcards.exp, EXPERIMENTS[wildcards.exp], config),
    threads: 1
    resources:
        **rule_resources("default"),
    conda:
        "../../envs/fedumm.yaml"
    script:
        "../../scripts/experiment_tables.py"


rule summary:
    input:
        metrics=expand("results/{exp}/metrics.csv", exp=sorted(EXPERIMENTS)),
        evals=[f for exp in sorted(EXPERIMENTS) for f in experiment_eval_files(exp)],
        rounds=[f for exp in sorted(EXPERIMENTS) for f in round_summaries(exp)],
    output:
        csv=report("results/summary.csv", caption="../report/summary.rst", category="Summary"),
        md="results/summary.md",
        plot=report("results/score_vs_round.png", caption="../report/score_vs_round.rst", category="Summary"),
    log:
        "logs/summary.log",
    benchmark:
        "benchmarks/summary.tsv"
    params:
        experiments=EXPERIMENTS,
        eval_files={exp: experiment_eval_files(exp) for exp in EXPERIMENTS},
        round_files={exp: round_summaries(exp) for exp in EXPERIMENTS},
    threads: 1
    resources:
        **rule_resources("default"),
    conda:
        "../../envs/fedumm.yaml"
    script:
        "../../scripts/summary.py"


# FedUMM Tables 1, 3, 4 and the accuracy-vs-bytes curve. Compute comes from the benchmark files
# of client_train and aggregate, read through params rather than declared as inputs: a deleted
# benchmark file must not make Snakemake retrain clients, and those jobs have written their
# benchmark before their outputs (aggregate.json, an input here) count as done.
localrules:
    paper_tables,


rule paper_tables:
    input:
        evals=[f for exp in sorted(EXPERIMENTS) for f in experiment_eval_files(exp)],
        rounds=[f for exp in sorted(EXPERIMENTS) for f in round_summaries(exp)],
        base_models=sorted(paper_table_base_models().values()),
    output:
        **{
            f"{table}_{ext}": report(
                f"results/tables/{table}.{ext}",
                caption=f"../report/{table}.rst",
                category="Paper tables",
                subcategory=PAPER_TABLE_TITLES[table],
            )
            for table in PAPER_TABLE_TITLES
            for ext in PAPER_TABLE_FORMATS
        },
        bytes_plot=report(
            "results/accuracy_vs_bytes.png",
            caption="../report/accuracy_vs_bytes.rst",
            category="Summary",
        ),
    log:
        "logs/paper_tables.log",
    benchmark:
        "benchmarks/paper_tables.tsv"
    params:
        experiments=EXPERIMENTS,
        eval_files={exp: experiment_eval_files(exp) for exp in EXPERIMENTS},
        round_files={exp: round_summaries(exp) for exp in EXPERIMENTS},
        base_models=paper_table_base_models(),
        benchmarks={exp: benchmark_files(exp) for exp in EXPERIMENTS if EXPERIMENTS[exp]["kind"] == "federated"},
        gpus={"client_train": rule_gpus("client_train"), "aggregate": rule_gpus("aggregate")},
    threads: 1
    resources:
        **rule_resources("default"),
    conda:
        "../../envs/fedumm.yaml"
    script:
        "../../scripts/paper_tables.py"
