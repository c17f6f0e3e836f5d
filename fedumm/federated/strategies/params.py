"""The one check of a strategy's numeric and boolean parameters; errors name the strategy and parameter."""

from __future__ import annotations

import math


def is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_real(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_real(
    owner: str,
    name: str,
    value: object,
    *,
    above: float | None = None,
    at_least: float | None = None,
    below: float | None = None,
    at_most: float | None = None,
    integer: bool = False,
) -> None:
    """Raise a ValueError naming ``owner`` and ``name`` unless ``value`` is a finite number
    (an integer with ``integer``) within the given bounds."""
    kind = "an integer" if integer else "a finite number"
    if not (is_int(value) if integer else is_real(value) and math.isfinite(value)):
        raise ValueError(f"{owner}: parameter {name} must be {kind}, got {value!r}")
    for bound, holds, word in (
        (above, lambda b: value > b, ">"),
        (at_least, lambda b: value >= b, ">="),
        (below, lambda b: value < b, "<"),
        (at_most, lambda b: value <= b, "<="),
    ):
        if bound is not None and not holds(bound):
            raise ValueError(f"{owner}: parameter {name} must be {word} {bound}, got {value!r}")


def check_bool(owner: str, name: str, value: object) -> None:
    if not isinstance(value, bool):
        raise ValueError(f"{owner}: parameter {name} must be true or false, got {value!r}")


def check_choice(owner: str, name: str, value: object, choices) -> None:
    if value not in choices:
        raise ValueError(f"{owner}: parameter {name} must be one of {', '.join(choices)}, got {value!r}")
