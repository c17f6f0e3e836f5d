"""Round 0 (the ``init_adapter`` rule): the seeded initial global adapter and an empty server state,
or, for a warm start (``init:``), an existing adapter checked tensor by tensor against this experiment's."""

from __future__ import annotations

from pathlib import Path

import torch

from fedumm.artifacts import ADAPTER_WEIGHTS, Weights, read_weights, write_weights
from fedumm.models import adapters, dense, families


def check_warm_start(expected: Weights, warm: Weights, source: Path) -> None:
    """The warm-start tensors must be exactly the adapter this experiment builds: same keys, same shapes."""
    missing, unexpected = sorted(set(expected) - set(warm)), sorted(set(warm) - set(expected))
    if missing or unexpected:
        raise ValueError(
            f"warm start {source}: its adapter does not fit this experiment's (other LoRA targets, tuning mode "
            f"or model): missing {missing[:3]}{' …' if len(missing) > 3 else ''} ({len(missing)}), "
            f"unexpected {unexpected[:3]}{' …' if len(unexpected) > 3 else ''} ({len(unexpected)})"
        )
    for key, tensor in expected.items():
        if warm[key].shape != tensor.shape:
            raise ValueError(f"warm start {source}: {key} has shape {tuple(warm[key].shape)}, this experiment's "
                             f"adapter {tuple(tensor.shape)} (another LoRA rank or model)")


def initial_adapter(
    *, base_dir: Path, lora: dict, with_connector: bool, seed: int, out_dir: Path, state_out: Path,
    warm_start: Path | None = None, full: bool = False,
) -> None:
    """Write the round-0 adapter of the base model in ``base_dir`` and an empty server state.

    The connector is part of the adapter (``modules_to_save``) whenever some round trains it, the
    generation path whenever the model generates (its spec has a ``generation`` block). With
    ``warm_start`` (an adapter directory), its tensors are the round-0 adapter, unchanged. With
    ``full`` (full fine-tuning) the adapter is the dense delta of the connector and the language
    model, zero at round 0 (`fedumm.models.dense`).
    """
    torch.manual_seed(seed)
    base = families.load_base(base_dir)
    if full:
        peft_model = dense.DenseDelta(base.model, dense.FULL_GROUPS)
    else:
        options = {"generation_trainable": True} if base.spec.get("generation") else {}
        config = base.family.adapter_config(base.model, lora, connector_trainable=with_connector, **options)
        peft_model = adapters.attach_adapter(base.model, config, seed=seed)
    state = None
    if warm_start is not None:
        state = read_weights(warm_start / ADAPTER_WEIGHTS)
        check_warm_start(adapters.adapter_state(peft_model), state, warm_start)
    adapters.save_adapter(peft_model, out_dir, state=state)
    write_weights(state_out, {})
