"""fedumm.report on small synthetic eval.json files."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from fedumm.report import (
    eval_rows,
    format_bytes,
    format_percent,
    plot_score_vs_round,
    summary_rows,
    write_metrics_csv,
    write_summary,
)


def write_eval(path: Path, rnd: int, acc: float, per_type: dict, cls: float | None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        json.dumps(
            {
                "round": rnd,
                "vqa": {"accuracy": acc, "per_answer_type": per_type, "n": 8},
                "classification_accuracy": cls,
                "n": 10,
                "majority_baseline": 0.25,
            }
        )
    )
    return path


@pytest.fixture
def eval_files(tmp_path: Path) -> dict[int, Path]:
    # Deliberately given out of round order.
    return {
        4: write_eval(tmp_path / "r4.json", 4, 0.5, {"yes/no": 0.75, "other": 0.125}, 0.5),
        0: write_eval(tmp_path / "r0.json", 0, 0.25, {"yes/no": 0.5, "other": 0.0}, None),
        2: write_eval(tmp_path / "r2.json", 2, 0.625, {"yes/no": 1.0, "other": 0.25}, 0.75),
    }


def test_eval_rows(eval_files: dict[int, Path]) -> None:
    rows = eval_rows("fedavg", eval_files)
    assert [r["round"] for r in rows] == [0, 2, 4]
    assert rows[1] == {
        "experiment": "fedavg",
        "round": 2,
        "vqa_accuracy": 0.625,
        "classification_accuracy": 0.75,
        "acc_yes/no": 1.0,
        "acc_number": None,
        "acc_other": 0.25,
    }
    assert rows[0]["classification_accuracy"] is None


def test_eval_rows_rejects_mismatched_round(eval_files: dict[int, Path]) -> None:
    with pytest.raises(ValueError, match="holds round 2"):
        eval_rows("fedavg", {3: eval_files[2]})


def test_write_metrics_csv(tmp_path: Path, eval_files: dict[int, Path]) -> None:
    path = tmp_path / "out" / "metrics.csv"
    write_metrics_csv(eval_rows("fedavg", eval_files), path)
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == [
        "experiment", "round", "vqa_accuracy", "classification_accuracy",
        "acc_yes/no", "acc_number", "acc_other",
    ]
    assert [r["round"] for r in rows] == ["0", "2", "4"]
    assert rows[2]["vqa_accuracy"] == "0.5"
    assert rows[2]["acc_other"] == "0.125"
    assert rows[0]["classification_accuracy"] == ""
    assert [p.name for p in path.parent.iterdir()] == ["metrics.csv"]  # no temp file left


def experiments(eval_files: dict[int, Path]) -> list[dict]:
    fedavg = {
        "name": "fedavg", "kind": "federated", "strategy": "fedavg", "clients": 4, "alpha": 0.5,
        "rounds": 4, "majority_baseline": 0.25, "metrics": eval_rows("fedavg", eval_files),
        "bytes_uploaded": [1_000_000, 2_000_000, 3_000_000, 4_000_000],
    }
    central = {
        "name": "centralized", "kind": "centralized", "strategy": None, "clients": 1,
        "alpha": None, "rounds": 4, "majority_baseline": 0.25, "bytes_uploaded": [],
        "metrics": [
            {"round": 0, "vqa_accuracy": 0.25},
            {"round": 2, "vqa_accuracy": 0.75},
            {"round": 4, "vqa_accuracy": 0.75},
        ],
    }
    return [fedavg, central]


def test_summary_rows(eval_files: dict[int, Path]) -> None:
    fedavg, central = summary_rows(experiments(eval_files))
    assert fedavg == {
        "name": "fedavg", "kind": "federated", "strategy": "fedavg", "clients": 4, "alpha": 0.5,
        "rounds": 4, "final_vqa_accuracy": 0.5, "best_vqa_accuracy": 0.625, "best_round": 2,
        "majority_baseline": 0.25, "bytes_uploaded_per_round": 2_500_000,
    }
    assert central["best_round"] == 2  # tie with round 4 goes to the earlier round
    assert central["final_vqa_accuracy"] == 0.75
    assert central["bytes_uploaded_per_round"] is None


def test_summary_rows_needs_metrics(eval_files: dict[int, Path]) -> None:
    broken = experiments(eval_files)[0] | {"metrics": []}
    with pytest.raises(ValueError, match="no evaluated round"):
        summary_rows([broken])


def test_write_summary(tmp_path: Path, eval_files: dict[int, Path]) -> None:
    csv_path, md_path = tmp_path / "summary.csv", tmp_path / "summary.md"
    write_summary(summary_rows(experiments(eval_files)), csv_path, md_path)

    with csv_path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert rows[0]["bytes_uploaded_per_round"] == "2500000.0"
    assert rows[0]["final_vqa_accuracy"] == "0.5"
    assert rows[1]["alpha"] == "" and rows[1]["strategy"] == ""

    md = md_path.read_text()
    lines = md.splitlines()
    assert lines[0] == "# Experiment summary"
    assert lines[2] == (
        "Majority-answer baseline (always the most frequent training answer): 25.0% VQA accuracy."
    )
    assert lines[6:] == [
        "| fedavg | federated | fedavg | 4 | 0.5 | 4 | 50.0% | 62.5% | 2 | 25.0% | 2.5 MB |",
        "| centralized | centralized | n/a | 1 | iid | 4 | 75.0% | 75.0% | 2 | 25.0% | n/a |",
    ]


def test_summary_markdown_differing_baselines(tmp_path: Path, eval_files: dict[int, Path]) -> None:
    exps = experiments(eval_files)
    exps[1]["majority_baseline"] = 0.5
    md_path = tmp_path / "summary.md"
    write_summary(summary_rows(exps), tmp_path / "summary.csv", md_path)
    assert "differs between experiments" in md_path.read_text()


@pytest.mark.parametrize(
    ("n", "text"),
    [(None, "n/a"), (0, "0 B"), (999, "999 B"), (1000, "1.0 KB"), (1_536_000, "1.5 MB"),
     (2.5e9, "2.5 GB"), (2.5e12, "2500.0 GB")],
)
def test_format_bytes(n: float | None, text: str) -> None:
    assert format_bytes(n) == text


def test_format_percent() -> None:
    assert format_percent(0.41349) == "41.3%"
    assert format_percent(None) == "n/a"


def test_plot_is_deterministic_png(tmp_path: Path) -> None:
    curves = {"local": [(0, 0.2), (2, 0.3)], "fedavg": [(2, 0.45), (0, 0.2), (4, 0.5)]}
    first, second = tmp_path / "a" / "score.png", tmp_path / "b" / "score.png"
    plot_score_vs_round(curves, first, baseline=0.25)
    plot_score_vs_round(dict(reversed(curves.items())), second, baseline=0.25)
    data = first.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert b"Software" not in data
    assert data == second.read_bytes()


def test_plot_without_baseline(tmp_path: Path) -> None:
    path = tmp_path / "score.png"
    plot_score_vs_round({"fedavg": [(0, 0.1)]}, path, baseline=None)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
