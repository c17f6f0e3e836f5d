# Scores of the global model (or of each local model) on the evaluation split, and of every
# client's model on the client's own part of it (personalized); fedumm.evaluation.evaluate.evaluate_adapters.


rule evaluate:
    input:
        unpack(evaluate_inputs),
    output:
        f"{round_dir(EXP, ROUND)}/{artifacts.EVAL}",
    log:
        "logs/evaluate/{exp}/round_{r}.log",
    benchmark:
        "benchmarks/evaluate/{exp}/round_{r}.tsv"
    params:
        eval=evaluate_eval_params,
        adapters=evaluate_adapter_params,
    threads: rule_threads("evaluate")
    resources:
        **rule_resources("evaluate"),
    conda:
        "../../envs/fedumm.yaml"
    script:
        "../../scripts/evaluate.py"
