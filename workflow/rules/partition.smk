# Per-experiment client partitions: index files, label counts, heatmap, heterogeneity and sizes.
# Experiments whose partition names an `embedder` read its embeddings (the cluster scheme needs
# them) and also get a 2-D projection of them coloured by client: rule partition_projected.


rule partition:
    input:
        unpack(partition_inputs),
    output:
        clients=directory("results/{exp}/partition/clients"),
        counts="results/{exp}/partition/counts.csv",
        heatmap=report(
            "results/{exp}/partition/heatmap.png",
            caption="../report/partition.rst",
            category="Partitions",
            subcategory="{exp}",
        ),
        heterogeneity="results/{exp}/partition/heterogeneity.json",
        heterogeneity_plot=report(
            "results/{exp}/partition/heterogeneity.png",
            caption="../report/partition_heterogeneity.rst",
            category="Partitions",
            subcategory="{exp}",
        ),
        sizes="results/{exp}/partition/sizes.json",
    log:
        "logs/partition/{exp}.log",
    benchmark:
        "benchmarks/partition/{exp}.tsv"
    wildcard_constraints:
        exp=partition_experiments(projected=False),
    params:
        partition=lambda wildcards: EXPERIMENTS[wildcards.exp]["partition"],
        # The centralized baseline pools the partition of `clients` clients into one.
        clients=lambda wildcards: EXPERIMENTS[wildcards.exp]["clients"],
        pooled=lambda wildcards: EXPERIMENTS[wildcards.exp]["kind"] == "centralized",
        seed=lambda wildcards: EXPERIMENTS[wildcards.exp]["seed"],
    threads: 1
    resources:
        **rule_resources("partition"),
    conda:
        "../../envs/fedumm.yaml"
    script:
        "../../scripts/partition.py"


use rule partition as partition_projected with:
    output:
        clients=directory("results/{exp}/partition/clients"),
        counts="results/{exp}/partition/counts.csv",
        heatmap=report(
            "results/{exp}/partition/heatmap.png",
            caption="../report/partition.rst",
            category="Partitions",
            subcategory="{exp}",
        ),
        heterogeneity="results/{exp}/partition/heterogeneity.json",
        heterogeneity_plot=report(
            "results/{exp}/partition/heterogeneity.png",
            caption="../report/partition_heterogeneity.rst",
            category="Partitions",
            subcategory="{exp}",
        ),
        sizes="results/{exp}/partition/sizes.json",
        projection=report(
            "results/{exp}/partition/projection.png",
            caption="../report/partition_projection.rst",
            category="Partitions",
            subcategory="{exp}",
        ),
    wildcard_constraints:
        exp=partition_experiments(projected=True),
    localrule: True
