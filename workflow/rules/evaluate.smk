# Scores of the global model (or of each local model) on the evaluation split, and of every
# client's model on the client's own part of it (personalized); fedumm.evaluation.evaluate.evaluate_adapters.
# A model that generates images also gets its text-to-image scores (evaluate_generation,
# fedumm.evaluation.text_to_image), which eval.json holds as its `geneval` block.


rule evaluate_generation:
    input:
        unpack(evaluate_generation_inputs),
    output:
        scores=f"{round_dir(EXP, ROUND)}/{artifacts.GENEVAL_SCORES}",
        samples=directory(f"{round_dir(EXP, ROUND)}/{artifacts.GENEVAL_SAMPLES}"),
        grid=report(
            f"{round_dir(EXP, ROUND)}/{artifacts.SAMPLES_GRID}",
            caption="../report/samples.rst",
            category="Generated images",
            subcategory="{exp}",
        ),
    log:
        "logs/evaluate_generation/{exp}/round_{r}.log",
    benchmark:
        "benchmarks/evaluate_generation/{exp}/round_{r}.tsv"
    params:
        eval=evaluate_eval_params,
        adapters=evaluate_adapter_params,
        seed=lambda wildcards: planning.derive_seed(EXPERIMENTS[wildcards.exp]["seed"], "geneval"),
    threads: rule_threads("evaluate")
    resources:
        **rule_resources("evaluate"),
    conda:
        "../../envs/fedumm.yaml"
    script:
        "../../scripts/evaluate_generation.py"


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
