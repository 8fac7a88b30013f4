"""A real `sweep run` in a pipe (as under `docker compose logs`): one timestamped line per
finished trial and promotion, each arriving while the run goes on; JSON lines with
`--log-format json`, from local workers too; the final table inside $COLUMNS."""

from __future__ import annotations

import datetime
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sweep.cli.display import LOG_KEYS

pytestmark = pytest.mark.slow

TINY = """
[data]
examples = 400
test_examples = 50
extrapolation_examples = 50
[space]
epochs = 2
"""
STAMP = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z) (.*)$")


def _start(tmp_path: Path, *args: str) -> subprocess.Popen[str]:
    (tmp_path / "tiny.toml").write_text(TINY)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("SWEEP_")},
        "SWEEP_STORAGE": f"sqlite:///{tmp_path / 'sweeps.db'}",
        "SWEEP_ARTIFACTS": str(tmp_path / "artifacts"),
        "COLUMNS": "80",
    }
    return subprocess.Popen(
        [sys.executable, "-m", "sweep", "run", "--ops", "add,multiply", "--trials", "3",
         "--config", "tiny.toml", *args],
        cwd=tmp_path, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, bufsize=1,
    )


def _read_lines(process: subprocess.Popen[str]) -> tuple[list[tuple[str, bool]], str]:
    """Each stderr line as it arrives, with whether the run was still going then."""
    assert process.stderr is not None and process.stdout is not None
    lines = [(line.rstrip("\n"), process.poll() is None) for line in process.stderr]
    out = process.stdout.read()
    assert process.wait(timeout=300) == 0, "\n".join(line for line, _ in lines)
    return lines, out


def test_off_a_terminal_each_trial_and_promotion_is_a_timestamped_line_at_once(
    tmp_path: Path,
) -> None:
    started = time.time()
    lines, out = _read_lines(_start(tmp_path))
    text = "\n".join(line for line, _ in lines)
    assert "Traceback" not in text
    stamped = [(STAMP.match(line), alive) for line, alive in lines]
    assert all(match for match, _ in stamped), text
    events = [(match.group(2), alive) for match, alive in stamped if match]
    trials = [(event, alive) for event, alive in events if re.match(r"\w+: trial \d+ \w+", event)]
    assert any(" promoted, registry version " in event for event, _ in trials), text
    finished = [event for event, _ in trials if "promoted" not in event]
    assert finished and all(
        re.match(r"(add|multiply): trial \d+ (complete|pruned|fail)", e) for e in finished
    )
    # add's first trial is read while the run goes on (multiply is still to come): flushed.
    assert trials[0][0].startswith("add: trial 0") and trials[0][1], text
    done = [event for event, _ in events if "; stopped: " in event]
    assert [event.split(":")[0] for event in done] == ["add", "multiply"], text
    assert all(re.search(r"; stopped: (exact at trial \d+|budget met)$", e) for e in done), text
    first = STAMP.match(lines[0][0])
    assert first is not None
    when = datetime.datetime.fromisoformat(first.group(1).replace("Z", "+00:00"))
    assert when.utcoffset() == datetime.timedelta(0)
    assert abs(when.timestamp() - started) < 120  # UTC, now
    # The final table on stdout keeps inside $COLUMNS.
    assert "Best model per operation" in out
    assert max(len(line.rstrip()) for line in out.splitlines()) <= 80, out


def test_log_format_json_from_the_run_and_its_local_workers(tmp_path: Path) -> None:
    lines, out = _read_lines(_start(tmp_path, "--log-format", "json", "--workers", "2"))
    records = []
    for line, _ in lines:
        record = json.loads(line)  # every stderr line is one JSON object
        assert list(record) == list(LOG_KEYS), line
        records.append(record)
    events = [r["event"] for r in records]
    assert events[0] == "campaign" and events.count("operation_done") == 2, events
    trials = [r for r in records if r["event"] == "trial"]  # printed by the workers
    assert trials and all(r["state"] in ("COMPLETE", "PRUNED", "FAIL") for r in trials)
    assert {r["operation"] for r in trials} == {"add", "multiply"}
    assert all(r["campaign"] == "arith" and r["budget"] == 3 for r in trials)
    assert any(r["event"] == "promoted" and r["version"] >= 1 for r in records)
    for r in records:
        if r["event"] == "operation_done":
            assert r["reason"] in ("exact", "budget met", "time up")
    assert "Best model per operation" in out
