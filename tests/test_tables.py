"""fedumm.reports.tables on hand-made run records, benchmark TSVs and aggregate.json files."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
from transformers import CLIPConfig, CLIPVisionModel

from fedumm.models import vlm
from fedumm.reports import accounting, replicates, tables
from fedumm.reports.replicates import Estimate
from fedumm.reports.tables import MISSING, Table


def run(name: str, kind: str, score: float, *, clients: int = 2, alpha: float | None = 0.5,
        strategy: str | None = "fedavg", group: str | None = None, bytes_per_round: float | None = None,
        tuning: str = "joint", metric: str = "vqa.accuracy", label: str | None = None,
        experiment: dict | None = None, baseline: str | None = None, dataset: str = "shapes") -> dict:
    """A `tables.run_record` written by hand; `group` defaults to the name (no replicate)."""
    federated = kind == "federated"
    return {
        "name": name, "group": group or name, "kind": kind, "strategy": strategy if federated else None,
        "label": (label or strategy) if federated else None, "baseline": baseline, "dataset": dataset,
        "model": "tiny", "experiment": experiment or {}, "clients": clients, "alpha": alpha, "tuning": tuning,
        "metric": metric, "score": score, "bytes_per_round": bytes_per_round,
    }


def column(table: Table, name: str) -> list:
    """The column's cells, a mean over seeds (`Estimate`) as its mean."""
    index = table.columns.index(name)
    return [row[index].mean if isinstance(row[index], Estimate) else row[index] for row in table.rows]


def spreads(table: Table, name: str) -> list:
    """(sd, n) of the column's means over seeds, None for other cells."""
    index = table.columns.index(name)
    return [(row[index].sd, row[index].n) if isinstance(row[index], Estimate) else None for row in table.rows]


# ----------------------------------------------------------------------------- runs


def test_seed_group_ignores_only_the_seed() -> None:
    experiment = {"kind": "federated", "seed": 0, "clients": 4, "partition": {"alpha": 0.5}}
    assert replicates.seed_group(experiment) == replicates.seed_group({**experiment, "seed": 7})
    assert replicates.seed_group(experiment) != replicates.seed_group({**experiment, "clients": 8})


def test_run_record_from_a_summary_row() -> None:
    experiment = {"kind": "federated", "seed": 1, "clients": 4, "tuning": {"mode": "lora"}, "partition": {"scheme": "dirichlet"},
                  "dataset": "shapes", "model": "tiny", "baseline": "central"}
    summary = {"strategy": "fedavg", "label": "fedavg", "alpha": 0.1, "score_metric": "caption.CIDEr", "final_score": 1.25,
               "final_vqa_accuracy": None, "bytes_uploaded_per_round": 2e6}
    record = tables.run_record("fed", experiment, summary)
    assert record == {
        "name": "fed", "group": replicates.seed_group(experiment), "kind": "federated", "strategy": "fedavg",
        "label": "fedavg", "baseline": "central", "dataset": "shapes", "model": "tiny", "experiment": experiment,
        "clients": 4, "alpha": 0.1, "tuning": "lora", "metric": "caption.CIDEr", "score": 1.25,
        "bytes_per_round": 2e6, "partition": "dirichlet", "geneval": None, "selected_round": None,
    }
    # with a selection split, the tables read the score at the selected round
    selected = tables.run_record("fed", experiment, summary | {"selected_score": 0.75, "selected_round": 2})
    assert (selected["score"], selected["selected_round"]) == (0.75, 2)
    table = tables.table1([run("fed", "federated", 0.6) | {"selected_round": 2}, run("late", "federated", 0.5, clients=4)])
    assert table.notes[0] == ("Score of the federated experiments, at the round selected by the validation split "
                              "(eval.select_split), except the last evaluated round for experiments without one: late: "
                              "VQA accuracy in %.")


def test_group_label() -> None:
    assert replicates.group_label(["fedavg"]) == "fedavg"
    assert replicates.group_label(["sweep_c4_a0.5_fedavg_s0", "sweep_c4_a0.5_fedavg_s1"]) == "sweep_c4_a0.5_fedavg"
    assert replicates.group_label(["a", "b"]) == "a, b"


def test_average_seeds() -> None:
    groups = tables.average_seeds([
        run("x_s0", "federated", 0.5, group="g", bytes_per_round=1e6),
        run("central", "centralized", 0.8),
        run("x_s1", "federated", 0.7, group="g", bytes_per_round=3e6),
    ])
    assert [g["name"] for g in groups] == ["x", "central"]
    assert groups[0]["score"] == pytest.approx(0.6)
    assert groups[0]["bytes_per_round"] == 2e6
    assert groups[0]["seeds"] == 2 and groups[0]["names"] == ("x_s0", "x_s1")
    assert groups[1]["bytes_per_round"] is None and groups[1]["seeds"] == 1


# ----------------------------------------------------------------------------- Table 1


def sweep_runs() -> list[dict]:
    return [
        run("c2_a0.1_s0", "federated", 0.50, clients=2, alpha=0.1, group="c2a0.1"),
        run("c2_a0.1_s1", "federated", 0.60, clients=2, alpha=0.1, group="c2a0.1"),
        run("c2_a1", "federated", 0.70, clients=2, alpha=1.0),
        run("c4_a0.1", "federated", 0.40, clients=4, alpha=0.1),
        run("central", "centralized", 0.80, alpha=None),
        run("local", "local", 0.30),
    ]


def test_table1_layout_avg_and_vs_centralized() -> None:
    table = tables.table1(sweep_runs())
    assert table.title == "Table 1: VQA acc. (%) by number of clients and Dirichlet α"
    assert table.columns == ("Clients", "α=0.1", "α=1", "Avg", "vs. centralized")
    assert column(table, "Clients") == ["Centralized", 2, 4]
    assert column(table, "α=0.1") == [None, pytest.approx(55.0), pytest.approx(40.0)]  # seeds averaged
    assert column(table, "α=1") == [None, pytest.approx(70.0), None]  # no 4-client α=1 run
    assert column(table, "Avg") == [pytest.approx(80.0), pytest.approx(62.5), pytest.approx(40.0)]
    assert column(table, "vs. centralized") == [None, pytest.approx(-17.5), pytest.approx(-40.0)]
    # the two seeds of 2 clients, α=0.1 (50 and 60): sample sd 7.07; a cell of one seed has none, and a
    # mean over cells with and without a spread has none either
    assert spreads(table, "α=0.1") == [None, (pytest.approx(7.0710678), 2), None]
    assert spreads(table, "Avg") == [None, None, None]
    assert ("A cell is the mean ± sample standard deviation over experiments that differ only in their seed "
            "(1–2 seeds; n= gives each cell's number); a cell without ± is one seed.") in table.notes
    assert table.notes[0] == "Score of the federated experiments, of the last evaluated round: VQA accuracy in %."
    assert "vs. centralized: Avg minus the centralized score (central), in percentage points." in table.notes

    lines = tables.to_markdown(table).splitlines()
    assert lines[2:7] == [
        "| Clients | α=0.1 | α=1 | Avg | vs. centralized |",
        "|---|---:|---:|---:|---:|",
        f"| Centralized | {MISSING} | {MISSING} | 80.0 | {MISSING} |",
        "| 2 | 55.0 ± 7.1 (n=2) | 70.0 | 62.5 | -17.5 |",
        f"| 4 | 40.0 | {MISSING} | 40.0 | -40.0 |",
    ]


def test_table1_strategy_column_iid_and_mixed_cells() -> None:
    runs = [
        run("fedavg", "federated", 0.5, alpha=0.5, experiment={"lora": {"r": 8}, "seed": 0}),
        run("fedavg_r16", "federated", 0.7, alpha=0.5, experiment={"lora": {"r": 16}, "seed": 0}),
        run("prox", "federated", 0.4, alpha=None, strategy="fedavg", label="fedprox (μ=0.01)"),
    ]
    table = tables.table1(runs)
    assert table.columns == ("Strategy", "Clients", "α=0.5", "IID", "Avg", "vs. centralized")
    # runs that differ in more than their seed are never averaged: lora.r gives each its own row
    assert table.rows == (
        ("fedavg [lora.r=16]", 2, pytest.approx(70.0), None, pytest.approx(70.0), None),
        ("fedavg [lora.r=8]", 2, pytest.approx(50.0), None, pytest.approx(50.0), None),
        ("fedprox (μ=0.01)", 2, None, pytest.approx(40.0), pytest.approx(40.0), None),
    )
    assert "No centralized experiment: vs. centralized is —." in table.notes


def test_table1_averages_only_seed_replicates_and_falls_back_to_names() -> None:
    runs = [
        run("a_s0", "federated", 0.4, group="a", experiment={"train": {"lr": 0.1}, "seed": 0}),
        run("a_s1", "federated", 0.6, group="a", experiment={"train": {"lr": 0.1}, "seed": 1}),
        run("b", "federated", 0.9, experiment={"train": {"lr": 0.1}, "seed": 0}),  # differs in nothing visible
    ]
    table = tables.table1(runs)
    assert [row[:2] for row in table.rows] == [("fedavg [a]", 2), ("fedavg [b]", 2)]
    assert column(table, "α=0.5") == [pytest.approx(50.0), pytest.approx(90.0)]
    assert spreads(table, "α=0.5") == [(pytest.approx(14.1421356), 2), None]
    assert "(1–2 seeds; n= gives each cell's number)" in table.notes[1]


def seed_sweep_runs() -> list[dict]:
    """3 seeds each of 2 and 8 clients at α=0.1 and of centralized, as a `sweep` with `seed: [0, 1, 2]` names them."""
    runs = []
    for seed, (c2, c8, central) in enumerate([(0.60, 0.30, 0.62), (0.64, 0.40, 0.66), (0.68, 0.35, 0.70)]):
        runs += [
            run(f"sweep_c2_a0.1_fedavg_s{seed}", "federated", c2, clients=2, alpha=0.1, group="c2"),
            run(f"sweep_c8_a0.1_fedavg_s{seed}", "federated", c8, clients=8, alpha=0.1, group="c8"),
            run(f"central_s{seed}", "centralized", central, alpha=None, group="central"),
        ]
    return runs


def test_table1_of_a_seed_sweep_shows_mean_spread_and_seeds() -> None:
    table = tables.table1(seed_sweep_runs())
    assert column(table, "Clients") == ["Centralized", 2, 8]
    assert column(table, "α=0.1") == [None, pytest.approx(64.0), pytest.approx(35.0)]
    assert spreads(table, "α=0.1") == [None, (pytest.approx(4.0), 3), (pytest.approx(5.0), 3)]
    assert column(table, "Avg") == [pytest.approx(66.0), pytest.approx(64.0), pytest.approx(35.0)]
    # difference of independent means: sd = hypot(4, 4) for 2 clients, hypot(5, 4) for 8
    assert column(table, "vs. centralized") == [None, pytest.approx(-2.0), pytest.approx(-31.0)]
    assert spreads(table, "vs. centralized") == [None, (pytest.approx(5.6568542), 3), (pytest.approx(6.4031242), 3)]
    # |-2.0| <= 2 · 5.66: 2 clients are not told apart from centralized; 8 clients are
    assert table.notes[-1] == (
        "Within the spread (|difference| <= 2 standard deviations of the difference, percentage points): 2 clients. "
        "These rows do not show a difference to centralized beyond seed variation.")
    lines = tables.to_markdown(table).splitlines()
    assert lines[4:7] == [
        f"| Centralized | {MISSING} | 66.0 ± 4.0 (n=3) | {MISSING} |",
        "| 2 | 64.0 ± 4.0 (n=3) | 64.0 ± 4.0 (n=3) | -2.0 ± 5.7 (n=3) |",
        "| 8 | 35.0 ± 5.0 (n=3) | 35.0 ± 5.0 (n=3) | -31.0 ± 6.4 (n=3) |",
    ]
    assert r"-2.0 $\pm$ 5.7 (n=3)" in tables.to_latex(table)
    rows = list(csv.reader(io.StringIO(tables.to_csv(table))))
    assert rows[0] == ["Clients", "α=0.1", "α=0.1 sd", "α=0.1 n", "Avg", "Avg sd", "Avg n",
                       "vs. centralized", "vs. centralized sd", "vs. centralized n"]
    assert float(rows[2][1]) == pytest.approx(64.0) and float(rows[2][2]) == pytest.approx(4.0) and rows[2][3] == "3"


def test_runs_that_differ_in_more_than_their_seed_are_never_averaged() -> None:
    runs = seed_sweep_runs() + [
        # same clients and α as the 2-client seeds, another learning rate: a row of its own, not a fourth seed
        run("lr_s0", "federated", 0.10, clients=2, alpha=0.1, group="lr", experiment={"train": {"lr": 0.5}, "seed": 0}),
    ]
    for sweep_run in runs[:-1]:
        sweep_run["experiment"] = {"train": {"lr": 0.005}, "seed": 0}
    table = tables.table1(runs)
    by_label = {row[0]: row for row in table.rows}
    # only the cell they would share gets the detail; the 8-client row has no rival
    assert set(by_label) == {"Centralized", "fedavg", "fedavg [train.lr=0.005]", "fedavg [train.lr=0.5]"}
    index = table.columns.index("α=0.1")
    assert by_label["fedavg [train.lr=0.5]"][index] == pytest.approx(10.0)
    assert by_label["fedavg [train.lr=0.005]"][index] == replicates.Estimate(pytest.approx(64.0), pytest.approx(4.0), 3)


def test_replicate_statistics() -> None:
    values = [0.60, 0.64, 0.68]
    single = replicates.estimate([0.5, None])
    assert single == replicates.Estimate(0.5, None, 1) and replicates.estimate([None]) is None
    three = replicates.estimate(values)
    assert three.mean == pytest.approx(0.64) and three.sd == pytest.approx(0.04) and three.n == 3
    pair = replicates.mean_of([three, replicates.Estimate(0.5, 0.03, 2)])
    assert pair.mean == pytest.approx(0.57) and pair.sd == pytest.approx(0.025) and pair.n == 2
    assert replicates.mean_of([three, single]).sd is None
    delta = replicates.difference(three, replicates.Estimate(0.7, 0.03, 3))
    assert delta.mean == pytest.approx(-0.06) and delta.sd == pytest.approx(0.05)
    assert replicates.within_spread(delta) and not replicates.within_spread(replicates.Estimate(-0.11, 0.05, 3))
    assert not replicates.within_spread(replicates.Estimate(0.0, None, 1))


def test_table1_compares_each_row_with_its_own_baseline() -> None:
    runs = [
        run("c4", "federated", 0.5, clients=4, baseline="central_big"),
        run("c2", "federated", 0.6, clients=2),  # matched by dataset and model: central_small only
        run("central_small", "centralized", 0.7, alpha=None),
        run("central_big", "centralized", 0.9, alpha=None, dataset="shapes_big"),
    ]
    table = tables.table1(runs)
    assert column(table, "Clients") == ["Centralized (central_small)", "Centralized (central_big)", 2, 4]
    assert column(table, "vs. centralized") == [None, None, pytest.approx(-10.0), pytest.approx(-40.0)]
    assert table.notes[-1] == ("vs. centralized: Avg minus the score of the row's centralized baseline, in percentage "
                               "points: 2 clients vs. central_small; 4 clients vs. central_big.")


def test_table1_compares_full_fine_tuning_with_centralized_full_fine_tuning() -> None:
    runs = [
        run("lora", "federated", 0.5, experiment={"tuning": {"mode": "joint"}}),
        run("full", "federated", 0.6, tuning="full", experiment={"tuning": {"mode": "full"}}),
        run("central", "centralized", 0.7, alpha=None),
        run("central_full", "centralized", 0.9, alpha=None, tuning="full"),
    ]
    table = tables.table1(runs)
    by_label = {row[0]: row[-1] for row in table.rows}
    assert by_label["fedavg [tuning.mode=joint]"] == pytest.approx(-20.0)
    assert by_label["fedavg [tuning.mode=full]"] == pytest.approx(-30.0)


def test_table1_single_experiment_is_one_cell() -> None:
    table = tables.table1([run("fedavg", "federated", 0.25, clients=4, alpha=0.5)])
    assert table.columns == ("Clients", "α=0.5", "Avg", "vs. centralized")
    assert table.rows == ((4, 25.0, 25.0, None),)
    assert table.notes[1].startswith("One experiment (one seed) per cell: no spread is known")


def test_table1_without_federated_experiments_does_not_fail() -> None:
    table = tables.table1([run("central", "centralized", 0.8)])
    assert table.columns == ("Clients", "Avg", "vs. centralized")
    assert table.rows == (("Centralized", 80.0, None),)
    assert "No federated experiment." in table.notes
    assert tables.table1([]).rows == ()


def caption_runs() -> list[dict]:
    """CC3M-style runs scored by CIDEr (a number in [0, 10], not a fraction)."""
    return [
        run("cc_a0.1", "federated", 0.5, alpha=0.1, metric="caption.CIDEr", bytes_per_round=2e6),
        run("cc_a1", "federated", 1.25, alpha=1.0, metric="caption.CIDEr", bytes_per_round=2e6),
        run("cc_central", "centralized", 1.5, alpha=None, metric="caption.CIDEr"),
    ]


def test_table1_of_cider_scores_shows_numbers_not_percentages() -> None:
    table = tables.table1(caption_runs())
    assert table.title == "Table 1: CIDEr by number of clients and Dirichlet α"
    assert table.columns == ("Clients", "α=0.1", "α=1", "Avg", "vs. centralized")
    assert table.rows == (
        ("Centralized", None, None, 1.5, None),
        (2, 0.5, 1.25, pytest.approx(0.875), pytest.approx(-0.625)),
    )
    assert table.notes[0] == (
        "Score of the federated experiments, of the last evaluated round: CIDEr-D as a number (not a percentage)."
    )
    assert "vs. centralized: Avg minus the centralized score (cc_central), in CIDEr points." in table.notes
    # Two decimals: CIDEr's differences would vanish at one (0.875 -> 0.88, not 0.9).
    assert tables.to_markdown(table).splitlines()[4:6] == [
        f"| Centralized | {MISSING} | {MISSING} | 1.50 | {MISSING} |",
        "| 2 | 0.50 | 1.25 | 0.88 | -0.62 |",
    ]


def test_table1_of_mixed_metrics_splits_rows_by_metric() -> None:
    table = tables.table1([*caption_runs(), *sweep_runs()[2:5]])  # c2_a1, c4_a0.1, central (VQA)
    assert table.title == "Table 1: Primary score by number of clients and Dirichlet α"
    assert table.columns == ("Metric", "Clients", "α=0.1", "α=1", "Avg", "vs. centralized")
    assert table.rows == (
        ("VQA acc.", "Centralized", None, None, pytest.approx(80.0), None),
        ("VQA acc.", 2, None, pytest.approx(70.0), pytest.approx(70.0), pytest.approx(-10.0)),
        ("VQA acc.", 4, pytest.approx(40.0), None, pytest.approx(40.0), pytest.approx(-40.0)),
        ("CIDEr", "Centralized", None, None, 1.5, None),
        ("CIDEr", 2, 0.5, 1.25, pytest.approx(0.875), pytest.approx(-0.625)),
    )
    assert table.formats[2:] == (".2f", ".2f", ".2f", "+.2f")
    assert table.notes[0] == (
        "Score of the federated experiments, of the last evaluated round: the score of the row's "
        "Metric, accuracies in % and CIDEr as a number."
    )
    assert "VQA acc.: vs. centralized: Avg minus the centralized score (central), in percentage points." in table.notes
    assert "CIDEr: vs. centralized: Avg minus the centralized score (cc_central), in CIDEr points." in table.notes


def test_table1_of_a_metric_without_centralized_experiment() -> None:
    table = tables.table1([run("cc", "federated", 0.75, metric="caption.CIDEr"), run("central", "centralized", 0.8)])
    assert table.columns == ("Metric", "Clients", "α=0.5", "Avg", "vs. centralized")
    assert table.rows == (
        ("VQA acc.", "Centralized", None, pytest.approx(80.0), None),
        ("CIDEr", 2, 0.75, 0.75, None),  # never compared with the VQA centralized score
    )
    assert "CIDEr: No centralized experiment: vs. centralized is —." in table.notes


# ----------------------------------------------------------------------------- Table 3


def test_table3_has_measured_full_fine_tuning_rows() -> None:
    runs = [
        run("fed_lora", "federated", 0.6, bytes_per_round=1_000_000),
        run("fed_full", "federated", 0.65, bytes_per_round=80_000_000, tuning="full"),
        run("central_full", "centralized", 0.7, alpha=None, tuning="full"),
        run("central", "centralized", 0.68, alpha=None),
    ]
    table = tables.table3(runs)
    assert [row[:2] for row in table.rows] == [
        ("Centralized (full fine-tuning)", "central_full"), ("Centralized + LoRA", "central"),
        ("Single site (full fine-tuning)", None), ("Single site + LoRA", None),
        ("Federated (full fine-tuning)", "fed_full"), ("Federated + LoRA", "fed_lora"),
    ]
    assert column(table, "Comm. (MB/round)")[4:] == [pytest.approx(80.0), pytest.approx(1.0)]


def test_table3_paradigms_with_missing_rows() -> None:
    runs = [
        run("fed_avg", "federated", 0.6, bytes_per_round=94_000_000),
        run("central", "centralized", 0.8, alpha=None),
        run("local_s0", "local", 0.3, group="local"),
        run("local_s1", "local", 0.5, group="local"),
    ]
    table = tables.table3(runs)
    # 94 MB per round: the column is in MB, as summary.md writes it ("94.0 MB")
    assert table.columns == ("Configuration", "Experiment", "VQA acc. (%)", "Comm. (MB/round)")
    assert table.rows == (
        ("Centralized (full fine-tuning)", None, None, None),
        ("Centralized + LoRA", "central", pytest.approx(80.0), None),
        ("Single site (full fine-tuning)", None, None, None),
        ("Single site + LoRA", "local", replicates.Estimate(pytest.approx(40.0), pytest.approx(14.1421356), 2), None),
        ("Federated + LoRA", "fed_avg", pytest.approx(60.0), pytest.approx(94.0)),
    )
    assert any(note.startswith("Comm.: MB (10^6 bytes) uploaded per round") for note in table.notes)
    assert any(note.startswith("Full fine-tuning rows come from experiments with tuning.mode: full") for note in table.notes)
    assert any("local (2)" in note for note in table.notes)
    assert table.notes[0].startswith("VQA acc. (%): VQA accuracy in %, of the last evaluated round; single site:")
    markdown = tables.to_markdown(table)
    assert f"| Centralized (full fine-tuning) | {MISSING} | {MISSING} | {MISSING} |" in markdown
    assert "| Federated + LoRA | fed_avg | 60.0 | 94 |" in markdown


def test_table3_kind_without_experiment_and_connector_tuning() -> None:
    table = tables.table3([run("conn", "federated", 0.5, tuning="connector", bytes_per_round=1e6)])
    assert [row[0] for row in table.rows] == [
        "Centralized (full fine-tuning)", "Centralized + LoRA", "Single site (full fine-tuning)",
        "Single site + LoRA", "Federated + connector",
    ]
    assert table.rows[1] == ("Centralized + LoRA", None, None, None)


def test_table3_of_cider_scores() -> None:
    table = tables.table3(caption_runs())
    assert table.columns == ("Configuration", "Experiment", "CIDEr", "Comm. (MB/round)")
    assert table.rows[1] == ("Centralized + LoRA", "cc_central", 1.5, None)
    assert table.rows[4:] == (
        ("Federated + LoRA", "cc_a0.1", 0.5, pytest.approx(2.0)),
        ("Federated + LoRA", "cc_a1", 1.25, pytest.approx(2.0)),
    )
    assert table.notes[0].startswith("CIDEr: CIDEr-D as a number (not a percentage), of the last evaluated round;")
    assert "| Federated + LoRA | cc_a1 | 1.25 | 2 |" in tables.to_markdown(table)


def test_table3_of_mixed_metrics_has_a_metric_column() -> None:
    table = tables.table3([run("fed_avg", "federated", 0.625), run("cc", "federated", 1.25, metric="caption.CIDEr")])
    assert table.columns == ("Configuration", "Experiment", "Metric", "Primary score", "Comm. (GB/round)")  # nothing uploaded
    assert table.rows == (
        ("Centralized (full fine-tuning)", None, None, None, None),
        ("Centralized + LoRA", None, None, None, None),
        ("Single site (full fine-tuning)", None, None, None, None),
        ("Single site + LoRA", None, None, None, None),
        ("Federated + LoRA", "fed_avg", "VQA acc.", 62.5, None),
        ("Federated + LoRA", "cc", "CIDEr", 1.25, None),
    )
    markdown = tables.to_markdown(table)
    assert "| Federated + LoRA | fed_avg | VQA acc. | 62.50 | — |" in markdown
    assert "| Federated + LoRA | cc | CIDEr | 1.25 | — |" in markdown


# ----------------------------------------------------------------------------- Table 4

BENCHMARK_HEADER = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"


def write_benchmark(path: Path, seconds: float, cpu_time: float | str) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(BENCHMARK_HEADER + f"{seconds}\t0:00:{int(seconds):02d}\t500.0\t900.0\t300.0\t400.0\t0.00\t0.26\t88.7\t{cpu_time}\n")
    return str(path)


@pytest.fixture
def round_files(tmp_path: Path) -> dict:
    """Benchmarks and aggregate.json of 2 rounds of 2 clients, laid out as the workflow writes them."""
    bench = tmp_path / "benchmarks"
    client = {
        1: [write_benchmark(bench / "client_train/fed/round_001_client_0.tsv", 10.0, 8.0),
            write_benchmark(bench / "client_train/fed/round_001_client_1.tsv", 12.0, 9.0)],
        2: [write_benchmark(bench / "client_train/fed/round_002_client_0.tsv", 20.0, 18.0),
            write_benchmark(bench / "client_train/fed/round_002_client_1.tsv", 4.0, 3.0)],
    }
    server = {
        1: [write_benchmark(bench / "aggregate/fed/round_001.tsv", 1.5, 1.0)],
        2: [write_benchmark(bench / "aggregate/fed/round_002.tsv", 2.5, 2.0)],
    }
    aggregates = []
    for r, size in ((1, 1_000_000), (2, 3_000_000)):
        path = tmp_path / f"results/fed/round_{r:03d}/aggregate.json"
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps({"bytes_uploaded": size, "clients": [0, 1], "round": r}))
        aggregates.append(path)
    return {"client": client, "server": server, "aggregates": aggregates}


def compute(round_files: dict, model_bytes: int = 1_000_000) -> dict:
    return tables.compute_record(
        run("fed", "federated", 0.6),
        tables.read_benchmarks(round_files["client"]),
        tables.read_benchmarks(round_files["server"]),
        tables.read_uploads(round_files["aggregates"]),
        model_bytes,
    )


def test_read_benchmark(tmp_path: Path) -> None:
    path = write_benchmark(tmp_path / "b.tsv", 10.59, 9.88)
    assert tables.read_benchmark(path) == {"s": 10.59, "cpu_time": 9.88}
    assert tables.read_benchmark(write_benchmark(tmp_path / "na.tsv", 3.0, "NA")) == {"s": 3.0, "cpu_time": None}
    assert tables.read_benchmark(tmp_path / "missing.tsv") is None


def test_table4_numbers(round_files: dict) -> None:
    record = compute(round_files)
    assert record["client"] == {"s": 23.0, "cpu_time": 19.0}  # (10+12 + 20+4) / 2, (8+9 + 18+3) / 2
    assert record["server"] == {"s": 2.0, "cpu_time": 1.5}
    assert record["upload_bytes"] == 2_000_000 and record["full_bytes"] == 2_000_000  # 2 clients × 1 MB model
    assert record["missing_benchmarks"] == 0

    table = tables.table4([record], {"client_train": 2, "aggregate": 1})
    (row,) = table.rows
    values = dict(zip(table.columns, row))
    assert values["Experiment"] == "fed"
    assert values["Client (s)"] == 23.0 and values["Client CPU (s)"] == 19.0
    assert values["Client (GPU-h)"] == pytest.approx(23.0 * 2 / 3600)
    assert values["Server (s)"] == 2.0 and values["Server CPU (s)"] == 1.5
    assert values["Server (GPU-h)"] == pytest.approx(2.0 / 3600)
    assert values["Comm. (GB)"] == pytest.approx(0.002)
    assert values["Full FT comm. (GB)"] == pytest.approx(0.002)
    assert values["Comm. / full (%)"] == pytest.approx(100.0)
    assert values["VQA acc. (%)"] == pytest.approx(60.0)
    assert "VQA acc. (%): VQA accuracy in %, of the last evaluated round." in table.notes
    assert "| fed | LoRA | 23.0 | 19.0 | 0.0128 | 2.0 | 1.5 | 0.000556 | 0.002 | 0.002 | 100 | 60.0 |" in tables.to_markdown(table)


def test_table4_without_gpu_and_with_a_missing_benchmark(round_files: dict) -> None:
    Path(round_files["client"][2][1]).unlink()  # round 2 is incomplete: left out of the mean
    record = compute(round_files, model_bytes=4_000_000)
    assert record["client"] == {"s": 22.0, "cpu_time": 17.0}
    assert record["missing_benchmarks"] == 1
    table = tables.table4([record], {"client_train": 0, "aggregate": 0})
    values = dict(zip(table.columns, table.rows[0]))
    assert values["Client (GPU-h)"] is None and values["Server (GPU-h)"] is None
    assert values["Comm. / full (%)"] == pytest.approx(25.0)  # 2 MB of 2 × 4 MB
    assert any("GPU-h is —" in note for note in table.notes)
    assert any("1 benchmark file(s) missing" in note for note in table.notes)


def test_table4_with_unknown_model_size(round_files: dict) -> None:
    record = tables.compute_record(
        run("fed", "federated", 0.6), tables.read_benchmarks(round_files["client"]),
        tables.read_benchmarks(round_files["server"]), tables.read_uploads(round_files["aggregates"]), None,
    )
    table = tables.table4([record], {"client_train": 0, "aggregate": 0})
    values = dict(zip(table.columns, table.rows[0]))
    assert values["Comm. (GB)"] == pytest.approx(0.002)
    assert values["Full FT comm. (GB)"] is None and values["Comm. / full (%)"] is None
    assert any("model's size is unknown" in note for note in table.notes)


def test_read_model_size_of_an_unreadable_hub_part(tmp_path: Path) -> None:
    spec = {"vision": {"id": str(tmp_path / "absent")}, "language": {"config": {"model_type": "llama"}},
            "tokenizer": {"wordlevel": True}}
    (tmp_path / "spec.json").write_text(json.dumps({"spec": spec}))
    assert accounting.read_model_size(tmp_path) is None


def test_table4_averages_seeds(round_files: dict) -> None:
    first = compute(round_files) | {"name": "x_s0", "group": "g"}
    second = first | {"name": "x_s1", "score": 0.8, "client": {"s": 25.0, "cpu_time": None}}
    table = tables.table4([first, second], {"client_train": 0, "aggregate": 0})
    values = dict(zip(table.columns, table.rows[0]))
    assert values["Experiment"] == "x"
    assert values["Client (s)"] == 24.0 and values["Client CPU (s)"] == 19.0
    assert values["VQA acc. (%)"] == replicates.Estimate(pytest.approx(70.0), pytest.approx(14.1421356), 2)
    assert tables.table4([], {"client_train": 0, "aggregate": 0}).rows == ()


def test_table4_score_column_follows_the_metric(round_files: dict) -> None:
    cider = compute(round_files) | {"name": "cc", "group": "cc", "metric": "caption.CIDEr", "score": 1.25}
    alone = tables.table4([cider], {"client_train": 0, "aggregate": 0})
    assert alone.columns[-1] == "CIDEr" and alone.rows[0][-1] == 1.25
    assert alone.formats[-1] == ".2f"
    assert "CIDEr: CIDEr-D as a number (not a percentage), of the last evaluated round." in alone.notes

    mixed = tables.table4([compute(round_files), cider], {"client_train": 0, "aggregate": 0})
    assert mixed.columns[-2:] == ("Metric", "Primary score")
    assert (
        "Primary score: the score of the row's Metric, accuracies in % and CIDEr as a number, of the last "
        "evaluated round."
    ) in mixed.notes
    assert [row[-2:] for row in mixed.rows] == [("VQA acc.", pytest.approx(60.0)), ("CIDEr", 1.25)]


# ----------------------------------------------------------------------------- model size


def test_model_size_of_an_inline_spec_matches_the_built_model() -> None:
    spec = {
        "vision": {"config": {"model_type": "clip_vision_model", "hidden_size": 32, "intermediate_size": 64,
                              "num_hidden_layers": 1, "num_attention_heads": 2, "image_size": 64, "patch_size": 16}},
        "language": {"config": {"model_type": "llama", "hidden_size": 32, "intermediate_size": 64,
                                "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 2,
                                "vocab_size": 50}},
        "tokenizer": {"wordlevel": True},
        "connector": "mlp2x_gelu",
        "dtype": "bfloat16",
    }
    built = vlm.build_vlm(spec, None, seed=0)
    assert accounting.model_size(spec) == (sum(p.numel() for p in built.parameters()), 2)


def test_model_size_of_a_full_clip_checkpoint_counts_its_vision_tower(tmp_path: Path) -> None:
    clip = CLIPConfig(
        vision_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
                       "image_size": 32, "patch_size": 16},
        text_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2},
    )
    clip.save_pretrained(tmp_path / "clip")
    language = {"model_type": "llama", "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
                "num_attention_heads": 2, "num_key_value_heads": 2, "vocab_size": 20}
    spec = {"vision": {"id": str(tmp_path / "clip")}, "language": {"config": language},
            "tokenizer": {"wordlevel": True}, "connector": "linear"}
    vision = sum(p.numel() for p in CLIPVisionModel(clip.vision_config).parameters())
    parameters, size = accounting.model_size(spec)
    full = vlm.build_vlm({**spec, "vision": {"config": clip.vision_config.to_dict()}}, None, seed=0)
    assert parameters == sum(p.numel() for p in full.parameters())
    assert parameters > vision and size == 4


# ----------------------------------------------------------------------------- formatting

TABLE = Table(
    "Demo: 100% of fed_avg",
    ("Experiment", "Acc. (%)", "Δ"),
    ("", ".1f", "+.1f"),
    (("fed_avg", 41.25, -1.5), ("a&b", None, 2.0)),
    ("uses α_1 & 50% of #data",),
)


def test_latex_escapes_and_booktabs() -> None:
    latex = tables.to_latex(TABLE)
    assert latex.splitlines() == [
        "% Demo: 100% of fed_avg",
        "% uses α_1 & 50% of #data",
        r"\begin{tabular}{lrr}",
        r"\toprule",
        r"Experiment & Acc. (\%) & Δ \\",
        r"\midrule",
        r"fed\_avg & 41.2 & -1.5 \\",
        r"a\&b & --- & +2.0 \\",
        r"\bottomrule",
        r"\end{tabular}",
    ]


def test_latex_escape_special_characters() -> None:
    assert tables.latex_escape(r"50%_x\y{z}$#~^ α×—") == (
        r"50\%\_x\textbackslash{}y\{z\}\$\#\textasciitilde{}\textasciicircum{} $\alpha$$\times$---"
    )


@pytest.mark.parametrize(
    ("value", "text"),
    [(5.6389e-05, "0.0000564"), (0.094, "0.094"), (28.6, "28.6"), (100.0, "100"), (1234.5, "1230"), (0.0, "0")],
)
def test_three_significant_digits_without_exponent(value: float, text: str) -> None:
    assert tables.format_cell(value, tables.SIG3) == text


def test_csv_keeps_full_precision_and_leaves_missing_cells_empty() -> None:
    rows = list(csv.reader(io.StringIO(tables.to_csv(TABLE))))
    assert rows == [["Experiment", "Acc. (%)", "Δ"], ["fed_avg", "41.25", "-1.5"], ["a&b", "", "2.0"]]


def test_markdown_escapes_pipes_and_lists_notes() -> None:
    table = Table("t", ("a|b", "n"), ("", ".1f"), (("x|y", 1.0),), ("note",))
    assert tables.to_markdown(table) == "**t**\n\n| a\\|b | n |\n|---|---:|\n| x\\|y | 1.0 |\n\n- note\n"


def test_table_rejects_ragged_rows() -> None:
    with pytest.raises(ValueError, match="has 1 cells, expected 2"):
        Table("t", ("a", "b"), ("", ""), (("x",),))


def test_write_table_writes_each_format_atomically(tmp_path: Path) -> None:
    paths = {ext: tmp_path / "tables" / f"demo.{ext}" for ext in ("csv", "md", "tex")}
    tables.write_table(TABLE, paths)
    assert paths["csv"].read_text() == tables.to_csv(TABLE)
    assert paths["md"].read_text() == tables.to_markdown(TABLE)
    assert paths["tex"].read_text() == tables.to_latex(TABLE)
    assert sorted(p.name for p in (tmp_path / "tables").iterdir()) == ["demo.csv", "demo.md", "demo.tex"]


def test_table2_shows_each_skill_in_percent_with_the_difference_to_centralized() -> None:
    skills = {"single_object": 1.0, "two_object": 0.5, "counting": 0.25, "colors": 0.5, "position": 0.0, "color_attr": 0.25}
    central = {**run("central", "centralized", 0.5), "geneval": {**skills, "overall": 0.4167}}
    replicates = [
        {**run(f"fed_s{seed}", "federated", 0.4, group="fed"), "geneval": {**skills, "counting": value, "overall": 0.4}}
        for seed, value in ((0, 0.0), (1, 0.5))
    ]
    understanding_only = run("vqa", "federated", 0.6, clients=4)
    table = tables.table2([central, *replicates, understanding_only])
    assert table.columns == ("Configuration", "Single obj.", "Two obj.", "Counting", "Colors", "Position",
                             "Color attr.", "Overall")
    assert [row[0] for row in table.rows] == ["Centralized (central)", "Federated, 2 clients, α=0.5", "vs. centralized"]
    assert table.rows[1][3] == pytest.approx(25.0)  # counting: mean of the two seeds, 0 and 50 %
    assert table.rows[2][3] == pytest.approx(0.0) and table.rows[2][7] == pytest.approx(-1.67)
    assert any("fed (2)" in note for note in table.notes)
    assert tables.table2([understanding_only]).rows == ()
