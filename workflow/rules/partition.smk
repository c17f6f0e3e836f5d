# Per-experiment client partitions: index files, label counts and a heatmap.


rule partition:
    input:
        data=lambda wildcards: dataset_dir(EXPERIMENTS[wildcards.exp]["dataset"]),
    output:
        clients=directory("results/{exp}/partition/clients"),
        counts="results/{exp}/partition/counts.csv",
        heatmap=report(
            "results/{exp}/partition/heatmap.png",
            caption="../report/partition.rst",
            category="Partitions",
            subcategory="{exp}",
        ),
    log:
        "logs/partition/{exp}.log",
    benchmark:
        "benchmarks/partition/{exp}.tsv"
    params:
        partition=lambda wildcards: EXPERIMENTS[wildcards.exp]["partition"],
        clients=lambda wildcards: fedumm_config.num_clients(EXPERIMENTS[wildcards.exp]),
        seed=lambda wildcards: EXPERIMENTS[wildcards.exp]["seed"],
    threads: 1
    resources:
        **rule_resources("partition"),
    conda:
        "../../envs/fedumm.yaml"
    script:
        "../../scripts/partition.py"
