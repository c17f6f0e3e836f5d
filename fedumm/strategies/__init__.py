"""Aggregation strategies, selectable by name from the config (``strategy.name``).

Importing this package registers every strategy module below; adding a strategy is a new
module with a ``@register("name")`` dataclass and an import line here. The rules never change.
"""

from fedumm.strategies import fedavg  # noqa: F401  (registers "fedavg")
from fedumm.strategies import fedopt  # noqa: F401  (registers "fedavgm", "fedadam", "fedyogi", "fedadagrad")
from fedumm.strategies import fusion  # noqa: F401  (registers "fedumm_fusion")
from fedumm.strategies import fedcmp  # noqa: F401  (registers "fedcmp")
from fedumm.strategies import lora, merging  # noqa: F401  (registers "lora_fedavg", "merge")
from fedumm.strategies import robust  # noqa: F401  (robust rules: krum, multi_krum, median, trimmed_mean, norm_clip)
from fedumm.strategies import dp  # noqa: F401  (registers "dp_fedavg")
from fedumm.strategies import moon, scaffold  # noqa: F401  (registers "moon", "scaffold": strategies with a client part)
from fedumm.strategies.base import (
    REGISTRY,
    AggregationResult,
    ClientUpdate,
    Strategy,
    Weights,
    build,
    client_needs,
    register,
    update_reference,
)

__all__ = ["REGISTRY", "AggregationResult", "ClientUpdate", "Strategy", "Weights", "build", "client_needs", "register",
           "update_reference"]
