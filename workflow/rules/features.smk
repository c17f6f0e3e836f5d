# Frozen vision-encoder outputs, computed once per split and read by every client and round.


rule features:
    input:
        base="results/models/{model}/base",
        data="results/data/{dataset}",
    output:
        "results/features/{model}/{dataset}/{split}.safetensors",
    log:
        "logs/features/{model}_{dataset}_{split}.log",
    benchmark:
        "benchmarks/features/{model}_{dataset}_{split}.tsv"
    params:
        batch_size=64,
    threads: rule_threads("features")
    resources:
        **rule_resources("features"),
    conda:
        "../../envs/fedumm.yaml"
    script:
        "../../scripts/features.py"
