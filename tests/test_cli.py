"""The `fedumm` command's interface (its subcommands run on real runs in tests/test_workflow.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from fedumm.cli import main
from fedumm.evaluation.predict import PredictError, pair_questions

FEDUMM = Path(sys.executable).parent / "fedumm"


def test_fedumm_help_lists_every_subcommand_and_each_has_its_own_help() -> None:
    result = subprocess.run([str(FEDUMM), "--help"], capture_output=True, text=True, check=True)
    assert "{predict,export,bench,accounting}" in result.stdout
    for command in ("predict", "export"):
        sub = subprocess.run([str(FEDUMM), command, "--help"], capture_output=True, text=True, check=True)
        assert "--base" in sub.stdout and "--adapter" in sub.stdout, command
    assert "BENCHMARK" in subprocess.run([str(FEDUMM), "bench", "--help"], capture_output=True, text=True).stdout


def test_images_and_questions_pair_in_order_or_broadcast_one_side() -> None:
    a, b = Path("a.png"), Path("b.png")
    assert [(q.image, q.question) for q in pair_questions([a, b], ["x", "y"])] == [(a, "x"), (b, "y")]
    assert [(q.image, q.question) for q in pair_questions([a], ["x", "y"])] == [(a, "x"), (a, "y")]
    assert [(q.image, q.question) for q in pair_questions([a, b], ["x"])] == [(a, "x"), (b, "x")]
    with pytest.raises(PredictError, match="2 images and 3 questions"):
        pair_questions([a, b], ["x", "y", "z"])


def test_predict_names_a_missing_or_unreadable_image(tmp_path, capsys) -> None:
    (tmp_path / "notes.png").write_text("not an image")
    for image, message in ((tmp_path / "missing.png", "no such file"), (tmp_path / "notes.png", "not an image Pillow can read")):
        assert main(["predict", "--base", str(tmp_path), "--image", str(image), "--question", "what ?"]) == 2
        assert message in capsys.readouterr().err


def test_predict_names_a_directory_that_is_no_base_model(tmp_path, capsys) -> None:
    from PIL import Image

    Image.new("RGB", (8, 8)).save(tmp_path / "x.png")
    assert main(["predict", "--base", str(tmp_path), "--image", str(tmp_path / "x.png"), "--question", "what ?"]) == 2
    assert f"base {tmp_path}: not a base-model directory (no spec.json)" in capsys.readouterr().err


def test_export_refuses_to_overwrite(tmp_path, capsys) -> None:
    assert main(["export", "--base", str(tmp_path), "--adapter", str(tmp_path), "--out", str(tmp_path)]) == 2
    assert "exists" in capsys.readouterr().err
