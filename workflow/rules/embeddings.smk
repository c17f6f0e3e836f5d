# CLIP / SigLIP image and text embeddings per split, read by the semantic-clustering partitions
# and the partition projection plots (not by training: that reads the `features` cache).


rule embeddings:
    input:
        data=lambda wildcards: dataset_dir(wildcards.dataset),
    output:
        "results/embeddings/{embedder}/{dataset}/{split}.safetensors",
    log:
        "logs/embeddings/{embedder}_{dataset}_{split}.log",
    benchmark:
        "benchmarks/embeddings/{embedder}_{dataset}_{split}.tsv"
    wildcard_constraints:
        embedder=names_regex(config.get("embedders", {})),
    params:
        spec=lambda wildcards: config["embedders"][wildcards.embedder],
    threads: rule_threads("embeddings")
    resources:
        **rule_resources("embeddings"),
    conda:
        "../../envs/fedumm.yaml"
    script:
        "../../scripts/embeddings.py"
