"""Secrets: a database password never appears in output, study attributes, notes, the stored
campaign, the report or error messages.

The local PostgreSQL trusts local connections and ignores the password in the URL, so a real
sweep runs with a URL that carries one, and every place it could leak to is searched for it.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import optuna_dashboard
import pytest
import sqlalchemy
from _fault_helpers import (
    CAMPAIGN,
    OPERATIONS,
    campaign_file,
    run_sweep,
    studies,
    sweep_env,
)
from sqlalchemy.engine import make_url

from sweep.cli import main

PASSWORD = "Sup3rS3cret"


def _url_with_password(url: str) -> str:
    return make_url(url).set(password=PASSWORD).render_as_string(hide_password=False)


def _cli(argv: list[str], capfd: pytest.CaptureFixture[str]) -> tuple[int, str]:
    try:
        code = main(argv)
    except SystemExit as e:
        code = int(e.code or 0)
    out, err = capfd.readouterr()
    return code, out + err


def _database_text(url: str) -> str:
    """Every row of every table (Optuna's and ours) as text."""
    engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.NullPool)
    chunks: list[str] = []
    try:
        with engine.connect() as connection:
            for table in sqlalchemy.inspect(connection).get_table_names():
                rows = connection.exec_driver_sql(f'SELECT t::text FROM "{table}" t').scalars()
                chunks.extend(str(row) for row in rows)
    finally:
        engine.dispose()
    return "\n".join(chunks)


@pytest.mark.slow
@pytest.mark.server
@pytest.mark.parametrize("server_url", ["postgresql"], indirect=True)
def test_a_real_sweep_never_shows_or_stores_the_password(
    server_url: str, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    url = _url_with_password(server_url)
    assert PASSWORD in url
    config = campaign_file(tmp_path, trials=2, epochs=2)
    env = sweep_env(url, tmp_path)
    env.pop("SWEEP_STORAGE")
    result = run_sweep(["run", "--config", str(config), "--storage", url], env, tmp_path)
    assert result.returncode == 0, result.stderr
    seen = [result.stdout, result.stderr]
    assert "***@" in result.stderr  # the banner names the storage, masked

    report = tmp_path / "report.html"
    for argv in (
        ["best"], ["best", "--json"], ["models"], ["models", "add"],
        ["pull", "add", "-o", str(tmp_path / "add.keras")], ["predict", "multiply", "12", "34"],
        ["report", "-o", str(report)],
    ):
        code, output = _cli([*argv, "--storage", url, "--campaign", CAMPAIGN], capfd)
        assert code == 0, (argv, output)
        seen.append(output)
    seen.append(report.read_text())

    dashboard = subprocess.Popen(
        [sys.executable, "-m", "sweep", "dashboard", "--storage", url, "--port", "0",
         "--artifacts", str(tmp_path / "artifacts")],
        env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert dashboard.stdout is not None
        lines = [dashboard.stdout.readline(), dashboard.stdout.readline()]
    finally:
        dashboard.send_signal(signal.SIGTERM)
        rest, errors = dashboard.communicate(timeout=30)
    assert lines[0].startswith("optuna-dashboard on postgresql+psycopg://postgres:***@"), lines
    seen += [*lines, rest, errors]

    for study in studies(server_url, OPERATIONS).values():
        storage = study._storage
        seen.append(json.dumps(study.user_attrs, default=str))
        seen.append(json.dumps(storage.get_study_system_attrs(study._study_id), default=str))
        seen.append(optuna_dashboard.get_note(study))
        for trial in study.trials:
            seen.append(json.dumps([trial.user_attrs, trial.system_attrs], default=str))
    database = _database_text(server_url)
    assert "sweep_campaigns" in database or CAMPAIGN in database  # the scan saw our rows
    seen.append(database)
    seen += [p.read_bytes().decode("latin-1") for p in tmp_path.rglob("*") if p.is_file()
             and p.suffix != ".db"]

    leaks = [text[:200] for text in seen if PASSWORD in text]
    assert not leaks


@pytest.mark.parametrize(
    "url",
    [
        f"postgresql+psycopg://postgres:{PASSWORD}@127.0.0.1:1/db",  # nothing listens
        f"postgresql+psycopg://postgres:{PASSWORD}@no-such-host.invalid/db",  # no such host
        f"mysql+pymysql://root:{PASSWORD}@127.0.0.1:3306/test",  # wrong password
        f"postgresql+psycopg://postgres:{PASSWORD}@127.0.0.1:notaport/db",  # malformed
        f"postgresql+psycopg://postgres@127.0.0.1:1/db?password={PASSWORD}",  # in the query
        f"redis://user:{PASSWORD}@127.0.0.1/0",  # unsupported
    ],
    ids=["refused", "unknown-host", "bad-credentials", "malformed", "query", "unsupported"],
)
def test_errors_about_a_url_never_show_its_password(
    url: str, tmp_path: Path, capfd: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SWEEP_STORAGE", raising=False)
    for argv in (
        ["run", "--ops", "add", "--trials", "1"], ["worker"], ["best"], ["models"],
        ["pull", "add"], ["predict", "add", "1", "2"], ["report"], ["dashboard", "--port", "0"],
    ):
        code, output = _cli([*argv, "--storage", url], capfd)
        assert code == 2, (argv, output)
        assert PASSWORD not in output, (argv, output)
        assert len(output.strip().splitlines()) == 1, (argv, output)
    # The same through the environment, as workers receive it.
    monkeypatch.setenv("SWEEP_STORAGE", url)
    code, output = _cli(["best"], capfd)
    assert code == 2 and PASSWORD not in output, output
    assert list(tmp_path.iterdir()) == []
