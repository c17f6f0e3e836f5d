# fedumm: federated fine-tuning of vision-language models with parameter-efficient adapters.
# Data flow and the artifact contract: docs/ARCHITECTURE.md. Config keys: config/README.md.

from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


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
