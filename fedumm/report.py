"""Experiment tables and figures: per-round metrics, the cross-experiment summary, score curves.

Functions take plain Python values; only `read_eval` and the `write_*`/`plot_*` functions touch
files, and every output is written atomically (`fedumm.io`). Accuracies are floats in [0, 1]
throughout (as produced by `fedumm.evaluate`) and are shown as percentages only in Markdown and
figures.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from pathlib import Path
from statistics import fmean
from typing import Any

from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from fedumm.io import atomic_path, atomic_write_text

METRICS_COLUMNS: tuple[str, ...] = (
    "experiment", "round", "vqa_accuracy", "classification_accuracy",
    "acc_yes/no", "acc_number", "acc_other",
)
"""Columns of metrics.csv, one row per evaluated round."""

SUMMARY_COLUMNS: tuple[str, ...] = (
    "name", "kind", "strategy", "clients", "alpha", "rounds", "final_vqa_accuracy",
    "best_vqa_accuracy", "best_round", "majority_baseline", "bytes_uploaded_per_round",
)
"""Columns of summary.csv, one row per experiment."""

# VQA v2 answer types, mapped to their metrics.csv column.
_ANSWER_TYPE_COLUMNS: dict[str, str] = {
    "yes/no": "acc_yes/no", "number": "acc_number", "other": "acc_other",
}


def read_eval(path: Path | str) -> dict:
    """Parse one round's eval.json."""
    return json.loads(Path(path).read_text(encoding="utf-8"))


def eval_row(exp: str, evaluation: dict) -> dict:
    """One metrics row from a parsed eval.json; an answer type absent from the test set is None."""
    per_type = evaluation["vqa"]["per_answer_type"]
    return {
        "experiment": exp,
        "round": evaluation["round"],
        "vqa_accuracy": evaluation["vqa"]["accuracy"],
        "classification_accuracy": evaluation["classification_accuracy"],
        **{column: per_type.get(atype) for atype, column in _ANSWER_TYPE_COLUMNS.items()},
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


def summary_row(experiment: dict) -> dict:
    """One summary row (`SUMMARY_COLUMNS`) of an experiment.

    `experiment` has "name", "kind" ("federated", "centralized" or "local"), "strategy" (None
    when not federated), "clients", "alpha" (None for an iid partition), "rounds",
    "majority_baseline", "metrics" (its `eval_rows`, at least one) and "bytes_uploaded" (bytes
    uploaded by all clients in each round; empty when nothing is communicated).

    The final accuracy is that of the last evaluated round; the best round is the one with the
    highest VQA accuracy, the earliest on ties; bytes per round are the mean over rounds, None
    when there are none.
    """
    metrics = sorted(experiment["metrics"], key=lambda row: row["round"])
    if not metrics:
        raise ValueError(f"experiment {experiment['name']!r} has no evaluated round")
    best = max(metrics, key=lambda row: (row["vqa_accuracy"], -row["round"]))
    uploaded = experiment["bytes_uploaded"]
    return {
        "name": experiment["name"],
        "kind": experiment["kind"],
        "strategy": experiment["strategy"],
        "clients": experiment["clients"],
        "alpha": experiment["alpha"],
        "rounds": experiment["rounds"],
        "final_vqa_accuracy": metrics[-1]["vqa_accuracy"],
        "best_vqa_accuracy": best["vqa_accuracy"],
        "best_round": best["round"],
        "majority_baseline": experiment["majority_baseline"],
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


def summary_markdown(rows: Sequence[dict]) -> str:
    """summary.md: title, the majority-answer baseline, and one table row per experiment.

    The baseline line gives the single value when all experiments share it (same test set),
    otherwise it points to the table's column.
    """
    baselines = {row["majority_baseline"] for row in rows}
    if len(baselines) == 1:
        baseline_line = (
            f"Majority-answer baseline (always the most frequent training answer): "
            f"{format_percent(baselines.pop())} VQA accuracy."
        )
    else:
        baseline_line = "Majority-answer baseline: differs between experiments, see the table."
    header = (
        "Experiment", "Kind", "Strategy", "Clients", "Alpha", "Rounds", "Final VQA acc.",
        "Best VQA acc.", "Best round", "Majority baseline", "Uploaded / round",
    )
    lines = [
        "# Experiment summary",
        "",
        baseline_line,
        "",
        "| " + " | ".join(header) + " |",
        "|" + "|".join(["---"] * len(header)) + "|",
    ]
    for row in rows:
        cells = (
            _md_cell(row["name"]),
            _md_cell(row["kind"]),
            _md_cell(row["strategy"]),
            _md_cell(row["clients"]),
            "iid" if row["alpha"] is None else _md_cell(row["alpha"]),
            _md_cell(row["rounds"]),
            format_percent(row["final_vqa_accuracy"]),
            format_percent(row["best_vqa_accuracy"]),
            _md_cell(row["best_round"]),
            format_percent(row["majority_baseline"]),
            format_bytes(row["bytes_uploaded_per_round"]),
        )
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_summary(rows: Sequence[dict], csv_path: Path | str, md_path: Path | str) -> None:
    """Write summary.csv (raw values, `SUMMARY_COLUMNS`) and summary.md, each atomically."""
    atomic_write_text(csv_path, _csv_text(rows, SUMMARY_COLUMNS))
    atomic_write_text(md_path, summary_markdown(rows))


def plot_score_vs_round(
    curves: dict[str, list[tuple[int, float]]], path: Path | str, baseline: float | None
) -> None:
    """PNG of VQA accuracy (%) against round, one line per experiment, with the majority-answer
    baseline as a dashed horizontal line when given.

    The output is byte-for-byte reproducible: experiments are drawn in sorted order, and the PNG
    carries no "Software" text chunk (Agg writes no timestamp).
    """
    # A bare Figure renders with Agg for PNG and leaves pyplot's global state alone.
    fig = Figure(figsize=(6.4, 4.2), dpi=100)
    ax = fig.subplots()
    for name in sorted(curves):
        points = sorted(curves[name])
        ax.plot([r for r, _ in points], [100 * acc for _, acc in points], marker="o", label=name)
    if baseline is not None:
        ax.axhline(100 * baseline, color="grey", linestyle="--", label="majority-answer baseline")
    ax.set_xlabel("Communication round")
    ax.set_ylabel("VQA accuracy (%)")
    ax.set_title("VQA accuracy per round")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", metadata={"Software": None})


def bytes_per_round(kind: str, round_files: Sequence[Path | str]) -> list[float]:
    """Bytes uploaded in each round, from the rounds' aggregate.json files.

    Only federated runs communicate: the centralized baseline trains where the data is, and
    local models never leave their site.
    """
    if kind != "federated":
        return []
    return [float(json.loads(Path(path).read_text())["bytes_uploaded"]) for path in round_files]


def experiment_entry(name: str, experiment: dict, eval_files: Sequence[Path | str], round_files: Sequence[Path | str]) -> dict:
    """The `summary_row` input of one experiment, from its resolved config and its files."""
    evaluations = {read_eval(path)["round"]: Path(path) for path in eval_files}
    partition = experiment["partition"]
    return {
        "name": name,
        "kind": experiment["kind"],
        "strategy": experiment["strategy"]["name"] if experiment["kind"] == "federated" else None,
        "clients": experiment["clients"],
        "alpha": partition.get("alpha") if partition["scheme"] == "dirichlet" else None,
        "rounds": experiment["rounds"],
        "majority_baseline": read_eval(next(iter(evaluations.values())))["majority_baseline"],
        "metrics": eval_rows(name, evaluations),
        "bytes_uploaded": bytes_per_round(experiment["kind"], round_files),
    }
