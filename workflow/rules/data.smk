# Datasets as webdataset shards (`{split}-{i:05d}.tar`) with a dataset card (card.json).


rule shapes_data:
    output:
        directory("results/data/{dataset}"),
    log:
        "logs/shapes_data/{dataset}.log",
    benchmark:
        "benchmarks/shapes_data/{dataset}.tsv"
    params:
        spec=lambda wildcards: config["datasets"][wildcards.dataset],
    threads: 1
    resources:
        **rule_resources("shapes_data"),
    conda:
        "../../envs/fedumm.yaml"
    script:
        "../../scripts/shapes_data.py"
