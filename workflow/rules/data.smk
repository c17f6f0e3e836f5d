# Datasets as webdataset shards (`{split}-{i:05d}.tar`) with a dataset card (card.json).
# The built-in shapes data are generated; every other kind is downloaded into
# resources/downloads/{dataset}/ (a cache, not a rule output, so an interrupted download
# resumes on the next run) and then normalized into the same format.

from fedumm.data import sources as fedumm_sources


# Downloads need the network, which compute nodes of a cluster often lack.
localrules:
    download_dataset,


rule shapes_data:
    output:
        directory("results/data/{dataset}"),
    wildcard_constraints:
        dataset=fedumm_sources.names_pattern(config["datasets"], downloaded=False),
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


rule download_dataset:
    output:
        manifest="resources/downloads/{dataset}/manifest.json",
    wildcard_constraints:
        dataset=fedumm_sources.names_pattern(config["datasets"], downloaded=True),
    log:
        "logs/download_dataset/{dataset}.log",
    benchmark:
        "benchmarks/download_dataset/{dataset}.tsv"
    params:
        spec=lambda wildcards: fedumm_sources.download_spec(config["datasets"][wildcards.dataset]),
    threads: rule_threads("download_dataset")
    resources:
        **rule_resources("download_dataset"),
    conda:
        "../../envs/fedumm.yaml"
    script:
        "../../scripts/download_dataset.py"


rule normalize_dataset:
    input:
        manifest="resources/downloads/{dataset}/manifest.json",
    output:
        directory("results/data/{dataset}"),
    wildcard_constraints:
        dataset=fedumm_sources.names_pattern(config["datasets"], downloaded=True),
    log:
        "logs/normalize_dataset/{dataset}.log",
    benchmark:
        "benchmarks/normalize_dataset/{dataset}.tsv"
    params:
        spec=lambda wildcards: config["datasets"][wildcards.dataset],
    threads: 1
    resources:
        **rule_resources("normalize_dataset"),
    conda:
        "../../envs/fedumm.yaml"
    script:
        "../../scripts/normalize_dataset.py"


# A mixture (FedVLMBench's multitask setting) is built from other datasets' outputs, never
# downloaded: its name matches only this rule's constraint.
rule mixture_dataset:
    input:
        parts=lambda wildcards: [dataset_dir(part) for part in config["datasets"][wildcards.dataset]["parts"]],
    output:
        directory("results/data/{dataset}"),
    wildcard_constraints:
        dataset=fedumm_sources.names_pattern(config["datasets"], group="mixture"),
    log:
        "logs/mixture_dataset/{dataset}.log",
    benchmark:
        "benchmarks/mixture_dataset/{dataset}.tsv"
    params:
        spec=lambda wildcards: config["datasets"][wildcards.dataset],
    threads: 1
    resources:
        **rule_resources("mixture_dataset"),
    conda:
        "../../envs/fedumm.yaml"
    script:
        "../../scripts/mixture_dataset.py"
