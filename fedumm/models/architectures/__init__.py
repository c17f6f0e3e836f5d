"""The architectures of the ``hf`` family, one module each, by ``config.model_type``."""

from __future__ import annotations

from fedumm.models.architectures.base import Architecture
from fedumm.models.architectures.emu3 import EMU3
from fedumm.models.architectures.idefics3 import IDEFICS3
from fedumm.models.architectures.janus import JANUS
from fedumm.models.architectures.llava import LLAVA
from fedumm.models.architectures.paligemma import PALIGEMMA
from fedumm.models.architectures.qwen2_5_vl import QWEN2_5_VL

ARCHITECTURES: dict[str, Architecture] = {
    architecture.model_type: architecture for architecture in (QWEN2_5_VL, LLAVA, IDEFICS3, PALIGEMMA, JANUS, EMU3)
}


def architecture_of(model) -> Architecture:
    """The architecture of a transformers model (inside a PeftModel too), by its config's model_type."""
    model_type = model.config.model_type
    if model_type not in ARCHITECTURES:
        raise ValueError(f"model_type {model_type!r} is not supported by the hf family "
                         f"(supported: {', '.join(sorted(ARCHITECTURES))})")
    return ARCHITECTURES[model_type]


__all__ = ["ARCHITECTURES", "Architecture", "architecture_of"]
