"""fedumm.reports.summary on small synthetic eval.json files: VQA, caption-only and old-format ones."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from matplotlib.figure import Figure

from fedumm.evaluation.scores import PRIMARY_METRICS
from fedumm.reports.summary import (
    FRACTION_METRICS,
    METRIC_NAMES,
    METRICS_COLUMNS,
    SUMMARY_COLUMNS,
    attack_label,
    cumulative_bytes_curve,
    eval_row,
    eval_rows,
    format_bytes,
    format_percent,
    format_score,
    metric_name,
    plot_accuracy_vs_bytes,
    plot_score_vs_round,
    score_label,
    score_vs_bytes_figure,
    score_vs_round_figure,
    summary_markdown,
    summary_rows,
    write_metrics_csv,
    write_summary,
)


def vqa_eval(rnd: int, acc: float, per_type: dict, cls: float | None, personalized: float | None = None,
             selection: float | None = None) -> dict:
    """An eval.json of a VQA v2 split as `fedumm.evaluation.scores` writes it, with a personalized mean
    and, given `selection`, the same model's score on the val split."""
    return {
        "round": rnd,
        "vqa": {"accuracy": acc, "per_answer_type": per_type, "n": 8},
        "exact_match": None,
        "classification_accuracy": cls,
        "caption": None,
        "ground": None,
        "n": 10,
        "score": acc,
        "score_metric": "vqa.accuracy",
        "majority_baseline": 0.25,
        "personalized": {
            "split": "test", "model": "global",
            "clients": {"client_0": {"score": personalized, "score_metric": "vqa.accuracy"}},
            "mean": {"score": personalized, "score_metric": "vqa.accuracy"},
        },
        "selection": None if selection is None else {"split": "val", "score_metric": "vqa.accuracy", "score": selection},
    }


def caption_eval(rnd: int, cider: float, personalized: float) -> dict:
    """An eval.json of a caption-only split (CC3M): no VQA block, CIDEr as the primary score."""
    return {
        "round": rnd,
        "vqa": None,
        "exact_match": None,
        "classification_accuracy": None,
        "caption": {"BLEU-4": 0.125, "CIDEr": cider, "n": 2},
        "ground": None,
        "n": 2,
        "score": cider,
        "score_metric": "caption.CIDEr",
        "majority_baseline": None,
        "personalized": {"split": "test", "model": "global", "clients": {}, "mean": {"score": personalized}},
    }


def legacy_eval(rnd: int, acc: float) -> dict:
    """An eval.json written before the primary score and the personalized evaluation existed."""
    return {
        "round": rnd,
        "vqa": {"accuracy": acc, "per_answer_type": {"yes/no": acc}, "n": 8},
        "classification_accuracy": None,
        "n": 8,
        "majority_baseline": 0.25,
    }


def write_json(path: Path, evaluation: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(evaluation))
    return path


@pytest.fixture
def eval_files(tmp_path: Path) -> dict[int, Path]:
    # Deliberately given out of round order.
    return {
        4: write_json(tmp_path / "r4.json", vqa_eval(4, 0.5, {"yes/no": 0.75, "other": 0.125}, 0.5, personalized=0.5625,
                                                     selection=0.65)),
        0: write_json(tmp_path / "r0.json", vqa_eval(0, 0.25, {"yes/no": 0.5, "other": 0.0}, None, personalized=0.25,
                                                     selection=0.3)),
        2: write_json(tmp_path / "r2.json", vqa_eval(2, 0.625, {"yes/no": 1.0, "other": 0.25}, 0.75, personalized=0.6875,
                                                     selection=0.6)),
    }


@pytest.fixture
def caption_files(tmp_path: Path) -> dict[int, Path]:
    return {
        r: write_json(tmp_path / "cc3m" / f"r{r}.json", caption_eval(r, cider, cider - 0.5))
        for r, cider in ((1, 0.75), (2, 1.3125), (3, 1.125))
    }


# ----------------------------------------------------------------------------- metrics.csv


NO_GENEVAL_SUMMARY = {"final_geneval_overall": None, "geneval_empty_prompt": None, "geneval_sampling": None,
                      "geneval_tasks": None}
NO_GENEVAL = {"geneval_overall": None, "geneval_empty_prompt": None, "geneval_sampling": None, "geneval_tasks": None}


def test_eval_rows(eval_files: dict[int, Path]) -> None:
    rows = eval_rows("fedavg", eval_files)
    assert [r["round"] for r in rows] == [0, 2, 4]
    assert rows[1] == {
        "experiment": "fedavg",
        "round": 2,
        "score_metric": "vqa.accuracy",
        "score": 0.625,
        "personalized_score": 0.6875,
        "vqa_accuracy": 0.625,
        "classification_accuracy": 0.75,
        "acc_yes/no": 1.0,
        "acc_number": None,
        "acc_other": 0.25,
        "question_types": None,  # this eval.json has no per_question_type
        **NO_GENEVAL,
        "selection_score": 0.6,
        "selection_split": "val",
        "chance": None,
    }
    assert rows[0]["classification_accuracy"] is None


def test_eval_row_of_a_caption_only_split() -> None:
    assert eval_row("cc3m", caption_eval(1, 1.25, 0.75)) == {
        "experiment": "cc3m",
        "round": 1,
        "score_metric": "caption.CIDEr",
        "score": 1.25,
        "personalized_score": 0.75,
        "vqa_accuracy": None,
        "classification_accuracy": None,
        "acc_yes/no": None,
        "acc_number": None,
        "acc_other": None,
        "question_types": None,
        **NO_GENEVAL,
        "selection_score": None,
        "selection_split": None,
        "chance": None,
    }


def test_eval_row_of_an_old_eval_json_scores_vqa_accuracy() -> None:
    row = eval_row("old", legacy_eval(3, 0.375))
    assert (row["score_metric"], row["score"], row["vqa_accuracy"]) == ("vqa.accuracy", 0.375, 0.375)
    assert row["personalized_score"] is None
    assert row["acc_yes/no"] == 0.375 and row["acc_other"] is None


def test_eval_row_without_any_score_is_an_error() -> None:
    evaluation = legacy_eval(3, 0.375) | {"vqa": None}
    with pytest.raises(ValueError, match="round 3 has neither a score nor a VQA accuracy"):
        eval_row("broken", evaluation)


def test_eval_rows_rejects_mismatched_round(eval_files: dict[int, Path]) -> None:
    with pytest.raises(ValueError, match="holds round 2"):
        eval_rows("fedavg", {3: eval_files[2]})


def read_csv(path: Path) -> list[dict]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_write_metrics_csv(tmp_path: Path, eval_files: dict[int, Path]) -> None:
    path = tmp_path / "out" / "metrics.csv"
    write_metrics_csv(eval_rows("fedavg", eval_files), path)
    rows = read_csv(path)
    assert list(rows[0]) == [
        "experiment", "round", "score_metric", "score", "personalized_score", "vqa_accuracy",
        "classification_accuracy", "acc_yes/no", "acc_number", "acc_other", "geneval_overall",
        "geneval_empty_prompt", "selection_score",
    ]
    assert list(METRICS_COLUMNS) == list(rows[0])
    assert [r["round"] for r in rows] == ["0", "2", "4"]
    assert rows[2]["score_metric"] == "vqa.accuracy" and rows[2]["score"] == "0.5"
    assert rows[2]["personalized_score"] == "0.5625"
    assert rows[2]["vqa_accuracy"] == "0.5"
    assert rows[2]["acc_other"] == "0.125"
    assert rows[0]["classification_accuracy"] == "" and rows[2]["selection_score"] == "0.65"
    assert [p.name for p in path.parent.iterdir()] == ["metrics.csv"]  # no temp file left


def test_write_metrics_csv_of_a_caption_only_split(tmp_path: Path, caption_files: dict[int, Path]) -> None:
    path = tmp_path / "metrics.csv"
    write_metrics_csv(eval_rows("cc3m", caption_files), path)
    assert path.read_text().splitlines()[1:] == [
        "cc3m,1,caption.CIDEr,0.75,0.25,,,,,,,,",
        "cc3m,2,caption.CIDEr,1.3125,0.8125,,,,,,,,",
        "cc3m,3,caption.CIDEr,1.125,0.625,,,,,,,,",
    ]


# ----------------------------------------------------------------------------- summary


def experiments(eval_files: dict[int, Path]) -> list[dict]:
    fedavg = {
        "name": "fedavg", "kind": "federated", "strategy": "fedavg", "label": "fedprox (μ=0.01)", "clients": 4,
        "alpha": 0.5, "rounds": 4, "majority_baseline": 0.25, "metrics": eval_rows("fedavg", eval_files),
        "bytes_uploaded": [1_000_000, 2_000_000, 3_000_000, 4_000_000],
    }
    central = {
        "name": "centralized", "kind": "centralized", "strategy": None, "label": None, "clients": 1,
        "alpha": None, "rounds": 4, "majority_baseline": 0.25, "bytes_uploaded": [],
        "metrics": [
            eval_row("centralized", vqa_eval(0, 0.25, {}, None, selection=0.25)),
            eval_row("centralized", vqa_eval(2, 0.75, {}, None, selection=0.7)),
            eval_row("centralized", vqa_eval(4, 0.75, {}, None, selection=0.7)),
        ],
    }
    return [fedavg, central]


def caption_experiment(caption_files: dict[int, Path]) -> dict:
    return {
        "name": "cc3m", "kind": "federated", "strategy": "fedavg", "label": "fedavg", "clients": 2, "alpha": None,
        "rounds": 3, "majority_baseline": None, "metrics": eval_rows("cc3m", caption_files),
        "bytes_uploaded": [1000, 1000, 1000],
    }


def test_summary_rows(eval_files: dict[int, Path]) -> None:
    fedavg, central = summary_rows(experiments(eval_files))
    assert fedavg == {
        "name": "fedavg", "kind": "federated", "strategy": "fedavg", "label": "fedprox (μ=0.01)", "robust": None, "attack": None,
        "clients": 4, "alpha": 0.5, "rounds": 4, "score_metric": "vqa.accuracy", "final_score": 0.5,
        # round 4 has the best val score (0.65), although round 2 has the best test score: selection never reads test
        "selected_score": 0.5, "selected_round": 4, "selection_split": "val", "personalized_score": 0.5625,
        "final_vqa_accuracy": 0.5,
        "majority_baseline": 0.25, **NO_GENEVAL_SUMMARY, "question_types": None, "final_classification_accuracy": 0.5,
        "bytes_uploaded_per_round": 2_500_000, "chance": None, "dataset": None,
    }
    # summary.csv's columns, plus what Table 2 and summary.md read besides (the skills, the sampling)
    assert [key for key in fedavg if key in SUMMARY_COLUMNS] == list(SUMMARY_COLUMNS)
    assert set(fedavg) - set(SUMMARY_COLUMNS) == {"geneval_tasks", "geneval_sampling", "question_types",
                                                  "final_classification_accuracy", "chance", "dataset"}
    assert central["selected_round"] == 2  # tie with round 4 goes to the earlier round
    assert central["final_score"] == 0.75 and central["final_vqa_accuracy"] == 0.75
    assert central["personalized_score"] is None
    assert central["bytes_uploaded_per_round"] is None


def test_summary_row_of_a_caption_only_experiment(caption_files: dict[int, Path]) -> None:
    (row,) = summary_rows([caption_experiment(caption_files)])
    assert row == {
        "name": "cc3m", "kind": "federated", "strategy": "fedavg", "label": "fedavg", "robust": None, "attack": None,
        "clients": 2, "alpha": None, "rounds": 3, "score_metric": "caption.CIDEr", "final_score": 1.125,
        "selected_score": None, "selected_round": None, "selection_split": None, "personalized_score": 0.625,
        "final_vqa_accuracy": None,
        "majority_baseline": None, **NO_GENEVAL_SUMMARY, "question_types": None, "final_classification_accuracy": None,
        "bytes_uploaded_per_round": 1000, "chance": None, "dataset": None,
    }


def test_summary_row_of_old_eval_json_files(tmp_path: Path) -> None:
    files = {r: write_json(tmp_path / f"r{r}.json", legacy_eval(r, acc)) for r, acc in ((1, 0.5), (2, 0.375))}
    experiment = experiments({})[0] | {"metrics": eval_rows("old", files), "bytes_uploaded": [10.0, 30.0]}
    (row,) = summary_rows([experiment])
    assert row["score_metric"] == "vqa.accuracy"
    assert (row["final_score"], row["selected_score"], row["selected_round"]) == (0.375, None, None)
    assert row["final_vqa_accuracy"] == 0.375 and row["personalized_score"] is None


def test_summary_rows_needs_metrics(eval_files: dict[int, Path]) -> None:
    broken = experiments(eval_files)[0] | {"metrics": []}
    with pytest.raises(ValueError, match="no evaluated round"):
        summary_rows([broken])


def test_summary_rows_rejects_rounds_scored_by_different_metrics(eval_files: dict[int, Path]) -> None:
    fedavg = experiments(eval_files)[0]
    fedavg["metrics"][1] |= {"score_metric": "caption.CIDEr"}
    with pytest.raises(ValueError, match=r"'fedavg' scores its rounds by different metrics \['caption.CIDEr', 'vqa.accuracy'\]"):
        summary_rows([fedavg])


def test_write_summary(tmp_path: Path, eval_files: dict[int, Path]) -> None:
    csv_path, md_path = tmp_path / "summary.csv", tmp_path / "summary.md"
    write_summary(summary_rows(experiments(eval_files)), csv_path, md_path)

    rows = read_csv(csv_path)
    assert list(rows[0]) == [
        "name", "kind", "strategy", "label", "robust", "attack", "clients", "alpha", "rounds", "score_metric", "final_score",
        "selected_score", "selected_round", "selection_split", "personalized_score", "final_vqa_accuracy",
        "majority_baseline", "final_geneval_overall", "geneval_empty_prompt", "bytes_uploaded_per_round",
    ]
    assert rows[0]["bytes_uploaded_per_round"] == "2500000.0"
    assert rows[0]["score_metric"] == "vqa.accuracy"
    assert rows[0]["final_score"] == "0.5" and rows[0]["final_vqa_accuracy"] == "0.5"
    assert rows[0]["personalized_score"] == "0.5625"
    assert rows[1]["alpha"] == "" and rows[1]["strategy"] == "" and rows[1]["personalized_score"] == ""

    lines = md_path.read_text().splitlines()
    assert lines[0] == "# Experiment summary"
    assert lines[2] == (
        "Majority-answer baseline (always the most frequent training answer): 25.0% (VQA acc.)."
    )
    assert lines[4].startswith("Final: the score of the last evaluated round. Selected: the score at the evaluated round "
                               "whose model scored best on the val split")
    assert lines[6] == (
        "| Experiment | Kind | Strategy | Clients | Alpha | Rounds | Metric | Final | Selected | Selected round "
        "| Personalized | Majority baseline | Uploaded / round |"
    )
    assert lines[8:] == [
        "| fedavg | federated | fedprox (μ=0.01) | 4 | 0.5 | 4 | VQA acc. | 50.0% | 50.0% | 4 | 56.2% | 25.0% | 2.5 MB |",
        "| centralized | centralized | n/a | pooled | pooled | 4 | VQA acc. | 75.0% | 75.0% | 2 | n/a | 25.0% | n/a |",
    ]


def test_summary_markdown_labels_robust_rules_and_attacks(eval_files: dict[int, Path]) -> None:
    honest, _ = experiments(eval_files)
    attacked = honest | {"name": "attacked", "robust": "median", "label": "fedavg + median",
                         "attack": attack_label({"kind": "sign_flip", "clients": [0, 1], "scale": 10.0}, 4)}
    lines = summary_markdown(summary_rows([honest, attacked])).splitlines()
    assert lines[6].startswith("| Experiment | Kind | Strategy | Attack | Clients |")
    assert lines[8].startswith("| fedavg | federated | fedprox (μ=0.01) | none | 4 |")
    assert lines[9].startswith("| attacked | federated | fedavg + median | sign_flip ×10, 2 of 4 clients from round 1 | 4 |")
    assert attack_label({"kind": "gaussian", "fraction": 0.3, "from_round": 2}, 10) == "gaussian, 3 of 10 clients from round 2"


def test_summary_of_a_caption_only_experiment(tmp_path: Path, caption_files: dict[int, Path]) -> None:
    csv_path, md_path = tmp_path / "summary.csv", tmp_path / "summary.md"
    write_summary(summary_rows([caption_experiment(caption_files)]), csv_path, md_path)
    (row,) = read_csv(csv_path)
    assert (row["score_metric"], row["final_score"], row["selected_score"]) == ("caption.CIDEr", "1.125", "")
    assert row["final_vqa_accuracy"] == "" and row["majority_baseline"] == ""
    lines = md_path.read_text().splitlines()
    assert lines[2] == "Majority-answer baseline: none (only VQA accuracy and exact match have one)."
    # CIDEr is not a fraction: two decimals, no percentage.
    assert lines[4].startswith("Final: the score of the last evaluated round. No experiment scores a selection split")
    assert lines[8:] == ["| cc3m | federated | fedavg | 2 | iid | 3 | CIDEr | 1.12 | n/a | n/a | 0.62 | n/a | 1.0 KB |"]


def test_summary_markdown_mixes_metrics_and_baselines(eval_files: dict[int, Path], caption_files: dict[int, Path]) -> None:
    rows = summary_rows([experiments(eval_files)[0], caption_experiment(caption_files)])
    lines = summary_markdown(rows).splitlines()
    assert lines[2] == "Majority-answer baseline: differs between experiments, see the table."
    assert [line.split(" | ")[6:9] for line in lines[8:]] == [["VQA acc.", "50.0%", "50.0%"], ["CIDEr", "1.12", "n/a"]]


def test_summary_markdown_same_baseline_of_different_metrics_is_not_merged(eval_files: dict[int, Path]) -> None:
    fedavg, central = summary_rows(experiments(eval_files))
    exact = central | {"score_metric": "exact_match.accuracy"}
    assert "differs between experiments" in summary_markdown([fedavg, exact]).splitlines()[2]


def test_summary_markdown_differing_baselines(tmp_path: Path, eval_files: dict[int, Path]) -> None:
    exps = experiments(eval_files)
    exps[1]["majority_baseline"] = 0.5
    md_path = tmp_path / "summary.md"
    write_summary(summary_rows(exps), tmp_path / "summary.csv", md_path)
    assert "differs between experiments" in md_path.read_text()


# ----------------------------------------------------------------------------- formatting


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


@pytest.mark.parametrize(
    ("value", "metric", "text"),
    [(0.41349, "vqa.accuracy", "41.3%"), (0.5, "exact_match.accuracy", "50.0%"),
     (0.25, "classification_accuracy", "25.0%"), (0.125, "ground.accuracy@0.5", "12.5%"),
     (1.2749, "caption.CIDEr", "1.27"), (0.5, "caption.BLEU-4", "0.50"), (None, "caption.CIDEr", "n/a")],
)
def test_format_score(value: float | None, metric: str, text: str) -> None:
    assert format_score(value, metric) == text


def test_metric_names() -> None:
    assert [metric_name(m) for m in ("vqa.accuracy", "exact_match.accuracy", "classification_accuracy",
                                     "caption.CIDEr", "ground.accuracy@0.5", "ground.mean_iou")] == [
        "VQA acc.", "EM", "Class. acc.", "CIDEr", "Acc@0.5", "ground.mean_iou",
    ]


def test_every_primary_metric_has_a_name_and_a_unit() -> None:
    # In evaluate's priority order, so that tables list metrics in that order too.
    assert list(METRIC_NAMES) == [path for _, path in PRIMARY_METRICS]
    assert FRACTION_METRICS == set(METRIC_NAMES) - {"caption.CIDEr"}


def test_score_label() -> None:
    assert score_label(["vqa.accuracy", "vqa.accuracy"]) == "VQA acc. (%)"
    assert score_label(["caption.CIDEr"]) == "CIDEr"
    assert score_label(["vqa.accuracy", "exact_match.accuracy"]) == "Primary score (%)"
    assert score_label(["vqa.accuracy", "caption.CIDEr"]) == "Primary score"


# ----------------------------------------------------------------------------- figures


def legend(fig: Figure) -> list[str]:
    return [text.get_text() for text in fig.axes[0].get_legend().get_texts()]


def line_values(fig: Figure) -> list[list[float]]:
    return [list(line.get_ydata()) for line in fig.axes[0].get_lines()]


def test_score_vs_round_figure_of_one_metric() -> None:
    curves = {"local": [(2, 0.375), (0, 0.125)], "fedavg": [(0, 0.25), (2, 0.5)]}
    fig = score_vs_round_figure(curves, {"local": "vqa.accuracy", "fedavg": "vqa.accuracy"}, baseline=0.25)
    ax = fig.axes[0]
    assert (ax.get_ylabel(), ax.get_title()) == ("VQA acc. (%)", "VQA acc. per round")
    assert legend(fig) == ["fedavg", "local", "majority-answer baseline"]
    assert line_values(fig) == [[25.0, 50.0], [12.5, 37.5], [25.0, 25.0]]


def test_score_vs_round_figure_of_cider_is_unscaled() -> None:
    fig = score_vs_round_figure({"cc3m": [(1, 0.75), (2, 1.25)]}, {"cc3m": "caption.CIDEr"}, baseline=None)
    assert (fig.axes[0].get_ylabel(), fig.axes[0].get_title()) == ("CIDEr", "CIDEr per round")
    assert legend(fig) == ["cc3m"]
    assert line_values(fig) == [[0.75, 1.25]]


def test_score_vs_round_figure_of_mixed_metrics_names_them_in_the_legend() -> None:
    curves = {"vqa": [(1, 0.5)], "cc3m": [(1, 1.25)]}
    fig = score_vs_round_figure(curves, {"vqa": "vqa.accuracy", "cc3m": "caption.CIDEr", "unused": "x"}, baseline=None)
    assert fig.axes[0].get_ylabel() == "Primary score"
    assert legend(fig) == ["cc3m (CIDEr)", "vqa (VQA acc.)"]
    assert line_values(fig) == [[1.25], [0.5]]  # one axis, one unit: no percent scaling


def test_plot_is_deterministic_png(tmp_path: Path) -> None:
    curves = {"local": [(0, 0.2), (2, 0.3)], "fedavg": [(2, 0.45), (0, 0.2), (4, 0.5)]}
    metrics = {"local": "vqa.accuracy", "fedavg": "vqa.accuracy"}
    first, second = tmp_path / "a" / "score.png", tmp_path / "b" / "score.png"
    plot_score_vs_round(curves, metrics, first, baseline=0.25)
    plot_score_vs_round(dict(reversed(curves.items())), metrics, second, baseline=0.25)
    data = first.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert b"Software" not in data
    assert data == second.read_bytes()


def test_plot_without_baseline(tmp_path: Path) -> None:
    path = tmp_path / "score.png"
    plot_score_vs_round({"cc3m": [(0, 0.1)]}, {"cc3m": "caption.CIDEr"}, path, baseline=None)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cumulative_bytes_curve() -> None:
    metrics = [{"round": 4, "score": 0.5}, {"round": 0, "score": 0.1}, {"round": 2, "score": 0.3}]
    assert cumulative_bytes_curve(metrics, [1e6, 2e6, 3e6, 4e6]) == [(0.0, 0.1), (3e6, 0.3), (10e6, 0.5)]
    with pytest.raises(ValueError, match="bytes for 2 rounds"):
        cumulative_bytes_curve(metrics, [1e6, 2e6])


def test_cumulative_bytes_curve_of_a_caption_only_experiment(caption_files: dict[int, Path]) -> None:
    rows = eval_rows("cc3m", caption_files)
    assert cumulative_bytes_curve(rows, [1000, 2000, 3000]) == [(1000, 0.75), (3000, 1.3125), (6000, 1.125)]


def test_score_vs_bytes_figure_labels_and_units() -> None:
    curves = {"fedavg": [(0.0, 0.125), (3e6, 0.375)]}
    fig = score_vs_bytes_figure(curves, {"central": 0.5}, {"fedavg": "vqa.accuracy", "central": "vqa.accuracy"})
    ax = fig.axes[0]
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("Cumulative bytes uploaded by clients (MB)", "VQA acc. (%)")
    assert legend(fig) == ["fedavg", "central (no upload)"]
    assert line_values(fig) == [[12.5, 37.5], [50.0, 50.0]]

    mixed = score_vs_bytes_figure(curves, {"central": 1.5}, {"fedavg": "vqa.accuracy", "central": "caption.CIDEr"})
    assert mixed.axes[0].get_ylabel() == "Primary score"
    assert legend(mixed) == ["fedavg (VQA acc.)", "central (CIDEr) (no upload)"]
    assert line_values(mixed) == [[0.125, 0.375], [1.5, 1.5]]


def test_accuracy_vs_bytes_plot_is_deterministic_png(tmp_path: Path) -> None:
    curves = {"fedavg": [(0.0, 0.1), (3e6, 0.3)], "fedcmp": [(3e6, 0.35), (0.0, 0.1)]}
    references = {"centralized": 0.5, "local": 0.2}
    metrics = dict.fromkeys([*curves, *references], "vqa.accuracy")
    first, second = tmp_path / "a" / "bytes.png", tmp_path / "b" / "bytes.png"
    plot_accuracy_vs_bytes(curves, references, metrics, first)
    plot_accuracy_vs_bytes(dict(reversed(curves.items())), dict(reversed(references.items())), metrics, second)
    data = first.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert data == second.read_bytes()
    plot_accuracy_vs_bytes({}, {}, {}, tmp_path / "empty.png")  # nothing to draw still writes a figure
    assert (tmp_path / "empty.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_lineage_reads_rounds_past_999_from_the_round_directory(tmp_path: Path) -> None:
    from fedumm.reports.lineage import lineage_records

    files = []
    for relative in ("round_1000/global", "round_999/global", "round_1200/clients/1", "round_000/global"):
        path = tmp_path / "results" / "round_7" / relative / "adapter_model.safetensors"  # an experiment named round_7
        path.parent.mkdir(parents=True)
        path.write_bytes(relative.encode())
        files.append(path)
    records = lineage_records(files, "hash", "code")
    assert [(r["round"], r["adapter"]) for r in records] == [(0, "global"), (999, "global"), (1000, "global"), (1200, "1")]


def test_an_experiment_keeps_its_colour_and_marker_across_figures() -> None:
    """score_vs_round.png and accuracy_vs_bytes.png draw the same experiment in the same colour,
    whatever the order or kind (curve or no-upload line) it is drawn in."""
    from matplotlib.colors import to_hex

    from fedumm.reports import summary

    metrics = dict.fromkeys(("zeta", "alpha", "central"), "vqa.accuracy")
    by_round = summary.score_vs_round_figure({"zeta": [(1, 0.5)], "alpha": [(1, 0.4)], "central": [(1, 0.6)]}, metrics, None)
    by_bytes = summary.score_vs_bytes_figure({"zeta": [(1e6, 0.5)], "alpha": [(1e6, 0.4)]}, {"central": 0.6}, metrics)

    def colours(figure) -> dict[str, str]:
        return {line.get_label().removesuffix(" (no upload)"): to_hex(line.get_color()) for line in figure.axes[0].get_lines()}

    assert colours(by_round) == colours(by_bytes)
    assert len(set(colours(by_round).values())) == 3
    # Hollow markers of three shapes: two experiments with the same score at a round stay visible.
    markers = {line.get_label(): (line.get_marker(), line.get_markerfacecolor()) for line in by_round.axes[0].get_lines()}
    assert markers == {"alpha": ("o", "none"), "central": ("s", "none"), "zeta": ("^", "none")}


def test_summary_markdown_shows_accuracy_by_question_type(eval_files: dict[int, Path]) -> None:
    fedavg, central = experiments(eval_files)
    fedavg["metrics"][-1]["question_types"] = {"how many": 0.75, "what color is the": 0.5}
    central["metrics"][-1]["question_types"] = {"how many": 1.0, "where is the": 0.25}
    lines = summary_markdown(summary_rows([fedavg, central])).splitlines()
    at = lines.index("## Accuracy by question type (last evaluated round)")
    assert lines[at + 2 :] == [
        "| Experiment | how many | what color is the | where is the | classification |",
        "|---|---:|---:|---:|---:|",
        "| fedavg | 75.0% | 50.0% | n/a | 50.0% |",
        "| centralized | 100.0% | n/a | 25.0% | n/a |",
    ]
    # with the chance eval.json reports: a chance row per dataset, and * on cells not above it
    chance = {"per_question_type": {"how many": 0.75, "what color is the": 0.25, "where is the": 0.125},
              "classification_accuracy": 0.25}
    for experiment in (fedavg, central):
        experiment["dataset"] = "shapes"
        experiment["metrics"][-1]["chance"] = chance
    lines = summary_markdown(summary_rows([fedavg, central])).splitlines()
    at = lines.index("## Accuracy by question type (last evaluated round)")
    assert lines[at + 4 :] == [
        "| *chance (shapes)* | 75.0% | 25.0% | 12.5% | 25.0% |",
        "| fedavg | 75.0%* | 50.0% | n/a | 50.0% |",
        "| centralized | 100.0% | n/a | 25.0% | n/a |",
        "",
        "\\* not above the type's chance: the model has not learnt that question type.",
    ]


def test_seed_replicates_are_one_curve_with_a_band() -> None:
    from matplotlib.collections import PolyCollection

    from fedumm.reports import replicates

    curves = {f"sweep_c4_a0.5_fedavg_s{seed}": [(0, 0.1), (3, score)] for seed, score in enumerate((0.5, 0.6, 0.7))}
    curves["central"] = [(0, 0.1), (3, 0.8)]
    groups = {name: "sweep" for name in curves} | {"central": "central"}
    merged = replicates.replicate_curves(curves, groups)
    assert set(merged) == {"sweep_c4_a0.5_fedavg", "central"}
    (first, last) = merged["sweep_c4_a0.5_fedavg"]
    assert first == (0, replicates.Estimate(pytest.approx(0.1), 0.0, 3))
    assert last[0] == 3 and last[1].mean == pytest.approx(0.6) and last[1].sd == pytest.approx(0.1)
    assert merged["central"][1][1] == replicates.Estimate(0.8, None, 1)

    metrics = {name: "vqa.accuracy" for name in merged}
    ax = score_vs_round_figure(merged, metrics, baseline=None).axes[0]
    labels = ax.get_legend_handles_labels()[1]
    assert labels == ["central", "sweep_c4_a0.5_fedavg (mean ± sd, 3 seeds)"]
    (band,) = [child for child in ax.get_children() if isinstance(child, PolyCollection)]
    at_round_3 = [y for x, y in band.get_paths()[0].vertices if x == 3]
    assert min(at_round_3) == pytest.approx(50.0) and max(at_round_3) == pytest.approx(70.0)  # 60 % ± 10 points
    by_bytes = score_vs_bytes_figure({"fed": merged["sweep_c4_a0.5_fedavg"]}, {"central": replicates.Estimate(0.8, 0.05, 2)},
                                     {"fed": "vqa.accuracy", "central": "vqa.accuracy"}).axes[0]
    assert "central (no upload) (mean ± sd, 2 seeds)" in by_bytes.get_legend_handles_labels()[1]
    with pytest.raises(ValueError, match="different lengths"):
        replicates.replicate_curves({"a_s0": [(0, 0.1)], "a_s1": [(0, 0.1), (1, 0.2)]}, {"a_s0": "g", "a_s1": "g"})
