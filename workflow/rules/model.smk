# The pretrained base model every experiment on this model starts from.


rule base_model:
    input:
        public=pretrain_shards,
    output:
        directory("results/models/{model}/base"),
    log:
        "logs/base_model/{model}.log",
    benchmark:
        "benchmarks/base_model/{model}.tsv"
    params:
        spec=lambda wildcards: config["models"][wildcards.model],
    threads: rule_threads("base_model")
    resources:
        **rule_resources("base_model"),
    conda:
        "../../envs/fedumm.yaml"
    script:
        "../../scripts/base_model.py"
