"""Round 0 (the ``init_adapter`` rule): the seeded initial global adapter and an empty server state."""

from __future__ import annotations

from pathlib import Path

import torch

from fedumm.artifacts import write_weights
from fedumm.models import adapters, families


def initial_adapter(
    *, base_dir: Path, lora: dict, with_connector: bool, seed: int, out_dir: Path, state_out: Path
) -> None:
    """Write the round-0 adapter of the base model in ``base_dir`` and an empty server state.

    The connector is part of the adapter (``modules_to_save``) whenever some round trains it, the
    generation path whenever the model generates (its spec has a ``generation`` block).
    """
    torch.manual_seed(seed)
    base = families.load_base(base_dir)
    options = {"generation_trainable": True} if base.spec.get("generation") else {}
    config = base.family.adapter_config(base.model, lora, connector_trainable=with_connector, **options)
    peft_model = adapters.attach_adapter(base.model, config, seed=seed)
    adapters.save_adapter(peft_model, out_dir)
    write_weights(state_out, {})
