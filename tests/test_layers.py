"""The house rules, checked: one-way floors, Optuna's private API in one place, a light import.

The floors are import-linter contracts in pyproject.toml (indirect imports and imports inside
functions included); the rest are checks import-linter cannot express.
"""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SWEEP = ROOT / "sweep"
PRIVATE_OPTUNA = SWEEP / "search" / "_optuna"
# Optuna's private attributes the sweep relies on; only sweep/search/_optuna may spell them.
OPTUNA_PRIVATE_ATTRIBUTES = {
    "_storage", "_study_id", "_trial_id", "_get_trials", "_backend",
    "_group_decomposed_search_space", "_set_trial_param", "_create_scoped_session",
}


def _python_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*.py") if "__pycache__" not in p.parts)


def test_the_import_contracts_hold() -> None:
    lint = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    assert lint is not None, "import-linter is part of the test extra"
    done = subprocess.run(
        [lint, "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 broken" in done.stdout


def test_only_the_cli_prints() -> None:
    offenders = []
    for path in _python_files(SWEEP) + _python_files(ROOT / "storage"):
        if path.is_relative_to(SWEEP / "cli"):
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Call):
                func = node.func
                if isinstance(func, ast.Name) and func.id in ("print", "input"):
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
                if (
                    isinstance(func, ast.Attribute)
                    and func.attr == "write"
                    and isinstance(func.value, ast.Attribute)
                    and func.value.attr in ("stdout", "stderr")
                ):
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not offenders, offenders


def test_optunas_private_api_is_touched_only_in_one_package() -> None:
    offenders = []
    for path in _python_files(SWEEP):
        if path.is_relative_to(PRIVATE_OPTUNA):
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith(
                "optuna"
            ):
                private = [p for p in node.module.split(".") if p.startswith("_")]
                names = [a.name for a in node.names if a.name.startswith("_")]
                if private or names:
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.module}")
            own = isinstance(node, ast.Attribute) and (
                isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")
            )
            private = isinstance(node, ast.Attribute) and node.attr in OPTUNA_PRIVATE_ATTRIBUTES
            if private and not own:
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno} .{node.attr}")
    assert not offenders, offenders


def test_another_optuna_major_version_is_refused_in_one_line() -> None:
    from sweep.errors import FatalSweepError
    from sweep.search._optuna import SUPPORTED_MAJOR, check_optuna_version

    check_optuna_version(f"{SUPPORTED_MAJOR}.0.0")
    with pytest.raises(FatalSweepError, match=r"optuna 6\.0\.0 is installed") as caught:
        check_optuna_version("6.0.0")
    assert "\n" not in str(caught.value)


_LIGHT = """
import json, os, sys
before = dict(os.environ)
import sweep
heavy = [m for m in ("tensorflow", "keras", "optuna", "sqlalchemy", "rich", "boto3", "mlflow")
         if m in sys.modules]
print(json.dumps({"heavy": heavy, "environ_changed": dict(os.environ) != before}))
"""


def test_import_sweep_is_light_and_leaves_the_process_alone() -> None:
    done = subprocess.run(
        [sys.executable, "-c", _LIGHT], capture_output=True, text=True, timeout=60, cwd=ROOT
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"heavy": [], "environ_changed": False}


_COMMAND = """
import json, sys
from sweep.cli import main
try:
    code = main(sys.argv[1:])
except SystemExit as e:
    code = e.code
print(json.dumps({"code": code, "tensorflow": "tensorflow" in sys.modules,
                  "keras": "keras" in sys.modules}), file=sys.stderr)
"""


@pytest.mark.parametrize(
    "argv",
    [["--help"], ["--version"], ["best"], ["best", "--json"], ["best", "--format", "json"],
     ["models"], ["models", "add"], ["models", "--format", "json"], ["serve", "--help"]],
    ids=["help", "version", "best", "best-json", "best-format-json", "models", "models-op",
         "models-format-json", "serve-help"],
)
def test_commands_that_read_sql_never_start_tensorflow(argv: list[str], tmp_path: Path) -> None:
    from storage import ModelRegistry

    url = f"sqlite:///{tmp_path / 'empty.db'}"
    ModelRegistry(url).close()  # our tables, no models: the commands answer with one line
    env = {**os.environ, "SWEEP_STORAGE": url}
    done = subprocess.run(
        [sys.executable, "-c", _COMMAND, *argv],
        capture_output=True, text=True, timeout=120, cwd=tmp_path, env=env,
    )
    result = json.loads(done.stderr.strip().splitlines()[-1])
    assert result["code"] in (0, 2), done.stderr
    assert not result["tensorflow"] and not result["keras"], done.stderr


def test_ci_runs_the_readmes_test_command_and_every_tier() -> None:
    """`.ci/run` ends with the README's test command, which runs every tier."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    commands = [line for line in readme.splitlines() if "pytest" in line and "pip install" in line]
    assert commands and len(set(commands)) == 1, commands
    assert commands[0] in ci.splitlines()
    assert '-m ""' in commands[0]  # every tier, `slow` included


def test_no_module_is_larger_than_a_room() -> None:
    """One concept per module: 500 lines is the yardstick."""
    too_big = {
        str(path.relative_to(ROOT)): lines
        for folder in ("sweep", "storage", "benchmarks")
        for path in _python_files(ROOT / folder)
        if (lines := len(path.read_text(encoding="utf-8").splitlines())) > 500
    }
    assert too_big == {}


def test_no_module_imports_another_modules_private_names() -> None:
    """`from x import _name` across our modules couples to what the other module may change
    (Optuna's private names are touched in `sweep.search._optuna` alone: its own test)."""
    import ast

    offenders = []
    for folder in ("sweep", "storage", "benchmarks"):
        for path in _python_files(ROOT / folder):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                ours = ("sweep", "storage", "benchmarks")
                if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(ours):
                    for alias in node.names:
                        if alias.name.startswith("_") and alias.name != "__version__":
                            offenders.append(f"{path.relative_to(ROOT)}: {alias.name}")
    assert offenders == []


def test_the_tests_have_one_conftest() -> None:
    """Test folders are not packages, so every conftest.py is imported as `conftest`: a second
    one shadows tests/conftest.py for the whole suite's `from conftest import ...`."""
    found = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "tests").rglob("conftest.py"))
    assert found == ["tests/conftest.py"]
