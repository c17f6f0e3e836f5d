"""Experiment tables and figures: per-round metrics, the cross-experiment summary, score curves
against round and against bytes communicated (the papers' tables are in `fedumm.reports.tables`).

Functions take plain Python values; only `read_eval` and the `write_*`/`plot_*` functions touch
files, and every output is written atomically (`fedumm.io`). Each experiment is ranked by its
primary score (eval.json's `score`, named by `score_metric`): an accuracy in [0, 1] or CIDEr,
unscaled as `fedumm.evaluation.scores` produces them; accuracies are shown as percentages only in Markdown
and figures (`format_score`, `score_scale`).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Collection, Iterable, Mapping, Sequence
from pathlib import Path
from statistics import fmean
from typing import TYPE_CHECKING, Any

from fedumm.federated.attacks import attacker_count
from fedumm.io import atomic_path, atomic_write_text
from fedumm.reports import identity
from fedumm.reports.replicates import Estimate

if TYPE_CHECKING:
    from matplotlib.figure import Figure

METRICS_COLUMNS: tuple[str, ...] = (
    "experiment", "round", "score_metric", "score", "personalized_score", "vqa_accuracy",
    "classification_accuracy", "acc_yes/no", "acc_number", "acc_other", "geneval_overall",
    "geneval_empty_prompt", "selection_score",
)
"""Columns of metrics.csv, one row per evaluated round."""

SUMMARY_COLUMNS: tuple[str, ...] = (
    "name", "kind", "strategy", "label", "robust", "attack", "clients", "alpha", "rounds", "score_metric", "final_score",
    "selected_score", "selected_round", "selection_split", "personalized_score", "final_vqa_accuracy", "majority_baseline",
    "final_geneval_overall", "geneval_empty_prompt", "bytes_uploaded_per_round",
)
"""Columns of summary.csv, one row per experiment."""

METRIC_NAMES: dict[str, str] = {
    "vqa.accuracy": "VQA acc.",
    "exact_match.accuracy": "EM",
    "classification_accuracy": "Class. acc.",
    "caption.CIDEr": "CIDEr",
    "ground.accuracy@0.5": "Acc@0.5",
}
"""Short human names of the primary metrics (`fedumm.evaluation.scores.PRIMARY_METRICS`), in their
priority order."""

FRACTION_METRICS: frozenset[str] = frozenset(
    {"vqa.accuracy", "exact_match.accuracy", "classification_accuracy", "ground.accuracy@0.5"}
)
"""Metrics whose values are fractions in [0, 1], shown as percentages. CIDEr is not one (it
ranges over [0, 10]); an unknown metric is shown as a plain number rather than mis-scaled."""

# The score of eval.json files written before the primary score existed (VQA only).
_LEGACY_METRIC = "vqa.accuracy"

# VQA v2 answer types, mapped to their metrics.csv column.
_ANSWER_TYPE_COLUMNS: dict[str, str] = {
    "yes/no": "acc_yes/no", "number": "acc_number", "other": "acc_other",
}


def metric_name(metric: str) -> str:
    """The short human name of a score path ("VQA acc."); an unknown path as itself."""
    return METRIC_NAMES.get(metric, metric)


def metric_order(metric: str) -> tuple[int, str]:
    """Sort key of metrics: `METRIC_NAMES` priority order, unknown ones last by name."""
    names = list(METRIC_NAMES)
    return (names.index(metric) if metric in names else len(names), metric)


def score_scale(metric: str) -> float:
    """The factor that turns a score of `metric` into the unit it is shown in (100: percent)."""
    return 100.0 if metric in FRACTION_METRICS else 1.0


def format_score(value: float | None, metric: str) -> str:
    """A score of `metric` as Markdown shows it: a percentage with one decimal for fractions
    ("41.3%"), two decimals otherwise (CIDEr "1.27"); None as "n/a"."""
    if value is None:
        return "n/a"
    return format_percent(value) if metric in FRACTION_METRICS else f"{value:.2f}"


def _score_title(metrics: set[str]) -> str:
    """The name of scores of `metrics`, without a unit."""
    return metric_name(next(iter(metrics))) if len(metrics) == 1 else "Primary score"


def score_label(metrics: Collection[str]) -> str:
    """The label of scores of `metrics` on one axis: the metric's name ("VQA acc. (%)", "CIDEr")
    when there is one, else "Primary score"; " (%)" when every metric is a fraction, since only
    then are the values shown as percentages (`_axis_scale`)."""
    distinct = set(metrics)
    return _score_title(distinct) + (" (%)" if _all_fractions(distinct) else "")


def _all_fractions(metrics: set[str]) -> bool:
    """Whether scores of `metrics` can share a percent axis (none is, say, CIDEr)."""
    return bool(metrics) and metrics <= FRACTION_METRICS


def read_eval(path: Path | str) -> dict:
    """Parse one round's eval.json."""
    return json.loads(Path(path).read_text(encoding="utf-8"))


def eval_score(evaluation: dict) -> tuple[str, float]:
    """(score_metric, score) of a parsed eval.json.

    eval.json files written before the primary score existed have neither key and were always
    scored by VQA accuracy, so existing result directories still summarize.
    """
    if "score" in evaluation and "score_metric" in evaluation:
        return evaluation["score_metric"], evaluation["score"]
    if evaluation.get("vqa") is None:
        raise ValueError(f"eval.json of round {evaluation['round']} has neither a score nor a VQA accuracy")
    return _LEGACY_METRIC, evaluation["vqa"]["accuracy"]


def personalized_score(evaluation: dict) -> float | None:
    """The mean primary score over clients of the personalized evaluation; None when the file has
    none (written before it existed)."""
    mean = (evaluation.get("personalized") or {}).get("mean") or {}
    return mean.get("score")


def eval_row(exp: str, evaluation: dict) -> dict:
    """One metrics row (`METRICS_COLUMNS`) from a parsed eval.json.

    The VQA columns are None when the split has no VQA records (`vqa` is null, e.g. captions
    only), and an answer type absent from the test set is None. The GenEval columns are the
    ``geneval`` block's overall score and its empty-prompt baseline (None without text-to-image records).
    """
    metric, score = eval_score(evaluation)
    vqa = evaluation.get("vqa")
    per_type = vqa["per_answer_type"] if vqa is not None else {}
    geneval = evaluation.get("geneval")
    return {
        "experiment": exp,
        "round": evaluation["round"],
        "score_metric": metric,
        "score": score,
        "personalized_score": personalized_score(evaluation),
        "vqa_accuracy": vqa["accuracy"] if vqa is not None else None,
        "classification_accuracy": evaluation["classification_accuracy"],
        **{column: per_type.get(atype) for atype, column in _ANSWER_TYPE_COLUMNS.items()},
        "geneval_overall": geneval["overall"] if geneval else None,
        "geneval_empty_prompt": geneval["empty_prompt"]["overall"] if geneval else None,
        "selection_score": (evaluation.get("selection") or {}).get("score"),
        # not metrics.csv columns: summary.md's accuracy by question type, Table 2's skills, and how
        # summary.md says the images were drawn
        "question_types": vqa.get("per_question_type") if vqa is not None else None,
        "geneval_tasks": geneval["tasks"] if geneval else None,
        "geneval_sampling": f"{geneval['images_per_prompt']} images per prompt, seed {geneval['seed']}" if geneval else None,
        "selection_split": (evaluation.get("selection") or {}).get("split"),
        "chance": evaluation.get("chance"),
    }


def eval_rows(exp: str, eval_files: dict[int, Path]) -> list[dict]:
    """Metrics rows (`METRICS_COLUMNS`) of experiment `exp`, one per eval.json, sorted by round.

    Raises ValueError if a file's "round" differs from its key, which means mis-wired inputs.
    """
    rows = []
    for round_index, path in sorted(eval_files.items()):
        row = eval_row(exp, read_eval(path))
        if row["round"] != round_index:
            raise ValueError(f"{path} holds round {row['round']}, expected round {round_index}")
        rows.append(row)
    return rows


def _csv_text(rows: Sequence[dict], columns: Sequence[str]) -> str:
    """CSV with a header; None becomes an empty cell and floats keep full precision (repr)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), lineterminator="\n")
    writer.writeheader()
    writer.writerows({column: row[column] for column in columns} for row in rows)
    return buffer.getvalue()


def write_metrics_csv(rows: Sequence[dict], path: Path | str) -> None:
    """Write metrics rows (`METRICS_COLUMNS`) to `path` as CSV, atomically."""
    atomic_write_text(path, _csv_text(rows, METRICS_COLUMNS))


def _experiment_metric(name: str, metrics: Sequence[dict]) -> str:
    """The score_metric shared by all rounds of an experiment: ranking rounds scored by different
    metrics would be meaningless, so a mix is an error."""
    used = {row["score_metric"] for row in metrics}
    if len(used) != 1:
        raise ValueError(f"experiment {name!r} scores its rounds by different metrics {sorted(used)}")
    return used.pop()


def summary_row(experiment: dict) -> dict:
    """One summary row (`SUMMARY_COLUMNS`) of an experiment.

    `experiment` has "name", "kind" ("federated", "centralized" or "local"), "strategy" (None
    when not federated), "label" (its `fedumm.reports.identity.strategy_label`), optionally "robust" (its robust rule) and "attack" (``attack_label``), "clients", "alpha" (None for an iid partition), "rounds",
    "majority_baseline", "metrics" (its `eval_rows`, at least one) and "bytes_uploaded" (bytes
    uploaded by all clients in each round; empty when nothing is communicated).

    The final score, personalized score and VQA accuracy are those of the last evaluated round;
    the selected round (`selected_round`) is the one whose model scored best on the selection split
    (``eval.select_split``, the earliest on ties), and `selected_score` the reported split's score
    there: a round chosen without looking at the reported split (None when no round has a selection
    score). Bytes per round are the mean over rounds, None when there are none.
    """
    metrics = sorted(experiment["metrics"], key=lambda row: row["round"])
    if not metrics:
        raise ValueError(f"experiment {experiment['name']!r} has no evaluated round")
    candidates = [row for row in metrics if row.get("selection_score") is not None]
    selected = max(candidates, key=lambda row: (row["selection_score"], -row["round"])) if candidates else None
    final = metrics[-1]
    uploaded = experiment["bytes_uploaded"]
    return {
        "name": experiment["name"],
        "kind": experiment["kind"],
        "strategy": experiment["strategy"],
        "label": experiment["label"],
        "robust": experiment.get("robust"),
        "attack": experiment.get("attack"),
        "clients": experiment["clients"],
        "alpha": experiment["alpha"],
        "rounds": experiment["rounds"],
        "score_metric": _experiment_metric(experiment["name"], metrics),
        "final_score": final["score"],
        "selected_score": None if selected is None else selected["score"],
        "selected_round": None if selected is None else selected["round"],
        "selection_split": None if selected is None else selected["selection_split"],
        "personalized_score": final["personalized_score"],
        "final_vqa_accuracy": final["vqa_accuracy"],
        "majority_baseline": experiment["majority_baseline"],
        "final_geneval_overall": final.get("geneval_overall"),
        "geneval_empty_prompt": final.get("geneval_empty_prompt"),
        "geneval_sampling": final.get("geneval_sampling"),
        "question_types": final.get("question_types"),
        "chance": final.get("chance"),
        "dataset": experiment.get("dataset"),
        "final_classification_accuracy": final.get("classification_accuracy"),
        "geneval_tasks": final.get("geneval_tasks"),
        "bytes_uploaded_per_round": fmean(uploaded) if uploaded else None,
    }


def summary_rows(experiments: list[dict]) -> list[dict]:
    """Summary rows of `experiments` (see `summary_row`), in the given order."""
    return [summary_row(experiment) for experiment in experiments]


def format_percent(value: float | None) -> str:
    """A [0, 1] fraction as a percentage with one decimal ("41.3%"); None as "n/a"."""
    return "n/a" if value is None else f"{100 * value:.1f}%"


def format_bytes(n: float | None) -> str:
    """A byte count in decimal SI units (1 KB = 1000 B), one decimal above bytes; None as "n/a".

    GB is the largest unit, so 2.5e12 bytes is "2500.0 GB".
    """
    if n is None:
        return "n/a"
    if n < 1000:
        return f"{n:.0f} B"
    for unit in ("KB", "MB"):
        n /= 1000
        if n < 1000:
            return f"{n:.1f} {unit}"
    return f"{n / 1000:.1f} GB"


def _md_cell(value: Any) -> str:
    """A Markdown table cell: None as "n/a", pipes escaped so they do not split the row."""
    return "n/a" if value is None else str(value).replace("|", "\\|")


def _baseline_line(rows: Sequence[dict]) -> str:
    """summary.md's majority-answer baseline line: the single value when all experiments share it
    and its metric (same test set), "none" when no experiment has one (only VQA accuracy and exact
    match have a most frequent answer), otherwise a pointer to the table's column."""
    baselines = {row["majority_baseline"] for row in rows}
    if baselines == {None}:
        return "Majority-answer baseline: none (only VQA accuracy and exact match have one)."
    pairs = {(row["majority_baseline"], row["score_metric"]) for row in rows}
    if len(pairs) != 1:
        return "Majority-answer baseline: differs between experiments, see the table."
    baseline, metric = pairs.pop()
    return (
        f"Majority-answer baseline (always the most frequent training answer): "
        f"{format_score(baseline, metric)} ({metric_name(metric)})."
    )


def summary_markdown(rows: Sequence[dict]) -> str:
    """summary.md: title, the majority-answer baseline, and one table row per experiment.

    Scores are shown in each row's own metric (`format_score`), so experiments scored by
    different metrics can share the table. The Strategy column is the run's full label
    ("fedprox (μ=0.01)", "fedavg + median"); a centralized run pools every client's data, so its
    clients and α are "pooled"; an Attack column appears when some experiment simulates one.
    """
    attacked = any(row.get("attack") for row in rows)
    generating = any(row.get("final_geneval_overall") is not None for row in rows)
    header = (
        "Experiment", "Kind", "Strategy", *(("Attack",) if attacked else ()), "Clients", "Alpha", "Rounds",
        "Metric", "Final", "Selected", "Selected round", "Personalized", "Majority baseline",
        *(("GenEval-shapes", "Empty prompt") if generating else ()), "Uploaded / round",
    )
    lines = [
        "# Experiment summary",
        "",
        _baseline_line(rows),
        "",
        selection_note(rows),
        "",
        *((geneval_note(rows), "") if generating else ()),
        "| " + " | ".join(header) + " |",
        "|" + "|".join(["---"] * len(header)) + "|",
    ]
    for row in rows:
        metric = row["score_metric"]
        cells = (
            _md_cell(row["name"]),
            _md_cell(row["kind"]),
            _md_cell(row["label"]),
            *((_md_cell(row.get("attack") or "none"),) if attacked else ()),
            *(("pooled", "pooled") if row["kind"] == "centralized" else
              (_md_cell(row["clients"]), "iid" if row["alpha"] is None else _md_cell(row["alpha"]))),
            _md_cell(row["rounds"]),
            _md_cell(metric_name(metric)),
            format_score(row["final_score"], metric),
            format_score(row["selected_score"], metric),
            _md_cell(row["selected_round"]),
            format_score(row["personalized_score"], metric),
            format_score(row["majority_baseline"], metric),
            *((format_geneval(row.get("final_geneval_overall")), format_geneval(row.get("geneval_empty_prompt")))
              if generating else ()),
            format_bytes(row["bytes_uploaded_per_round"]),
        )
        lines.append("| " + " | ".join(cells) + " |")
    lines += question_type_table(rows)
    return "\n".join(lines) + "\n"


def selection_note(rows: Sequence[dict]) -> str:
    """summary.md's line on the Final and Selected columns."""
    splits = sorted({row["selection_split"] for row in rows if row.get("selection_split")})
    if not splits:
        return ("Final: the score of the last evaluated round. No experiment scores a selection split "
                "(eval.select_split), so no round is selected.")
    return (f"Final: the score of the last evaluated round. Selected: the score at the evaluated round whose model scored "
            f"best on the {'/'.join(splits)} split (Selected round; earliest on ties), chosen without looking at the "
            "reported split; the papers' tables show it.")


def question_type_table(rows: Sequence[dict]) -> list[str]:
    """summary.md's second table: each experiment's accuracy per VQA question type ("how many",
    "what color is the", ...) and on classification records, in the last evaluated round; the
    overall score can hide a question type that a model never answers right. Above each dataset's
    experiments, its chance row: the per question-type prior (each type's most frequent training
    answer; the most frequent label for classification), what a model gets without looking at the
    image; a cell marked * is not above it. Empty without VQA."""
    types = sorted({qtype for row in rows for qtype in (row.get("question_types") or {})})
    classify = any(row.get("final_classification_accuracy") is not None for row in rows)
    if not types:
        return []
    header = ("Experiment", *types, *(("classification",) if classify else ()))
    lines = [
        "## Accuracy by question type (last evaluated round)",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|",
    ]
    by_dataset: dict[str | None, list[dict]] = {}
    for row in rows:
        by_dataset.setdefault(row.get("dataset"), []).append(row)
    marked = False
    for dataset, members in by_dataset.items():
        chance = next((row["chance"] for row in members if row.get("chance")), None)
        chance_types = (chance or {}).get("per_question_type") or {}
        chance_classification = (chance or {}).get("classification_accuracy")
        if chance is not None:
            cells = [f"*chance{f' ({dataset})' if dataset else ''}*", *(format_percent(chance_types.get(qtype)) for qtype in types)]
            if classify:
                cells.append(format_percent(chance_classification))
            lines.append("| " + " | ".join(cells) + " |")
        for row in members:
            by_type = row.get("question_types") or {}
            values = [(by_type.get(qtype), chance_types.get(qtype)) for qtype in types]
            if classify:
                values.append((row.get("final_classification_accuracy"), chance_classification))
            cells = [_md_cell(row["name"])]
            for value, reference in values:
                below = value is not None and reference is not None and value <= reference
                marked |= below
                cells.append(format_percent(value) + ("*" if below else ""))
            lines.append("| " + " | ".join(cells) + " |")
    if marked:
        lines += ["", "\\* not above the type's chance: the model has not learnt that question type."]
    return ["", *lines]


def geneval_note(rows: Sequence[dict]) -> str:
    """summary.md's line on the GenEval-shapes columns: what they are and how the images were drawn."""
    sampling = sorted({f"{row['name']}: {row['geneval_sampling']}" for row in rows if row.get("geneval_sampling")})
    return (
        "GenEval-shapes: the overall score (mean of GenEval's six task accuracies, 0 to 1) of the last evaluated "
        "round's generated images, scored by GenEval's rules with the analytic shapes detector; Empty prompt: the "
        "same model's images for an empty prompt scored against the same prompts (what the model gets without "
        f"reading the prompt). Sampling: {'; '.join(sampling)}."
    )


def format_geneval(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def write_summary(rows: Sequence[dict], csv_path: Path | str, md_path: Path | str) -> None:
    """Write summary.csv (raw values, `SUMMARY_COLUMNS`) and summary.md, each atomically."""
    atomic_write_text(csv_path, _csv_text(rows, SUMMARY_COLUMNS))
    atomic_write_text(md_path, summary_markdown(rows))


def _axis_scale(metrics: set[str]) -> float:
    """The factor of scores of `metrics` sharing one axis: percent only when every metric is a
    fraction, since one axis has one unit."""
    return 100.0 if _all_fractions(metrics) else 1.0


def _legend_label(name: str, metric: str, mixed: bool) -> str:
    """A curve's legend entry: the experiment, and its metric when the axis mixes metrics."""
    return f"{name} ({metric_name(metric)})" if mixed else name


# Hollow markers of different shapes stay apart where two experiments' points coincide.
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "h", "<")


def experiment_styles(names: Iterable[str]) -> dict[str, dict]:
    """One colour and marker per experiment, the same in every figure that draws the same
    experiments: matplotlib's tab10 (tab20 past ten experiments) and `MARKERS`, assigned in sorted
    name order, not in drawing order. Markers are hollow, so coinciding points stay visible."""
    from matplotlib import colormaps
    from matplotlib.colors import to_hex

    ordered = sorted(set(names))
    palette = colormaps["tab10" if len(ordered) <= 10 else "tab20"]
    return {
        name: {"color": to_hex(palette(index % palette.N)), "marker": MARKERS[index % len(MARKERS)],
               "markerfacecolor": "none", "markeredgewidth": 1.5}
        for index, name in enumerate(ordered)
    }


# Past this many entries the legend goes right of the axes, where it hides no curve.
LEGEND_INSIDE_MAX = 6


def _legend(fig: Figure, ax) -> None:
    """The legend inside the axes for a few entries; beside them, on a wider figure, for more."""
    entries = len(ax.get_legend_handles_labels()[0])
    if not entries:
        return
    if entries <= LEGEND_INSIDE_MAX:
        ax.legend()
        return
    width, height = fig.get_size_inches()
    columns = 1 if entries <= 20 else 2
    fig.set_size_inches(width + 2.2 * columns, max(height, 0.22 * entries / columns + 1.0))
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize="small", ncols=columns, borderaxespad=0.0)


Point = tuple[float, "float | Estimate"]
"""A curve's point: x (round, bytes) and the score there, or its mean over seeds with the spread
(`fedumm.reports.replicates.replicate_curves`)."""


def _seeds_label(label: str, values: Sequence[float | Estimate]) -> str:
    """A legend entry, saying when the curve is a mean over seeds with a band."""
    seeds = {value.n for value in values if isinstance(value, Estimate) and value.sd is not None}
    return f"{label} (mean ± sd, {max(seeds)} seeds)" if seeds else label


def _draw_curve(ax, xs: Sequence[float], values: Sequence[float | Estimate], scale: float, **style) -> None:
    """A line through the scores (the means of `Estimate` points) and, where seeds give a standard
    deviation, a band of ± one sd around it in the line's colour."""
    means = [scale * (value.mean if isinstance(value, Estimate) else value) for value in values]
    style["label"] = _seeds_label(style["label"], values)
    ax.plot(xs, means, **style)
    sds = [value.sd if isinstance(value, Estimate) else None for value in values]
    if any(sd is not None for sd in sds):
        widths = [scale * (sd or 0.0) for sd in sds]
        ax.fill_between(xs, [m - w for m, w in zip(means, widths)], [m + w for m, w in zip(means, widths)],
                        color=style["color"], alpha=0.2, linewidth=0)


def _save_png(fig: Figure, path: Path | str) -> None:
    """Write `fig` as a PNG, atomically, without the "Software" text chunk (Agg writes no
    timestamp), so that equal figures are equal files."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", metadata={"Software": None})


def score_vs_round_figure(
    curves: dict[str, list[Point]], metrics: Mapping[str, str], baseline: float | None
) -> Figure:
    """The primary score against round, one line per experiment, with the majority-answer
    baseline as a dashed horizontal line when given.

    `curves` maps an experiment (or a group of seed replicates) to its (round, score) points, a
    score over seeds drawn as its mean with a ± sd band; `metrics` each curve to its score_metric. The y axis is labelled by the metric (`score_label`); when the experiments'
    metrics differ, each legend entry names its own. Experiments are drawn in sorted order, so
    the figure does not depend on the order of `curves`.
    """
    # matplotlib is imported here: experiment_tables, which writes no figure, need not load it.
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    distinct = {metrics[name] for name in curves}
    scale, mixed = _axis_scale(distinct), len(distinct) > 1
    # A bare Figure renders with Agg for PNG and leaves pyplot's global state alone.
    fig = Figure(figsize=(6.4, 4.2), dpi=100)
    ax = fig.subplots()
    styles = experiment_styles(curves)
    for name in sorted(curves):
        points = sorted(curves[name], key=lambda point: point[0])
        _draw_curve(ax, [r for r, _ in points], [score for _, score in points], scale,
                    label=_legend_label(name, metrics[name], mixed), **styles[name])
    if baseline is not None:
        ax.axhline(scale * baseline, color="grey", linestyle="--", label="majority-answer baseline")
    ax.set_xlabel("Communication round")
    ax.set_ylabel(score_label(distinct))
    ax.set_title(f"{_score_title(distinct)} per round")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    _legend(fig, ax)
    fig.tight_layout()
    return fig


def plot_score_vs_round(
    curves: dict[str, list[Point]],
    metrics: Mapping[str, str],
    path: Path | str,
    baseline: float | None,
) -> None:
    """`score_vs_round_figure` as a PNG at `path`, byte-for-byte reproducible (`_save_png`)."""
    _save_png(score_vs_round_figure(curves, metrics, baseline), path)


def cumulative_bytes_curve(metrics: Sequence[dict], uploaded: Sequence[float]) -> list[tuple[float, float]]:
    """(bytes uploaded in rounds 1..r, primary score at round r) for each evaluated round r.

    `metrics` are an experiment's `eval_rows`, `uploaded` its `bytes_per_round` (round 1 first);
    round 0 sits at 0 bytes.
    """
    totals = [0.0]
    for size in uploaded:
        totals.append(totals[-1] + size)
    if any(row["round"] >= len(totals) for row in metrics):
        raise ValueError(f"evaluated rounds {[row['round'] for row in metrics]} but bytes for {len(uploaded)} rounds")
    return [(totals[row["round"]], row["score"]) for row in sorted(metrics, key=lambda row: row["round"])]


def byte_unit(largest: float) -> tuple[str, float]:
    """The decimal unit (name, size) in which `largest` bytes reads best on an axis."""
    for name, size in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if largest >= size:
            return name, size
    return "B", 1.0


def score_vs_bytes_figure(
    curves: dict[str, list[Point]], references: dict[str, float | Estimate], metrics: Mapping[str, str]
) -> Figure:
    """The primary score against cumulative bytes uploaded, one line per federated experiment
    (`cumulative_bytes_curve`), and each experiment that uploads nothing (centralized, local) as a
    dotted horizontal line at its final score. `metrics` maps every experiment of both to its
    score_metric, which labels the axis and legend as in `score_vs_round_figure`.
    """
    from matplotlib.figure import Figure

    distinct = {metrics[name] for name in [*curves, *references]}
    scale, mixed = _axis_scale(distinct), len(distinct) > 1
    fig = Figure(figsize=(6.4, 4.2), dpi=100)
    ax = fig.subplots()
    unit, size = byte_unit(max((b for points in curves.values() for b, _ in points), default=0.0))
    # The same experiments as score_vs_round.png, so each keeps its colour there.
    styles = experiment_styles([*curves, *references])
    for name in sorted(curves):
        points = sorted(curves[name], key=lambda point: point[0])
        _draw_curve(ax, [b / size for b, _ in points], [score for _, score in points], scale,
                    label=_legend_label(name, metrics[name], mixed), **styles[name])
    for name in sorted(references):
        reference = references[name]
        label = _seeds_label(f"{_legend_label(name, metrics[name], mixed)} (no upload)", [reference])
        mean = reference.mean if isinstance(reference, Estimate) else reference
        ax.axhline(scale * mean, linestyle=":", color=styles[name]["color"], label=label)
        if isinstance(reference, Estimate) and reference.sd is not None:
            ax.axhspan(scale * (mean - reference.sd), scale * (mean + reference.sd), color=styles[name]["color"], alpha=0.12, linewidth=0)
    ax.set_xlabel(f"Cumulative bytes uploaded by clients ({unit})")
    ax.set_ylabel(score_label(distinct))
    ax.set_title(f"{_score_title(distinct)} against communication")
    ax.grid(alpha=0.3)
    _legend(fig, ax)
    fig.tight_layout()
    return fig


def plot_accuracy_vs_bytes(
    curves: dict[str, list[Point]],
    references: dict[str, float | Estimate],
    metrics: Mapping[str, str],
    path: Path | str,
) -> None:
    """`score_vs_bytes_figure` as a PNG at `path` (accuracy_vs_bytes.png, named before scores other
    than accuracies), byte-for-byte reproducible (`_save_png`)."""
    _save_png(score_vs_bytes_figure(curves, references, metrics), path)


def bytes_per_round(kind: str, round_files: Sequence[Path | str]) -> list[float]:
    """Bytes uploaded in each round, from the rounds' aggregate.json files.

    Only federated runs communicate: the centralized baseline trains where the data is, and
    local models never leave their site.
    """
    if kind != "federated":
        return []
    return [float(json.loads(Path(path).read_text())["bytes_uploaded"]) for path in round_files]


def attack_label(attack: dict | None, clients: int) -> str | None:
    """e.g. "sign_flip ×10, 2 of 8 clients from round 1" (None without an attack)."""
    if not attack:
        return None
    count = len(attack["clients"]) if "clients" in attack else attacker_count(attack["fraction"], clients)
    factor = f" ×{attack['scale']:g}" if "scale" in attack else ""
    return f"{attack['kind']}{factor}, {count} of {clients} clients from round {attack.get('from_round', 1)}"


def experiment_entry(name: str, experiment: dict, eval_files: Sequence[Path | str], round_files: Sequence[Path | str]) -> dict:
    """The `summary_row` input of one experiment, from its resolved config and its files."""
    evaluations = {read_eval(path)["round"]: Path(path) for path in eval_files}
    partition = experiment["partition"]
    return {
        "name": name,
        "kind": experiment["kind"],
        "strategy": experiment["strategy"]["name"] if experiment["kind"] == "federated" else None,
        "label": identity.strategy_label(experiment),
        "robust": (experiment["strategy"].get("robust") or {}).get("name") if experiment["kind"] == "federated" else None,
        "attack": attack_label(experiment.get("attack"), experiment["clients"]),
        "dataset": experiment["dataset"],
        "clients": experiment["clients"],
        "alpha": partition.get("alpha") if partition["scheme"] == "dirichlet" else None,
        "rounds": experiment["rounds"],
        "majority_baseline": read_eval(next(iter(evaluations.values())))["majority_baseline"],
        "metrics": eval_rows(name, evaluations),
        "bytes_uploaded": bytes_per_round(experiment["kind"], round_files),
    }
