"""Replicates: experiments that differ only in their seed, and the mean and spread of their scores.

A seed sweep runs one configuration under several seeds. Tables and figures show the mean over
those replicates with the sample standard deviation and the number of seeds, so that a reader can
tell a difference between configurations from the variation between seeds (FedUMM and Fed-CMP
report single runs; with a few hundred test questions one seed moves a score by points).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from statistics import fmean, stdev

from fedumm import config as fedumm_config

SPREAD_FACTOR = 2.0
"""A difference counts as within the spread when |d| <= SPREAD_FACTOR · sd(d): about a 95% interval
under a normal approximation."""


def seed_group(experiment: dict) -> str:
    """A key shared by the resolved experiments that differ only in their seed (replicates)."""
    return fedumm_config.config_hash({key: value for key, value in experiment.items() if key != "seed"})


def group_label(names: Sequence[str]) -> str:
    """One name for replicates: `sweep_c4_a0.5_fedavg_s0` and `…_s1` become `sweep_c4_a0.5_fedavg`."""
    if len(names) == 1:
        return names[0]
    stems = {re.sub(r"_s\d+$", "", name) for name in names}
    return stems.pop() if len(stems) == 1 else ", ".join(names)


@dataclass(frozen=True)
class Estimate:
    """The mean of `n` replicate values and their sample standard deviation `sd` (None for one value:
    a single run says nothing about its spread)."""

    mean: float
    sd: float | None
    n: int

    def scaled(self, factor: float) -> Estimate:
        return Estimate(self.mean * factor, None if self.sd is None else self.sd * factor, self.n)


def estimate(values: Iterable[float | None]) -> Estimate | None:
    """Mean and sample standard deviation (n − 1 in the denominator) of the values that are not
    None; None when there are none."""
    present = [value for value in values if value is not None]
    if not present:
        return None
    return Estimate(fmean(present), stdev(present) if len(present) > 1 else None, len(present))


def mean_of(estimates: Sequence[Estimate | None]) -> Estimate | None:
    """The mean of independent estimates (a table row's average over its α cells):
    mean = Σ m_i / k, sd = sqrt(Σ sd_i²) / k; sd is None unless every estimate has one, n the
    smallest number of seeds. None when no estimate is given."""
    present = [item for item in estimates if item is not None]
    if not present:
        return None
    sds = [item.sd for item in present]
    sd = None if None in sds else math.sqrt(sum(value * value for value in sds)) / len(present)
    return Estimate(fmean(item.mean for item in present), sd, min(item.n for item in present))


def difference(value: Estimate | None, reference: Estimate | None) -> Estimate | None:
    """value − reference of two independent estimates: sd = sqrt(sd_v² + sd_r²), None unless both
    have one."""
    if value is None or reference is None:
        return None
    sd = None if value.sd is None or reference.sd is None else math.hypot(value.sd, reference.sd)
    return Estimate(value.mean - reference.mean, sd, min(value.n, reference.n))


def within_spread(delta: Estimate | None) -> bool:
    """Whether a difference is within `SPREAD_FACTOR` standard deviations of zero; False when its
    spread is unknown (one seed), since then nothing can be said either way."""
    return delta is not None and delta.sd is not None and abs(delta.mean) <= SPREAD_FACTOR * delta.sd


def group_names(groups: Mapping[str, str]) -> dict[str, str]:
    """Each experiment's replicate-group name (`group_label` of its group's experiments, in name
    order); `groups` maps each experiment to its `seed_group`."""
    members: dict[str, list[str]] = {}
    for name in sorted(groups):
        members.setdefault(groups[name], []).append(name)
    return {name: group_label(names) for names in members.values() for name in names}


def replicate_curves(curves: Mapping[str, Sequence[tuple[float, float]]],
                     groups: Mapping[str, str]) -> dict[str, list[tuple[float, Estimate]]]:
    """The curves of each seed group as one, under its `group_names` name: at each point (in x order)
    the mean x and the `estimate` of the y values. `groups` maps each curve to its `seed_group`; a
    curve without replicates keeps its name and points (sd None). Replicates evaluate the same
    rounds, so a group whose curves have different numbers of points is an error."""
    names = group_names({name: groups[name] for name in curves})
    members: dict[str, list[list[tuple[float, float]]]] = {}
    for name in sorted(curves):
        members.setdefault(names[name], []).append(sorted(curves[name]))
    merged = {}
    for label, points in members.items():
        if len({len(curve) for curve in points}) != 1:
            raise ValueError(f"replicates {label}: curves of different lengths {[len(curve) for curve in points]}")
        merged[label] = [(fmean(x for x, _ in column), estimate(y for _, y in column)) for column in zip(*points)]
    return merged
