# fedumm: federated fine-tuning of vision-language models with parameter-efficient adapters.
# Data flow and the artifact contract: docs/ARCHITECTURE.md. Config keys: config/README.md.

from snakemake.utils import min_version

from fedumm.config import check_yaml_files, replace_default_experiments

min_version("9.0")

# Snakemake's loader names neither the file nor the line of a YAML mistake and keeps the last of two
# equal keys: read the config files strictly first (a --configfile has passed Snakemake's loader already).
check_yaml_files(["config/config.yaml", *workflow.config_settings.configfiles])


configfile: "config/config.yaml"


# A user's --configfile names exactly the experiments that run (config/README.md, "Your own config").
replace_default_experiments(config, workflow.config_settings.configfiles, workflow.config_settings.config)


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/model.smk"
include: "workflow/rules/features.smk"
include: "workflow/rules/embeddings.smk"
include: "workflow/rules/partition.smk"
include: "workflow/rules/federated.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/report.smk"


rule all:
    input:
        all_outputs(),
    default_target: True


onsuccess:
    print(
        "fedumm: results/summary.md (one row per experiment), results/tables/ (the papers' tables), "
        "results/score_vs_round.png; `snakemake --report report.html` collects tables and figures in one file."
    )
