"""`sweep pull --format keras|savedmodel|onnx` on every backend, loaded without the project.

The registry holds hand-built models (an exact multiply, an MLP add); each format is pulled
through the CLI and its answers on the campaign's held-out pairs, zeros and extrapolation band
are compared with the registry model's: bit for bit where the model is exact (and for every
SavedModel), within the tolerance otherwise.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from _hand_models import exact_multiply, mlp, promote
from _isolated_checks import answers_in_isolation

from sweep.api import load_best_model
from sweep.cli import main
from sweep.nets.portable import TOLERANCE, OnnxPredictor, compare_answers
from sweep.nets.training import predict
from sweep.problem.data import DataSpec
from sweep.problem.operations import BUILTIN_OPERATIONS
from sweep.publishing.pulling import probe_inputs

pytestmark = pytest.mark.slow


def _fill(url: str) -> str:
    promote(url, "multiply", exact_multiply(), 0.0)
    promote(url, "add", mlp("tanh"), 2.0)
    return url


@pytest.fixture
def registry_url(storage_url: str) -> str:
    return _fill(storage_url)


@pytest.fixture
def sqlite_registry(tmp_path: Path) -> str:
    """The isolated loads do not depend on the backend: SQLite only."""
    return _fill(f"sqlite:///{tmp_path / 'sweeps.db'}")


def _cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_every_format_pulls_and_answers_as_the_registry_model(
    registry_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for op in ("multiply", "add"):
        for format, name in (("keras", f"{op}.keras"), ("onnx", f"{op}.onnx"),
                             ("savedmodel", op)):
            code, out, err = _cli(
                ["pull", op, "--format", format, "-o", str(tmp_path / name),
                 "--storage", registry_url], capsys,
            )
            assert code == 0, err
            assert f"{op} version 1" in out and "verified" in out
            if format != "keras":
                assert "answers as the registry model" in out
    # TF Serving's layout: the base folder holds the registry version's SavedModel.
    assert (tmp_path / "multiply" / "1" / "saved_model.pb").is_file()
    assert (tmp_path / "multiply.keras").read_bytes()[:2] == b"PK"

    x = probe_inputs(BUILTIN_OPERATIONS["multiply"], DataSpec())
    for op in ("multiply", "add"):
        reference = predict(load_best_model(op, storage=registry_url), x)
        y = OnnxPredictor((tmp_path / f"{op}.onnx").read_bytes()).predict(x)
        comparison = compare_answers(reference, y, integer_valued=True)
        assert comparison.max_relative_error <= TOLERANCE and not comparison.integer_mismatches
        if op == "multiply":
            assert comparison.bitwise, comparison.describe()


def test_pulled_exports_run_in_venvs_without_the_project(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], sqlite_registry: str
) -> None:
    registry_url = sqlite_registry
    for op in ("multiply", "add"):
        for format, name in (("onnx", f"{op}.onnx"), ("savedmodel", op)):
            code, _, err = _cli(
                ["pull", op, "--format", format, "-o", str(tmp_path / name),
                 "--storage", registry_url], capsys,
            )
            assert code == 0, err
    x = probe_inputs(BUILTIN_OPERATIONS["multiply"], DataSpec())
    for op in ("multiply", "add"):
        np.save(tmp_path / f"{op}.x.npy", x)
    savedmodel = answers_in_isolation(tmp_path, ["multiply", "add"], "savedmodel")
    onnx = answers_in_isolation(tmp_path, ["multiply", "add"], "onnx")
    integers = np.all(x == np.rint(x), axis=1)
    for op in ("multiply", "add"):
        reference = predict(load_best_model(op, storage=registry_url), x)
        assert np.array_equal(savedmodel[op], reference), op
        comparison = compare_answers(reference, onnx[op], integer_valued=True)
        assert comparison.max_relative_error <= TOLERANCE, comparison.describe()
        assert comparison.integer_mismatches == 0
    # The exact model is exact in every format: every integer pair (held-out, zeros, the band).
    truth = x[:, 0] * x[:, 1]
    for answers in (savedmodel["multiply"], onnx["multiply"]):
        assert np.array_equal(np.rint(answers[integers]), truth[integers])


def test_pull_outputs_are_never_overwritten_or_followed(
    registry_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["--storage", registry_url]
    folder = tmp_path / "multiply"
    code, _, err = _cli(["pull", "multiply", "--format", "savedmodel", "-o", str(folder), *base],
                        capsys)
    assert code == 0, err
    before = sorted(p.relative_to(folder) for p in folder.rglob("*"))

    code, _, err = _cli(["pull", "multiply", "--format", "savedmodel", "-o", str(folder), *base],
                        capsys)
    assert code == 2 and "--force" in err and len(err.strip().splitlines()) == 1
    code, _, err = _cli(
        ["pull", "multiply", "--format", "savedmodel", "-o", str(folder), "--force", *base], capsys
    )
    assert code == 0, err
    assert sorted(p.relative_to(folder) for p in folder.rglob("*")) == before

    # --force replaces only a folder `pull` wrote: never one holding anything else.
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    code, _, err = _cli(
        ["pull", "multiply", "--format", "savedmodel", "-o", str(mine), "--force", *base], capsys
    )
    assert code == 2 and "refusing to replace it" in err
    assert (mine / "notes.txt").read_text() == "keep"

    link = tmp_path / "link"
    link.symlink_to(mine)
    target = tmp_path / "elsewhere.onnx"
    onnx_link = tmp_path / "link.onnx"
    onnx_link.symlink_to(target)
    for argv in (
        ["pull", "multiply", "--format", "savedmodel", "-o", str(link), "--force"],
        ["pull", "multiply", "--format", "onnx", "-o", str(onnx_link), "--force"],
    ):
        code, _, err = _cli([*argv, *base], capsys)
        assert code == 2 and "symbolic link" in err
    assert not target.exists() and sorted(os.listdir(mine)) == ["notes.txt"]

    existing = tmp_path / "multiply.onnx"
    existing.write_bytes(b"keep me")
    code, _, err = _cli(["pull", "multiply", "--format", "onnx", "-o", str(existing), *base],
                        capsys)
    assert code == 2 and "--force" in err and existing.read_bytes() == b"keep me"
    code, _, err = _cli(["pull", "multiply", "--format", "onnx", "-o", str(tmp_path / "m.keras"),
                         *base], capsys)
    assert code == 2 and "must end in .onnx" in err
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]
    assert not leftovers, leftovers
