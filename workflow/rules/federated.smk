# Federated rounds: round 0 initialises the global adapter; in round r each sampled client
# trains from the adapter of round r-1, and the server aggregates their uploads.
# A strategy with a client part declares what its clients read (Strategy.client_needs_*):
# the server state of round r-1 and/or the client's own files of its last round; every
# client writes client_state.safetensors (empty without a client part).


rule init_adapter:
    input:
        unpack(init_adapter_inputs),
    output:
        weights=f"{global_dir(EXP, 0)}/{artifacts.ADAPTER_WEIGHTS}",
        config=f"{global_dir(EXP, 0)}/{artifacts.ADAPTER_CONFIG}",
        state=f"{round_dir(EXP, 0)}/{artifacts.SERVER_STATE}",
    log:
        "logs/init_adapter/{exp}.log",
    benchmark:
        "benchmarks/init_adapter/{exp}.tsv"
    params:
        lora=lambda wildcards: EXPERIMENTS[wildcards.exp]["lora"],
        with_connector=lambda wildcards: EXPERIMENTS[wildcards.exp]["tuning"]["mode"] != "lora",
        tuning_mode=lambda wildcards: EXPERIMENTS[wildcards.exp]["tuning"]["mode"],
        seed=lambda wildcards: planning.derive_seed(EXPERIMENTS[wildcards.exp]["seed"], "init"),
    threads: 1
    resources:
        **rule_resources("init_adapter"),
    conda:
        "../../envs/fedumm.yaml"
    script:
        "../../scripts/init_adapter.py"


rule client_train:
    input:
        unpack(client_train_inputs),
    output:
        weights=f"{client_dir(EXP, ROUND, CLIENT)}/{artifacts.ADAPTER_WEIGHTS}",
        config=f"{client_dir(EXP, ROUND, CLIENT)}/{artifacts.ADAPTER_CONFIG}",
        metrics=f"{client_dir(EXP, ROUND, CLIENT)}/{artifacts.METRICS}",
        state=f"{client_dir(EXP, ROUND, CLIENT)}/{artifacts.CLIENT_STATE}",
    log:
        "logs/client_train/{exp}/round_{r}_client_{k}.log",
    benchmark:
        "benchmarks/client_train/{exp}/round_{r}_client_{k}.tsv"
    params:
        # train, groups, eval, strategy, seed, files (one function: it runs for every client job)
        job=client_train_params,
    threads: rule_threads("client_train")
    resources:
        **rule_resources("client_train"),
    conda:
        "../../envs/fedumm.yaml"
    script:
        "../../scripts/client_train.py"


rule aggregate:
    input:
        unpack(aggregate_inputs),
    output:
        weights=f"{global_dir(EXP, AGGREGATED_ROUND)}/{artifacts.ADAPTER_WEIGHTS}",
        config=f"{global_dir(EXP, ROUND)}/{artifacts.ADAPTER_CONFIG}",
        state=f"{round_dir(EXP, ROUND)}/{artifacts.SERVER_STATE}",
        summary=f"{round_dir(EXP, ROUND)}/{artifacts.AGGREGATE_SUMMARY}",
    log:
        "logs/aggregate/{exp}/round_{r}.log",
    benchmark:
        "benchmarks/aggregate/{exp}/round_{r}.tsv"
    params:
        # strategy, uploads, excluded, partition
        job=aggregate_params,
    threads: 1
    resources:
        **rule_resources("aggregate"),
    conda:
        "../../envs/fedumm.yaml"
    script:
        "../../scripts/aggregate.py"
