"""The papers' tables from a user's own runs: FedUMM Tables 1, 3 and 4 (Su et al., arXiv:2601.15390).

- Table 1: the primary score of the federated experiments, one row per number of clients (and
  strategy, when several), one column per Dirichlet α, the row's average and its difference to the
  centralized baseline.
- Table 2: text-to-image generation of a unified model on GenEval's six skills (here GenEval-shapes:
  GenEval's prompts and rules on the shapes world), centralized and federated.
- Table 3: training paradigms: centralized and single-site training against federated training.
- Table 4: compute and communication per round, against full fine-tuning.

Scores are the primary score of each experiment at the round its validation score selects
(`selected_score` of `fedumm.reports.summary.summary_row`; the last evaluated round, `final_score`,
for experiments without a selection split), so that no table picks a round by the score it reports: VQA accuracy on VQA v2, CIDEr on captions, ...), shown in percent for
accuracies and as a plain number for CIDEr (`fedumm.reports.summary.score_scale`); each table names its
metric, and gains a "Metric" column when its experiments are scored by different metrics.
Experiments that differ only in their seed are averaged, and every table says over how many.

The table builders are pure: "run" records in (`run_record`), a `Table` out; `to_csv`, `to_markdown`
and `to_latex` format it. Only the functions of the "reading run files" section touch files:
Snakemake's benchmark TSVs, aggregate.json and the base model's spec.json.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from statistics import fmean

from fedumm.io import atomic_write_text
from fedumm.reports import identity, replicates, summary
from fedumm.reports.replicates import Estimate, estimate, group_label, seed_group

Cell = str | int | float | Estimate | None
"""A table cell: text, a number in the column's unit, a mean over seeds with its spread
(`fedumm.reports.replicates.Estimate`), or None for a missing value."""

MISSING = "—"
"""How Markdown and LaTeX show a missing cell (CSV leaves it empty)."""

SIG3 = "sig3"
"""Format of columns spanning orders of magnitude (GB, GPU-hours): 3 significant digits, no exponent."""

GB = 10**9

TABLE_NAMES = ("table1", "table2", "table3", "table4")


@dataclass(frozen=True)
class Table:
    """A table in the papers' layout.

    `formats` holds one format spec per column for Markdown and LaTeX (`""`: the cell as text, and
    the column is left-aligned); CSV keeps numbers at full precision. `notes` explain how the cells
    were computed; Markdown prints them below the table, LaTeX as comments above it.
    """

    title: str
    columns: tuple[str, ...]
    formats: tuple[str, ...]
    rows: tuple[tuple[Cell, ...], ...]
    notes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if len(self.formats) != len(self.columns):
            raise ValueError(f"table {self.title!r}: {len(self.formats)} formats for {len(self.columns)} columns")
        for row in self.rows:
            if len(row) != len(self.columns):
                raise ValueError(f"table {self.title!r}: row {row!r} has {len(row)} cells, expected {len(self.columns)}")


# ----------------------------------------------------------------------------- runs


def run_record(name: str, experiment: dict, summary: dict) -> dict:
    """The input of the table builders for one experiment.

    `experiment` is the resolved experiment, `summary` its `fedumm.reports.summary.summary_row`. The record
    holds `name`, `group` (`seed_group`), `kind`, `strategy` (None unless federated), `label` (its
    `fedumm.reports.identity.strategy_label`), `baseline` (the experiment's ``baseline`` key), `dataset`,
    `model`, `experiment` (the resolved experiment), `clients`,
    `alpha` (None for an iid partition), `tuning` (the tuning mode), `metric` (its score_metric),
    `score` (its final primary score, unscaled), `bytes_per_round` (mean bytes uploaded per
    round, None when nothing is uploaded), `partition` (its scheme) and `geneval` (the final round's GenEval task scores and
    `overall`, None for a model that does not generate). `score` is the score at the round selected by
    the selection split where the experiment has one, else the final score; `selected_round` says
    which (None: final).
    """
    tasks = summary.get("geneval_tasks")
    return {
        "name": name,
        "group": seed_group(experiment),
        "kind": experiment["kind"],
        "strategy": summary["strategy"],
        "label": summary["label"],
        "baseline": experiment.get("baseline"),
        "dataset": experiment["dataset"],
        "model": experiment["model"],
        "experiment": experiment,
        "clients": experiment["clients"],
        "alpha": summary["alpha"],
        "tuning": experiment["tuning"]["mode"],
        "metric": summary["score_metric"],
        "score": summary["final_score"] if summary.get("selected_score") is None else summary["selected_score"],
        "selected_round": summary.get("selected_round"),
        "bytes_per_round": summary["bytes_uploaded_per_round"],
        "partition": experiment["partition"]["scheme"],
        "geneval": None if tasks is None else {**tasks, "overall": summary["final_geneval_overall"]},
    }


def _mean(values: Iterable[float | None]) -> float | None:
    """Mean of the values that are not None (`replicates.estimate`'s); None when there are none."""
    found = estimate(values)
    return None if found is None else found.mean


def _mean_scores(blocks: Sequence[dict | None]) -> dict | None:
    """Key-by-key mean of score dicts (a key missing from a dict is left out of its mean); None when none."""
    present = [block for block in blocks if block is not None]
    if not present:
        return None
    keys = dict.fromkeys(key for block in present for key in block)
    return {key: _mean(block.get(key) for block in present) for key in keys}


def average_seeds(runs: Sequence[dict]) -> list[dict]:
    """One record per seed group, in order of first appearance: the mean `score` and
    `bytes_per_round` of its runs, `estimate` (the score's `Estimate`: mean, sample standard
    deviation over seeds, number of seeds), `name` from `group_label`, `names` and `seeds` (how many)."""
    groups: dict[str, list[dict]] = {}
    for run in runs:
        groups.setdefault(run["group"], []).append(run)
    return [
        {
            **members[0],
            "name": group_label([run["name"] for run in members]),
            "names": tuple(run["name"] for run in members),
            "seeds": len(members),
            "score": fmean(run["score"] for run in members),
            "estimate": estimate(run["score"] for run in members),
            "bytes_per_round": _mean(run["bytes_per_round"] for run in members),
            "geneval": _mean_scores([run.get("geneval") for run in members]),
        }
        for members in groups.values()
    ]


def _seeds_note(groups: Sequence[dict]) -> str | None:
    """Says which rows average several seeds, or None when no experiment was repeated."""
    repeated = [f"{group['name']} ({group['seeds']})" for group in groups if group["seeds"] > 1]
    if not repeated:
        return None
    return "Mean over the seeds of experiments that differ only in their seed (number of seeds): " + ", ".join(repeated) + "."


def _basis(runs: Sequence[dict]) -> str:
    """Which round the score cells come from, for the notes."""
    final = sorted({run["name"] for run in runs if run.get("selected_round") is None})
    if not final:
        return ("at the round whose model scored best on the validation split (eval.select_split), chosen without "
                "looking at the reported split; summary.md gives each selected round and the final scores")
    if len(final) == len(runs):
        return "of the last evaluated round"
    return ("at the round selected by the validation split (eval.select_split), except the last evaluated round for "
            "experiments without one: " + ", ".join(final))


def _scaled(score: float | Estimate | None, metric: str) -> float | Estimate | None:
    """A score in the unit the tables show for its metric: percent for fractions, CIDEr as is. A mean
    over seeds stays an `Estimate` when it has a spread; without one (one seed) it is a plain number."""
    if score is None:
        return None
    factor = summary.score_scale(metric)
    if isinstance(score, Estimate):
        return score.mean * factor if score.sd is None else score.scaled(factor)
    return score * factor


def _metrics(runs: Iterable[dict]) -> list[str]:
    """The distinct score metrics of `runs`, in `fedumm.reports.summary.metric_order`."""
    return sorted({run["metric"] for run in runs}, key=summary.metric_order)


def _score_format(metrics: Collection[str]) -> str:
    """Format spec of score columns: one decimal of a percentage, two as soon as a metric is not a
    fraction (CIDEr, in [0, 10], would lose its differences at one decimal)."""
    return ".1f" if set(metrics) <= summary.FRACTION_METRICS else ".2f"


_METRIC_DESCRIPTIONS: dict[str, str] = {
    "vqa.accuracy": "VQA accuracy",
    "exact_match.accuracy": "exact-match accuracy",
    "classification_accuracy": "classification accuracy",
    "caption.CIDEr": "CIDEr-D",
    "ground.accuracy@0.5": "grounding accuracy at IoU >= 0.5",
}
"""What the primary metrics (`fedumm.reports.summary.METRIC_NAMES`) measure, for the tables' notes."""


def _score_description(metrics: Collection[str]) -> str:
    """What the score cells hold, for notes: the metric and its unit, or how mixed metrics read."""
    distinct = set(metrics)
    if len(distinct) > 1:
        return "the score of the row's Metric, accuracies in % and CIDEr as a number"
    if not distinct:
        return "the primary score"
    (metric,) = distinct
    unit = "in %" if metric in summary.FRACTION_METRICS else "as a number (not a percentage)"
    return f"{_METRIC_DESCRIPTIONS.get(metric, metric)} {unit}"


def _metric_cell(metric: str, by_metric: bool) -> tuple[Cell, ...]:
    """The Metric column's cell, present only when a table mixes metrics."""
    return (summary.metric_name(metric),) if by_metric else ()


def _alpha_label(alpha: float | None) -> str:
    return "IID" if alpha is None else f"α={alpha:g}"


def _alpha_order(alpha: float | None) -> tuple[bool, float]:
    """Increasing α, the iid partition (no α) last."""
    return (alpha is None, alpha or 0.0)


# ----------------------------------------------------------------------------- Table 1


def _central_label(central: dict, several: bool) -> str:
    return f"Centralized ({central['name']})" if several else "Centralized"


def _baselines(group: dict, centrals: Sequence[dict]) -> list[dict]:
    """The centralized seed groups a federated group is compared with: the one its ``baseline`` key
    names, else those of the same dataset and model (they pool the same training data), and among
    them those of the same tuning mode when there are any (LoRA against LoRA, full fine-tuning
    against full fine-tuning)."""
    if group.get("baseline"):
        return [central for central in centrals if group["baseline"] in central["names"]]
    same_data = [central for central in centrals
                 if (central.get("dataset"), central.get("model")) == (group.get("dataset"), group.get("model"))]
    same_tuning = [central for central in same_data if central.get("tuning") == group.get("tuning")]
    return same_tuning or same_data


def _row_labels(groups: Sequence[dict]) -> dict[str, str]:
    """Each federated seed group's row label: its strategy label, and where groups of one label
    would share a cell (same clients and α), the parameters that tell them apart, so that a cell
    never averages runs that differ in more than their seed."""
    labels = {group["group"]: group.get("label") or group["strategy"] for group in groups}
    cells: dict[tuple, list[dict]] = {}
    for group in groups:
        cells.setdefault((group["metric"], labels[group["group"]], group["clients"], group["alpha"]), []).append(group)
    for members in cells.values():
        if len(members) > 1:
            keys = identity.distinguishing_parameters([member["experiment"] for member in members])
            for member in members:
                detail = identity.parameters_label(member["experiment"], keys) if keys else member["name"]
                labels[member["group"]] = f"{labels[member['group']]} [{detail}]"
    return labels


def _seeds_cell_note(groups: Sequence[dict]) -> str:
    counts = [group["seeds"] for group in groups]
    if set(counts) == {1}:
        return ("One experiment (one seed) per cell: no spread is known, and a difference of a few points can be "
                "seed variation; sweep `seed` for mean ± standard deviation.")
    low, high = min(counts), max(counts)
    spread = str(low) if low == high else f"{low}–{high}"
    return (f"A cell is the mean ± sample standard deviation over experiments that differ only in their seed "
            f"({spread} seeds; n= gives each cell's number); a cell without ± is one seed.")


def _spread_note(compared: Sequence[tuple[str, Estimate | None]], unit: str) -> str | None:
    """Names the rows whose difference to centralized is within the seeds' spread
    (`fedumm.reports.replicates.within_spread`), or None when there is none."""
    within = [row for row, delta in compared if replicates.within_spread(delta)]
    if not within:
        return None
    return (f"Within the spread (|difference| <= {replicates.SPREAD_FACTOR:g} standard deviations of the difference, "
            f"{unit}): " + "; ".join(within) + ". These rows do not show a difference to centralized beyond seed variation.")


def table1(runs: Sequence[dict]) -> Table:
    """FedUMM Table 1: final primary score by number of clients (rows) and Dirichlet α (columns).

    A cell is the mean over runs that differ only in their seed (`average_seeds`); runs with the
    same strategy label that differ in anything else get rows of their own (`_row_labels`). `Avg`
    is the mean of the row's filled cells; `vs. centralized` is Avg minus the score of the row's
    centralized baseline (`_baselines`: the experiments' ``baseline`` key, else the centralized
    experiments of the same dataset and model). The centralized experiments come first. When the
    experiments are scored by different metrics, a first "Metric" column splits the rows by
    metric, since scores of different metrics are never averaged or compared.
    """
    groups = average_seeds([run for run in runs if run["kind"] in ("federated", "centralized")])
    federated = [group for group in groups if group["kind"] == "federated"]
    centrals = [group for group in groups if group["kind"] == "centralized"]
    metrics = _metrics(groups)
    by_metric = len(metrics) > 1
    alphas = sorted({group["alpha"] for group in federated}, key=_alpha_order)
    labels = _row_labels(federated)
    by_strategy = len(set(labels.values())) > 1
    cells = {(group["metric"], labels[group["group"]], group["clients"], group["alpha"]): group for group in federated}

    key_columns = (("Metric",) if by_metric else ()) + (("Strategy",) if by_strategy else ()) + ("Clients",)
    columns = key_columns + tuple(_alpha_label(alpha) for alpha in alphas) + ("Avg", "vs. centralized")
    score_format = _score_format(metrics)
    formats = ("",) * len(key_columns) + (score_format,) * (len(alphas) + 1) + ("+" + score_format,)
    rows: list[tuple[Cell, ...]] = []
    notes = [
        f"Score of the federated experiments, {_basis(groups)}: {_score_description(metrics)}.",
        _seeds_cell_note(federated) if federated else "No federated experiment.",
        "Avg: mean of the row's filled α cells; — marks a combination without an experiment."
        + (" Avg's ± is sqrt(Σ sd²)/k over its k cells, vs. centralized's sqrt(sd_Avg² + sd_centralized²)."
           if any(group["seeds"] > 1 for group in groups) else ""),
    ]
    for metric in metrics:
        metric_centrals = [central for central in centrals if central["metric"] == metric]
        several = len(metric_centrals) > 1
        prefix = f"{summary.metric_name(metric)}: " if by_metric else ""
        for central in metric_centrals:
            label = _metric_cell(metric, by_metric) + ((_central_label(central, several), None) if by_strategy
                                                       else (_central_label(central, several),))
            rows.append(label + (None,) * len(alphas) + (_scaled(central["estimate"], metric), None))
        unit = "percentage points" if metric in summary.FRACTION_METRICS else f"{summary.metric_name(metric)} points"
        compared = []
        differences: list[tuple[str, Estimate | None]] = []
        for label, clients in sorted({(labels[g["group"]], g["clients"]) for g in federated if g["metric"] == metric}):
            row_groups = [cells.get((metric, label, clients, alpha)) for alpha in alphas]
            values = [None if group is None else group["estimate"] for group in row_groups]
            average = replicates.mean_of(values)
            baselines = {central["name"]: central for group in row_groups if group is not None
                         for central in _baselines(group, metric_centrals)}
            reference = replicates.mean_of([central["estimate"] for central in baselines.values()])
            difference = replicates.difference(average, reference)
            key = _metric_cell(metric, by_metric) + ((label, clients) if by_strategy else (clients,))
            rows.append(key + tuple(_scaled(value, metric) for value in values)
                        + (_scaled(average, metric), _scaled(difference, metric)))
            row_name = f"{label}, {clients} clients" if by_strategy else f"{clients} clients"
            compared.append((row_name, sorted(baselines)))
            differences.append((row_name, difference))
        sources = {tuple(names) for _, names in compared}
        if not metric_centrals:
            notes.append(prefix + "No centralized experiment: vs. centralized is —.")
        elif len(sources) <= 1:
            names = next(iter(sources), tuple(central["name"] for central in metric_centrals))
            source = ", ".join(names) if names else "none of the same dataset and model: —"
            notes.append(prefix + f"vs. centralized: Avg minus the centralized score ({source}), in {unit}.")
        else:
            pairs = "; ".join(f"{row} vs. {', '.join(names) or '—'}" for row, names in compared)
            notes.append(prefix + f"vs. centralized: Avg minus the score of the row's centralized baseline, in {unit}: {pairs}.")
        spread = _spread_note(differences, unit)
        if spread:
            notes.append(prefix + spread)
    if not metrics:
        notes.append("No centralized experiment: vs. centralized is —.")
    title = f"Table 1: {summary.score_label(metrics)} by number of clients and Dirichlet α"
    return Table(title, columns, formats, tuple(rows), tuple(notes))


# ----------------------------------------------------------------------------- Table 2

GENEVAL_COLUMNS: dict[str, str] = {
    "single_object": "Single obj.", "two_object": "Two obj.", "counting": "Counting", "colors": "Colors",
    "position": "Position", "color_attr": "Color attr.", "overall": "Overall",
}
"""Table 2's columns: GenEval's task tags (``fedumm.data.geneval.SKILLS``) and the overall score."""


def _geneval_cells(scores: dict) -> tuple[Cell, ...]:
    return tuple(None if scores.get(task) is None else 100 * scores[task] for task in GENEVAL_COLUMNS)


def _difference(scores: dict, reference: dict) -> dict:
    return {task: None if scores.get(task) is None or reference.get(task) is None else scores[task] - reference[task]
            for task in GENEVAL_COLUMNS}


def table2(runs: Sequence[dict]) -> Table:
    """FedUMM Table 2: GenEval-shapes accuracy of each skill and overall, in %, of the last evaluated
    round. Rows: the centralized experiments, then one per federated configuration (strategy,
    clients, α; seeds averaged), each followed by its difference to the centralized score when there
    is one centralized experiment."""
    groups = [group for group in average_seeds(runs)
              if group.get("geneval") is not None and group["kind"] in ("centralized", "federated")]
    central = [group for group in groups if group["kind"] == "centralized"]
    federated = sorted((group for group in groups if group["kind"] == "federated"),
                       key=lambda group: (group["strategy"], group["clients"], _alpha_order(group["alpha"])))
    by_strategy = len({group["strategy"] for group in federated}) > 1
    rows: list[tuple[Cell, ...]] = [(f"Centralized ({group['name']})",) + _geneval_cells(group["geneval"]) for group in central]
    reference = central[0]["geneval"] if len(central) == 1 else None
    for group in federated:
        partition = group.get("partition", "iid") if group["alpha"] is None else _alpha_label(group["alpha"])
        label = (f"{group['strategy']}, " if by_strategy else "") + f"{group['clients']} clients, {partition}"
        rows.append((f"Federated, {label}",) + _geneval_cells(group["geneval"]))
        if reference is not None:
            rows.append(("vs. centralized",) + _geneval_cells(_difference(group["geneval"], reference)))
    notes = [
        "GenEval-shapes: GenEval's prompts of six skills and its rules (detections above 0.3 confidence, 0.9 for "
        "counting, which also fails on N+1 objects; relative position by the shrunk centre offset) on images of "
        "the shapes world, judged by an analytic detector instead of Mask2Former and CLIP; accuracy in % of "
        "every generated image (eval.images_per_prompt per prompt); Overall is the mean of the six skills.",
        "vs. centralized: the row above minus the centralized row, in percentage points." if reference is not None
        else "vs. centralized: needs exactly one centralized experiment of a model that generates.",
    ]
    seeds = _seeds_note(groups)
    if seeds:
        notes.append(seeds)
    if not groups:
        notes.append("No experiment with a model that generates images: the table is empty.")
    formats = ("",) + (".1f",) * len(GENEVAL_COLUMNS)
    return Table("Table 2: text-to-image generation (GenEval-shapes), by skill", ("Configuration", *GENEVAL_COLUMNS.values()),
                 formats, tuple(rows), tuple(notes))


# ----------------------------------------------------------------------------- Table 3


def _adapters(tuning: str) -> str:
    """What a tuning mode trains, as the papers name it."""
    return {"connector": "connector", "full": "full fine-tuning"}.get(tuning, "LoRA")


def _empty_row(configuration: str, by_metric: bool) -> tuple[Cell, ...]:
    """A Table 3 row of — for a configuration without an experiment."""
    return (configuration,) + (None,) * (4 if by_metric else 3)


def _configuration(paradigm: str, tuning: str) -> str:
    return f"{paradigm} (full fine-tuning)" if tuning == "full" else f"{paradigm} + {_adapters(tuning)}"


def _paradigm_rows(groups: Sequence[dict], kind: str, paradigm: str, full: bool, by_metric: bool,
                   unit_bytes: float) -> list[tuple[Cell, ...]]:
    """Table 3 rows of the seed groups of one kind, with full fine-tuning or with adapters:
    configuration, experiment, its metric (when the table mixes metrics), score and the bytes
    uploaded per round in units of ``unit_bytes``; one row of — when there is no such experiment
    (none for federated full fine-tuning, a row FedUMM's Table 3 does not have)."""
    members = [group for group in groups if group["kind"] == kind and (group["tuning"] == "full") == full]
    if not members:
        # FedUMM's Table 3 has no federated full fine-tuning row (its Table 4 does): none is left empty
        return [] if kind == "federated" and full else [_empty_row(_configuration(paradigm, "full" if full else "lora"), by_metric)]
    return [
        (_configuration(paradigm, group["tuning"]), group["name"])
        + _metric_cell(group["metric"], by_metric)
        + (_scaled(group["estimate"], group["metric"]),
           None if group["bytes_per_round"] is None else group["bytes_per_round"] / unit_bytes)
        for group in members
    ]


def table3(runs: Sequence[dict]) -> Table:
    """FedUMM Table 3: training paradigms. Rows: centralized full fine-tuning, centralized with
    adapters, single-site full fine-tuning, single site with adapters (`local` kind) and federated,
    one row per experiment (seeds averaged); columns: the final primary score (with a "Metric"
    column when the experiments' metrics differ) and the bytes uploaded per round, in the decimal
    unit (KB, MB, GB) that fits the largest, as summary.md writes them.

    Full fine-tuning rows are the experiments with ``tuning.mode: full``; a configuration without an
    experiment shows —.
    """
    groups = average_seeds(runs)
    metrics = _metrics(groups)
    by_metric = len(metrics) > 1
    uploads = [group["bytes_per_round"] for group in groups if group["bytes_per_round"]]
    unit, unit_bytes = summary.byte_unit(max(uploads, default=GB))
    unit_size = f"10^{round(math.log10(unit_bytes))} bytes" if unit_bytes > 1 else "bytes"
    rows = [
        row
        for kind, paradigm in (("centralized", "Centralized"), ("local", "Single site"), ("federated", "Federated"))
        for full in (True, False)
        for row in _paradigm_rows(groups, kind, paradigm, full, by_metric, unit_bytes)
    ]
    score_column = summary.score_label(metrics)
    notes = [
        f"{score_column}: {_score_description(metrics)}, {_basis(groups)}; single site: each "
        "client trains on its own data only, the score is the mean over clients.",
        f"Comm.: {unit} ({unit_size}) uploaded per round by all sampled clients; centralized and "
        "single-site training upload nothing.",
        "Same data budget: per round, centralized training takes as many optimizer steps as all sampled federated "
        "clients together, and each single-site client the local epochs of a federated client.",
        "Full fine-tuning rows come from experiments with tuning.mode: full (every weight of the connector and "
        "language model trained and uploaded as a dense delta); rows without an experiment show — (no number is invented).",
    ]
    seeds = _seeds_note(groups)
    if seeds:
        notes.append(seeds)
    return Table(
        "Table 3: training paradigms",
        ("Configuration", "Experiment") + (("Metric",) if by_metric else ()) + (score_column, f"Comm. ({unit}/round)"),
        ("", "") + (("",) if by_metric else ()) + (_score_format(metrics), SIG3),
        tuple(rows),
        tuple(notes),
    )


# ----------------------------------------------------------------------------- Table 4


def round_compute(jobs: dict[int, Sequence[dict | None]]) -> dict[str, float | None]:
    """Mean over rounds of the summed `s` and `cpu_time` of each round's jobs.

    `jobs` maps a round to its jobs' benchmark records (`read_benchmark`; None: file missing). A round
    with a missing record or value is left out, since its sum would understate the round; None when
    no round is complete.
    """
    result: dict[str, float | None] = {}
    for key in ("s", "cpu_time"):
        sums = [
            sum(job[key] for job in round_jobs)  # type: ignore[index]
            for round_jobs in jobs.values()
            if round_jobs and all(job is not None and job[key] is not None for job in round_jobs)
        ]
        result[key] = fmean(sums) if sums else None
    return result


def compute_record(run: dict, client_jobs: dict[int, Sequence[dict | None]], server_jobs: dict[int, Sequence[dict | None]],
                   uploads: Sequence[dict], model_bytes: int | None) -> dict:
    """The input of `table4` for one federated run (`run_record`).

    `client_jobs` / `server_jobs`: benchmark records of the client_train / aggregate jobs by round;
    `uploads`: the rounds' aggregate.json contents (`bytes_uploaded`, `clients`); `model_bytes`: the
    size of the whole model (`fedumm.reports.accounting.model_size`), what one client would upload under full fine-tuning;
    None when it is unknown (`fedumm.reports.accounting.read_model_size`).
    """
    clients_per_round = _mean(len(upload["clients"]) for upload in uploads)
    missing = sum(job is None for jobs in (client_jobs, server_jobs) for round_jobs in jobs.values() for job in round_jobs)
    return {
        "name": run["name"],
        "group": run["group"],
        "metric": run["metric"],
        "score": run["score"],
        "selected_round": run.get("selected_round"),
        "tuning": run["tuning"],
        "client": round_compute(client_jobs),
        "server": round_compute(server_jobs),
        "upload_bytes": _mean(float(upload["bytes_uploaded"]) for upload in uploads),
        "full_bytes": None if clients_per_round is None or model_bytes is None else model_bytes * clients_per_round,
        "missing_benchmarks": missing,
    }


def _gpu_hours(seconds: float | None, gpus: int) -> float | None:
    return None if seconds is None or not gpus else seconds * gpus / 3600


def _gpu_note(gpus: dict[str, int]) -> str:
    if not any(gpus.values()):
        return "No GPU is configured for client_train or aggregate (resources.*.gpu = 0): GPU-h is —."
    return (f"GPU-h = s × GPUs per job / 3600, with {gpus['client_train']} GPU(s) per client_train job and "
            f"{gpus['aggregate']} per aggregate job (resources).")


def table4(records: Sequence[dict], gpus: dict[str, int]) -> Table:
    """FedUMM Table 4: compute and communication per round of each federated experiment (seeds
    averaged), against full fine-tuning.

    `records` come from `compute_record`; `gpus` maps `client_train` and `aggregate` to the GPUs per
    job of those rules. Client columns sum a round's client jobs, server columns are its aggregation
    job, both averaged over rounds; `Comm. / full` is the upload over what full fine-tuning would
    upload (every parameter of the model per sampled client). The last column is the final primary
    score, preceded by a "Metric" column when the experiments' metrics differ.
    """
    metrics = _metrics(records)
    by_metric = len(metrics) > 1
    groups: dict[str, list[dict]] = {}
    for record in records:
        groups.setdefault(record["group"], []).append(record)
    rows = []
    for members in groups.values():
        client = {key: _mean(record["client"][key] for record in members) for key in ("s", "cpu_time")}
        server = {key: _mean(record["server"][key] for record in members) for key in ("s", "cpu_time")}
        upload = _mean(record["upload_bytes"] for record in members)
        full = _mean(record["full_bytes"] for record in members)
        ratio = None if upload is None or not full else 100 * upload / full
        rows.append((
            group_label([record["name"] for record in members]),
            _adapters(members[0].get("tuning", "joint")),
            client["s"], client["cpu_time"], _gpu_hours(client["s"], gpus["client_train"]),
            server["s"], server["cpu_time"], _gpu_hours(server["s"], gpus["aggregate"]),
            None if upload is None else upload / GB, None if full is None else full / GB, ratio,
            *_metric_cell(members[0]["metric"], by_metric),
            _scaled(estimate(record["score"] for record in members), members[0]["metric"]),
        ))
    score_column = summary.score_label(metrics)
    notes = [
        "Per round, mean over rounds, from Snakemake's benchmark files: client columns sum the round's "
        "client_train jobs (all sampled clients), server columns are its aggregate job; s is wall-clock "
        "seconds, CPU s the CPU seconds.",
        _gpu_note(gpus),
        "Tuning: what clients train and upload (LoRA adapters, the connector, or full fine-tuning's dense deltas of "
        "the connector and language model).",
        "Comm.: GB (10^9 bytes) uploaded per round by the sampled clients (bytes_uploaded of aggregate.json); "
        "Full FT: every parameter of the model at its dtype, per sampled client.",
        f"{score_column}: {_score_description(metrics)}, {_basis(records)}.",
    ]
    if not records:
        notes.append("No federated experiment.")
    if any(record["full_bytes"] is None for record in records):
        notes.append("Full FT is — where the model's size is unknown (its config could not be read, see the rule's log).")
    missing = sum(record["missing_benchmarks"] for record in records)
    if missing:
        notes.append(f"{missing} benchmark file(s) missing or unreadable: rounds lacking one are left out of the means.")
    repeated = [f"{group_label([r['name'] for r in members])} ({len(members)})" for members in groups.values() if len(members) > 1]
    if repeated:
        notes.append("Mean over the seeds of experiments that differ only in their seed (number of seeds): "
                     + ", ".join(repeated) + ".")
    return Table(
        "Table 4: compute and communication per round against full fine-tuning",
        ("Experiment", "Tuning", "Client (s)", "Client CPU (s)", "Client (GPU-h)", "Server (s)", "Server CPU (s)",
         "Server (GPU-h)", "Comm. (GB)", "Full FT comm. (GB)", "Comm. / full (%)")
        + (("Metric",) if by_metric else ()) + (score_column,),
        ("", "", ".1f", ".1f", SIG3, ".1f", ".1f", SIG3, SIG3, SIG3, SIG3) + (("",) if by_metric else ())
        + (_score_format(metrics),),
        tuple(rows),
        tuple(notes),
    )


# ----------------------------------------------------------------------------- formatting


def format_cell(value: Cell, spec: str) -> str:
    """A cell as Markdown/LaTeX show it: None as `MISSING`, numbers with the column's format spec,
    where `SIG3` means 3 significant digits without an exponent (0.0000564, 0.094, 28.6, 100); a
    mean over seeds as "52.0 ± 1.3 (n=3)" (its mean alone when it has no spread: one seed)."""
    if value is None:
        return MISSING
    if isinstance(value, Estimate):
        mean = format_cell(value.mean, spec)
        if value.sd is None:
            return mean
        return f"{mean} ± {format_cell(value.sd, spec.lstrip('+'))} (n={value.n})"
    if isinstance(value, str) or not spec:
        return str(value)
    if spec == SIG3:
        # Decimal prints the rounded value positionally, where format's "g" would switch to 5.64e-05.
        return format(Decimal(f"{value:.3g}"), "f")
    return format(value, spec)


def _has_spread(table: Table, column: int) -> bool:
    return any(isinstance(row[column], Estimate) and row[column].sd is not None for row in table.rows)


def _csv_cells(value: Cell, spread: bool) -> list:
    """A cell as CSV values: the value (a mean over seeds as its mean), and in a column with a spread
    its standard deviation and number of seeds next to it."""
    mean = value.mean if isinstance(value, Estimate) else value
    cells = ["" if mean is None else mean]
    if spread:
        estimated = isinstance(value, Estimate)
        cells += ["" if not estimated or value.sd is None else value.sd, value.n if estimated else ""]
    return cells


def to_csv(table: Table) -> str:
    """The table as CSV: the column names, then the rows; numbers at full precision, missing cells
    empty. A column holding means over seeds is followed by "<column> sd" and "<column> n"."""
    spread = [_has_spread(table, index) for index in range(len(table.columns))]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([name for column, has in zip(table.columns, spread)
                     for name in ((column, f"{column} sd", f"{column} n") if has else (column,))])
    writer.writerows([cell for value, has in zip(row, spread) for cell in _csv_cells(value, has)] for row in table.rows)
    return buffer.getvalue()


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|")


def to_markdown(table: Table) -> str:
    """The table as Markdown: a bold title, the table (numbers right-aligned), the notes as a list."""
    align = ["---:" if spec else "---" for spec in table.formats]
    lines = [
        f"**{_md_escape(table.title)}**",
        "",
        "| " + " | ".join(_md_escape(column) for column in table.columns) + " |",
        "|" + "|".join(align) + "|",
    ]
    lines += [
        "| " + " | ".join(_md_escape(format_cell(value, spec)) for value, spec in zip(row, table.formats)) + " |"
        for row in table.rows
    ]
    if table.notes:
        lines.append("")
        lines += [f"- {_md_escape(note)}" for note in table.notes]
    return "\n".join(lines) + "\n"


# LaTeX specials, and the non-ASCII characters the tables use, as text-mode LaTeX.
_LATEX = {
    "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
    "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "—": "---", "–": "--",
    "α": r"$\alpha$", "×": r"$\times$", "±": r"$\pm$",
}


def latex_escape(text: str) -> str:
    """`text` safe in a LaTeX tabular cell (character by character, so nothing is escaped twice)."""
    return "".join(_LATEX.get(char, char) for char in text)


def to_latex(table: Table) -> str:
    """The table as a booktabs `tabular` (needs `\\usepackage{booktabs}`), preceded by the title and
    notes as comments so that it can be `\\input` inside the reader's own `table` float."""
    lines = [f"% {table.title}"] + [f"% {note}" for note in table.notes]
    lines.append(r"\begin{tabular}{" + "".join("r" if spec else "l" for spec in table.formats) + "}")
    lines.append(r"\toprule")
    lines.append(" & ".join(latex_escape(column) for column in table.columns) + r" \\")
    lines.append(r"\midrule")
    lines += [
        " & ".join(latex_escape(format_cell(value, spec)) for value, spec in zip(row, table.formats)) + r" \\"
        for row in table.rows
    ]
    lines.append(r"\bottomrule")
    lines.append(r"\end{tabular}")
    return "\n".join(lines) + "\n"


FORMATTERS: dict[str, Callable[[Table], str]] = {"csv": to_csv, "md": to_markdown, "tex": to_latex}
"""Output file extension -> formatter."""


def write_table(table: Table, paths: dict[str, Path | str]) -> None:
    """Write `table` in each format of `paths` (extension -> path, see `FORMATTERS`), atomically."""
    for extension, path in paths.items():
        atomic_write_text(path, FORMATTERS[extension](table))


# ----------------------------------------------------------------------------- reading run files


def _number(text: str) -> float | None:
    """A benchmark value; Snakemake writes "NA" (or "-") when it could not measure one."""
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def read_benchmark(path: Path | str) -> dict[str, float | None] | None:
    """`s` and `cpu_time` of a Snakemake benchmark TSV (the mean over its rows when the job was
    repeated); None when the file is missing or has no data row."""
    path = Path(path)
    if not path.is_file():
        return None
    rows = list(csv.DictReader(path.read_text(encoding="utf-8").splitlines(), delimiter="\t"))
    if not rows:
        return None
    return {key: _mean(_number(row.get(key) or "") for row in rows) for key in ("s", "cpu_time")}


def read_benchmarks(paths_by_round: dict[int, Sequence[Path | str]]) -> dict[int, list[dict[str, float | None] | None]]:
    """`read_benchmark` of each round's jobs, keyed like `paths_by_round`."""
    return {round_index: [read_benchmark(path) for path in paths] for round_index, paths in paths_by_round.items()}


def read_uploads(aggregate_files: Sequence[Path | str]) -> list[dict]:
    """`bytes_uploaded` and `clients` of each round's aggregate.json."""
    uploads = []
    for path in aggregate_files:
        summary = json.loads(Path(path).read_text(encoding="utf-8"))
        uploads.append({"bytes_uploaded": summary["bytes_uploaded"], "clients": summary["clients"]})
    return uploads
