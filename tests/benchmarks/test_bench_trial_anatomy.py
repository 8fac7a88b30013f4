"""The trial anatomy benchmark for real at its smallest: a short sqrt sweep, clocked."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
from _bench_markdown import number, rows

from benchmarks.trial_anatomy import PHASES, main, measure, render

pytestmark = pytest.mark.slow


@pytest.mark.timeout(600)
def test_every_trial_is_clocked_phase_by_phase_and_named_by_family(tmp_path: Path) -> None:
    handlers = [signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)]
    anatomy = measure("sqrt", timeout=4, folder=tmp_path)
    # The sweep's stop-signal handlers are not left behind in this process.
    assert [signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)] == handlers
    assert len(anatomy.trials) >= 3 and len(anatomy.families) == len(anatomy.trials)
    # Every trial is found in the study by its number.
    assert set(anatomy.families) <= {"mlp", "power", "formula"}
    for index, trial in enumerate(anatomy.trials):
        assert trial.get("training", 0) > 0 and trial.get("ask", 0) > 0, (index, trial)
        assert trial.get("tell", 0) > 0 and trial.get("objective's rest", 0) > 0
        assert set(trial) <= set(PHASES)
    assert all("between" in t for t in anatomy.trials[1:])
    table = "\n".join(render(anatomy))
    for phase in PHASES:
        assert len(rows(table, phase)) == 1
    whole = rows(table, "whole trial")[0]
    assert whole[-1].endswith("100% of all")
    shares = [number(rows(table, phase)[0][-1].split(", ")[1]) for phase in PHASES]
    assert 98 <= sum(shares) <= 102  # the phases cover the trial (rounding aside)


def test_a_timeout_out_of_bounds_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--timeout", "0"])
    assert exit_info.value.code == 2
    assert "--timeout must be 1-3600 seconds, got 0" in capsys.readouterr().err
