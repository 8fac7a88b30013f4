"""Paths: names that could reach the file system (operation and campaign names become study
names, artifact file names and default output files) are refused when they hold a path
separator, `..` or a control character; `pull -o` writes exactly the path it is given, never
over an existing file without --force, never through a symlink, never into a directory."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import keras
import pytest

from storage import ModelCandidate, ModelRegistry
from sweep.cli import main
from sweep.errors import ConfigError
from sweep.nets.saving import serialize_model
from sweep.publishing.outputs import write_atomically

BAD_OPERATION_NAMES = ["../x", "a/b", "..", "x\ny", "x\x00y", "x\ry", "x\x1b[2Jy", "x\\y", "/x"]
BAD_CAMPAIGN_NAMES = [
    "../x", "a/b", "..", ".", "", "abc\n", "a\nb", "a\x00b", "\x1b[31mred", "a\\b", "/abs",
]


def _run_main(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        code = main(argv)
    except SystemExit as e:  # argparse's own refusals
        code = int(e.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def _toml_escape(text: str) -> str:
    """`text` inside a TOML basic string, control characters included."""
    return "".join(
        f"\\u{ord(c):04x}" if ord(c) < 0x20 or c in '"\\\x7f' else c for c in text
    )


def _snapshot(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty working folder whose SQLite default storage must stay uncreated."""
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    for name in ("SWEEP_STORAGE", "SWEEP_CAMPAIGN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SWEEP_ARTIFACTS", str(work / "artifacts"))
    return work


def _refused(
    argv: list[str], capsys: pytest.CaptureFixture[str], folder: Path, *named: str
) -> None:
    before = _snapshot(folder.parent)
    code, out, err = _run_main(argv, capsys)
    assert code == 2 and out == "", (argv, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for text in named:
        assert text in lines[0], (text, lines[0])
    assert _snapshot(folder.parent) == before, argv  # nothing written anywhere


@pytest.mark.parametrize("name", BAD_OPERATION_NAMES)
def test_bad_operation_names_are_refused_from_flags_and_files(
    name: str, workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shown = repr(name)[1:-1]
    _refused(["run", "--expr", f"{name}=a*b"], capsys, workdir, "operation name", shown)
    config = workdir.parent / "c.toml"
    config.write_text(f'[expressions]\n"{_toml_escape(name)}" = "a*b"\n')
    _refused(["run", "--config", str(config)], capsys, workdir, "operation name", shown)
    for argv in (["run", "--ops", name], ["pull", name], ["predict", name, "1", "2"],
                 ["models", name]):
        _refused(argv, capsys, workdir, "operation")


@pytest.mark.parametrize("name", BAD_CAMPAIGN_NAMES)
def test_bad_campaign_names_are_refused_by_every_command(
    name: str, workdir: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    shown = repr(name)
    for argv in (
        ["run", "--ops", "add", "--trials", "1"], ["worker"], ["best"], ["models"],
        ["pull", "add"], ["predict", "add", "1", "2"], ["report"],
    ):
        _refused([*argv, "--campaign", name], capsys, workdir, "invalid campaign name", shown)
    if name and "\x00" not in name:  # empty means "not set"; NUL cannot be in an environment
        monkeypatch.setenv("SWEEP_CAMPAIGN", name)
        _refused(["run", "--ops", "add", "--trials", "1"], capsys, workdir, shown)
        monkeypatch.delenv("SWEEP_CAMPAIGN")
    config = workdir.parent / "c.toml"
    config.write_text(f'[campaign]\nname = "{_toml_escape(name)}"\n')
    _refused(["run", "--config", str(config)], capsys, workdir, "invalid campaign name", shown)


# --- pull -o ----------------------------------------------------------------------------------


@pytest.fixture
def registry_url(tmp_path: Path) -> str:
    """A registry holding one small, safe model for add."""
    url = f"sqlite:///{tmp_path / 'registry.db'}"
    inputs = keras.Input(shape=(2,))
    data = serialize_model(keras.Model(inputs, keras.layers.Dense(1)(inputs)))
    with ModelRegistry(url) as registry:
        registry.promote_if_better(
            ModelCandidate(
                campaign="arith", operation="add", study_name="arith.add", trial_number=0,
                objective_value=0.0, metrics={}, params={}, model_bytes=data,
                keras_version=keras.__version__, tensorflow_version="2",
            )
        )
    return url


def _pull(
    output: str, url: str, capsys: pytest.CaptureFixture[str], *flags: str
) -> tuple[int, str]:
    code, _, err = _run_main(["pull", "add", "-o", output, "--storage", url, *flags], capsys)
    return code, err


def test_pull_writes_exactly_the_given_path(
    tmp_path: Path, workdir: Path, registry_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    outside = tmp_path / "out"
    outside.mkdir()
    before = _snapshot(tmp_path)
    code, err = _pull("../out/add.keras", registry_url, capsys)
    assert code == 0, err
    assert _snapshot(tmp_path) == sorted([*before, "out/add.keras"])  # that file, nothing else
    assert (outside / "add.keras").read_bytes()[:2] == b"PK"

    code, err = _pull("sub/../here.keras", registry_url, capsys)
    assert code == 2 and "does not exist" in err  # `sub` is missing: no folder is created
    assert not (workdir / "sub").exists() and not (workdir / "here.keras").exists()


Setup = Callable[[Path], None]


def _existing_file(path: Path) -> None:
    path.write_bytes(b"keep me")


def _dangling_symlink(path: Path) -> None:
    path.symlink_to(path.parent / "target.keras")


def _symlink_to_file(path: Path) -> None:
    (path.parent / "target.keras").write_bytes(b"keep me")
    path.symlink_to(path.parent / "target.keras")


def _directory(path: Path) -> None:
    path.mkdir()
    (path / "inside").write_bytes(b"keep me")


def _symlink_to_directory(path: Path) -> None:
    (path.parent / "folder").mkdir()
    path.symlink_to(path.parent / "folder")


@pytest.mark.parametrize(
    ("setup", "force", "message"),
    [
        (_existing_file, False, "exists; pass --force"),
        (_dangling_symlink, False, "symbolic link"),
        (_dangling_symlink, True, "symbolic link"),
        (_symlink_to_file, True, "symbolic link"),
        (_symlink_to_directory, True, "symbolic link"),
        (_directory, False, "is a directory"),
        (_directory, True, "is a directory"),
    ],
    ids=["file", "dangling-link", "dangling-link-force", "file-link-force", "dir-link-force",
         "directory", "directory-force"],
)
def test_pull_never_overwrites_and_never_follows(
    setup: Setup, force: bool, message: str, tmp_path: Path, workdir: Path,
    registry_url: str, capsys: pytest.CaptureFixture[str],
) -> None:
    target = workdir / "add.keras"
    setup(target)
    before = {p: (p.is_symlink(), p.read_bytes() if p.is_file() else None)
              for p in workdir.rglob("*")}
    code, err = _pull("add.keras", registry_url, capsys, *(["--force"] if force else []))
    assert code == 2 and message in err, err
    assert len(err.strip().splitlines()) == 1
    after = {p: (p.is_symlink(), p.read_bytes() if p.is_file() else None)
             for p in workdir.rglob("*")}
    assert after == before  # the target, a symlink's target and any temp file: all untouched


def test_the_atomic_write_never_overwrites_or_follows_even_in_a_race(tmp_path: Path) -> None:
    """`write_atomically` is the last step of a pull; a file or symlink that appears after the
    checks is still safe: without --force the write fails, with it the link itself is replaced."""
    path = tmp_path / "m.keras"
    path.write_bytes(b"appeared meanwhile")
    with pytest.raises(ConfigError, match="exists"):
        write_atomically(path, b"new", force=False)
    assert path.read_bytes() == b"appeared meanwhile"

    target = tmp_path / "elsewhere"
    target.write_bytes(b"keep me")
    path.unlink()
    path.symlink_to(target)
    write_atomically(path, b"new", force=True)
    assert not path.is_symlink() and path.read_bytes() == b"new"
    assert target.read_bytes() == b"keep me"
    assert sorted(os.listdir(tmp_path)) == ["elsewhere", "m.keras"]  # no temp file left


@pytest.mark.parametrize("output", ["add.h5", "add.keras\n", "add", "add.keras/"])
def test_pull_refuses_outputs_keras_cannot_load_by_name(
    output: str, workdir: Path, registry_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    before = _snapshot(workdir)
    code, err = _pull(output, registry_url, capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert _snapshot(workdir) == before
