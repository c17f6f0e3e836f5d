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
    log:
        "logs/experiment_tables/{exp}.log",
    benchmark:
        "benchmarks/experiment_tables/{exp}.tsv"
    params:
        experiment=lambda wildcards: EXPERIMENTS[wildcards.exp],
        config_hash=lambda wildcards: fedumm_config.config_hash(EXPERIMENTS[wildcards.exp]),
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
