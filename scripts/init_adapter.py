"""Write the seeded round-0 global adapter (rule init_adapter)."""

from pathlib import Path

from fedumm.federated.initial import initial_adapter
from fedumm.runlog import job_header, log_to

with log_to(snakemake.log[0], job_header(snakemake.rule, snakemake.wildcards)) as log:
    initial_adapter(
        base_dir=Path(snakemake.input.base),
        lora=snakemake.params.lora,
        with_connector=snakemake.params.with_connector,
        seed=snakemake.params.seed,
        out_dir=Path(snakemake.output.weights).parent,
        state_out=Path(snakemake.output.state),
        warm_start=Path(snakemake.input.warm_start).parent if "warm_start" in snakemake.input.keys() else None,
        full=snakemake.params.tuning_mode == "full",
    )
    log.info("initial adapter written to %s%s", Path(snakemake.output.weights).parent,
             f" from {Path(snakemake.input.warm_start).parent}" if "warm_start" in snakemake.input.keys() else "")
