"""A campaign's named inputs, ranges and tables: from the file and the flags, stored with the
campaign, its identity, and a worker elsewhere that has only the database."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import optuna
import pytest
from sqlalchemy import update

from storage import Database
from storage.models import datasets_table
from sweep.cli.main import main
from sweep.errors import ConfigError
from sweep.search.config import CampaignConfig, config_from_toml, load_toml

GAS = """
[campaign]
operations = ["gas", "add"]
[expressions]
gas = "n*R*T/V"
[inputs.gas]
n = { low = 1, high = 5, kind = "real" }
R = { low = 8, high = 9, kind = "real" }
T = { low = 250, high = 350, kind = "real", extrapolation = { low = 350, high = 500 } }
V = { low = 1, high = 10, kind = "real" }
[inputs.add]
a = { low = -2, high = 2, kind = "real" }
"""

SMALL = """
[data]
examples = 400
test_examples = 50
extrapolation_examples = 50
[space]
epochs = 2
layers = { low = 0, high = 1 }
"""


def _csv(path: Path, rows: int = 300, seed: int = 0) -> Path:
    """A table generated from the gas law, written as a user's CSV (header, then rows)."""
    rng = np.random.default_rng(seed)
    n, r, t, v = (rng.uniform(lo, hi, rows) for lo, hi in ((1, 5), (8, 9), (250, 350), (1, 10)))
    lines = ["n,R,T,V,P"] + [
        ",".join(repr(float(x)) for x in row) for row in zip(n, r, t, v, n * r * t / v, strict=True)
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def _config(tmp_path: Path, text: str) -> CampaignConfig:
    path = tmp_path / "campaign.toml"
    path.write_text(text)
    config = config_from_toml(load_toml(path), base_dir=tmp_path)
    config.validate()
    return config


def test_named_inputs_and_ranges_from_the_campaign_file(tmp_path: Path) -> None:
    config = _config(tmp_path, GAS)
    gas, add = config.resolved_operations()
    assert gas.inputs == ("n", "R", "T", "V") and not gas.integer_valued
    assert [r.kind for r in gas.ranges] == ["real"] * 4
    assert gas.ranges[2].band == (350, 500) and gas.ranges[3].band == (10, 19)
    # The built-in over a real range of its own is real-valued; its b keeps [data]'s range.
    assert add.inputs == ("a", "b") and not add.integer_valued
    assert (add.ranges[1].low, add.ranges[1].high, add.ranges[1].legacy) == (0, 500, True)
    again = CampaignConfig.from_dict(config.to_dict())
    assert again.to_dict() == config.to_dict()
    assert again.resolved_operations() == config.resolved_operations()


def test_a_table_in_the_campaign_file_is_read_from_its_folder(tmp_path: Path) -> None:
    _csv(tmp_path / "gas.csv")
    config = _config(tmp_path, """
[campaign]
operations = ["measured"]
[datasets]
measured = { file = "gas.csv", target = "P", inputs = ["V", "T", "R", "n"] }
""")
    (measured,) = config.resolved_operations()
    assert measured.table and measured.inputs == ("V", "T", "R", "n")
    assert not measured.integer_valued
    stored = config.to_dict()["datasets"]["measured"]
    assert stored["rows"] == 300 and stored["target"] == "P" and len(stored["sha256"]) == 64
    restored = CampaignConfig.from_dict(config.to_dict())
    assert restored.datasets["measured"].table is None  # the rows live in the database
    assert restored.resolved_operations() == config.resolved_operations()


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ('[inputs.gas]\nx = { low = 0, high = 1 }',
         "inputs.gas.x: 'x' is not an input of gas (its inputs: n, R, T, V)"),
        ('[inputs.cube]\na = { low = 0, high = 1 }',
         "inputs.cube names an operation this campaign does not sweep"),
        ('[datasets]\nt = { file = "missing.csv", target = "P" }', "missing.csv"),
        ('[datasets]\nt = { file = "gas.csv", target = "Q" }', "'Q'"),
        ('[datasets]\nt = { file = "gas.csv", target = "P", colour = 1 }',
         "unknown key datasets.t.colour"),
        ('[datasets]\nAdd = { file = "gas.csv", target = "P" }', "datasets.Add"),
        ('[datasets]\nadd = { file = "gas.csv", target = "P" }', "built-in"),
        ('[datasets]\ngas = { file = "gas.csv", target = "P" }', "defined twice"),
        ('[datasets]\nt = { file = "gas.csv", target = "P" }\n'
         '[inputs.t]\nn = { low = 0, high = 1 }', "'t' is a table"),
    ],
)
def test_bad_inputs_and_datasets_are_one_line(tmp_path: Path, text: str, named: str) -> None:
    _csv(tmp_path / "gas.csv")
    base = '[campaign]\noperations = ["gas"]\n[expressions]\ngas = "n*R*T/V"\n'
    with pytest.raises(ConfigError) as excinfo:
        _config(tmp_path, base + text)
    message = str(excinfo.value)
    assert named in message and "\n" not in message


def test_the_identity_holds_the_ranges_and_the_tables_content_not_its_path(
    tmp_path: Path,
) -> None:
    _csv(tmp_path / "gas.csv")
    (tmp_path / "copy").mkdir()
    _csv(tmp_path / "copy" / "gas.csv")
    text = '[datasets]\nt = { file = "%s", target = "P" }\n'
    first = _config(tmp_path, text % "gas.csv")
    moved = _config(tmp_path, text % "copy/gas.csv")
    assert moved.identity_conflicts(first) == []
    _csv(tmp_path / "other.csv", seed=1)
    assert _config(tmp_path, text % "other.csv").identity_conflicts(first) == ["datasets.t"]
    wider = _config(tmp_path, GAS.replace("high = 5,", "high = 6,"))
    assert wider.identity_conflicts(_config(tmp_path, GAS)) == ["inputs"]


def _run_main(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        code = main(argv)
    except SystemExit as e:
        code = int(e.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize(
    ("flags", "named"),
    [
        (["--data", "gas.csv"], "--data 'gas.csv' is not NAME=FILE"),
        (["--data", "t=gas.csv"], "--data needs --target COLUMN"),
        (["--target", "P"], "give --data"),
        (["--data", "t=gas.csv", "--data", "u=gas.csv", "--target", "P", "--target", "P",
          "--target", "P"], "3 --target flags for 2 --data flags"),
        (["--data", "t=nothere.csv", "--target", "P"], "nothere.csv"),
        (["--data", "t=bad.csv", "--target", "P"], "line 3"),
    ],
)
def test_bad_data_flags_are_one_line_and_write_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
    flags: list[str], named: str,
) -> None:
    monkeypatch.chdir(tmp_path)
    _csv(tmp_path / "gas.csv")
    (tmp_path / "bad.csv").write_text("x,P\n1,2\n3,four\n" + "5,6\n" * 30)
    database = tmp_path / "sweeps.db"
    code, _, err = _run_main(["run", *flags, "--storage", f"sqlite:///{database}"], capsys)
    assert code == 2 and named in err and len(err.strip().splitlines()) == 1, err
    assert not database.exists()


def _sweep(*args: str, cwd: Path, storage: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SWEEP_STORAGE": storage}
    return subprocess.run(
        [sys.executable, "-m", "sweep", *args], cwd=cwd, env=env, capture_output=True,
        text=True, timeout=600,
    )


@pytest.mark.slow
def test_a_worker_elsewhere_reads_the_campaigns_table_from_the_database_alone(
    tmp_path: Path, storage_url: str
) -> None:
    here, elsewhere = tmp_path / "here", tmp_path / "elsewhere"
    here.mkdir()
    elsewhere.mkdir()
    _csv(here / "gas.csv")
    (here / "small.toml").write_text(SMALL)
    run = _sweep("run", "--config", "small.toml", "--data", "gas=gas.csv", "--target", "P",
                 "--trials", "2", "--no-stop-when-exact", "--campaign", "tab",
                 cwd=here, storage=storage_url)
    assert run.returncode == 0, run.stderr
    (here / "gas.csv").unlink()  # nothing of the table is left on disk

    joined = _sweep("worker", "--campaign", "tab", cwd=elsewhere, storage=storage_url)
    assert joined.returncode == 0, joined.stderr
    assert "Traceback" not in joined.stderr
    study = optuna.load_study(study_name="tab.gas", storage=storage_url)
    assert study.user_attrs["inputs"] == ["n", "R", "T", "V"]
    assert len(study.user_attrs["data_fingerprint"]) == 64

    # A damaged stored table stops the worker with one line, and nothing is lost.
    with Database(storage_url) as database, database.engine.begin() as connection:
        connection.execute(update(datasets_table).values(data=b"SWEEPTBL1 damaged"))
    refused = _sweep("worker", "--campaign", "tab", cwd=elsewhere, storage=storage_url)
    assert refused.returncode == 2
    assert "Traceback" not in refused.stderr and len(refused.stderr.strip().splitlines()) == 1
    assert "gas" in refused.stderr
    assert len(optuna.load_study(study_name="tab.gas", storage=storage_url).trials) >= 2


def test_the_python_api_reads_a_campaign_file_as_the_command_line_does(tmp_path: Path) -> None:
    import sweep

    _csv(tmp_path / "gas.csv")
    (tmp_path / "c.toml").write_text(GAS + '[datasets]\nmeasured = { file = "gas.csv", '
                                     'target = "P" }\n')
    config = sweep.campaign_from_toml(tmp_path / "c.toml")
    assert [op.name for op in config.resolved_operations()] == ["gas", "add", "measured"]
    with pytest.raises(ConfigError, match=r"dataset .measured. .* has 1 row; at least 20"):
        (tmp_path / "gas.csv").write_text("n,P\n1,2\n")
        sweep.campaign_from_toml(tmp_path / "c.toml")


# Values a float64 must carry unchanged: shortest forms, tiny and subnormal numbers, signed
# zero, 2**53 and its neighbour below, numbers written with more digits than a float64 holds.
_AWKWARD = (
    "0.1",
    "-0",
    "5e-324",
    "2.2250738585072014e-308",
    "9007199254740992",
    "9007199254740991",
    "123456789.123456789",
    "-1.7976931348623157e+308",
    "3.141592653589793238462643383279",
)


def test_a_table_round_trips_through_the_database_bit_for_bit(
    tmp_path: Path, storage_url: str
) -> None:
    """A CSV file read by `sweep run`, stored with the campaign, then read back by a worker
    that has only the database (SQLite, PostgreSQL, MariaDB): the same bits, row for row, so
    the same splits and the same recorded fingerprint."""
    from benchmarks.scale import LinearTrainer
    from sweep.search.campaign import Campaign

    rng = np.random.default_rng(3)
    lines = ["x,z,y"]
    for i in range(60):
        x = _AWKWARD[i // 3 % len(_AWKWARD)] if i % 3 == 0 else repr(float(rng.uniform(-5, 5)))
        z = repr(float(rng.normal()))
        lines.append(f"{x},{z},{float(rng.uniform(0, 1e6))!r}")
    (tmp_path / "t.csv").write_text("\n".join(lines) + "\n")
    config = _config(
        tmp_path,
        '[campaign]\nname = "rt"\noperations = ["tab"]\n'
        '[datasets]\ntab = { file = "t.csv", target = "y" }\n',
    )
    read = config.datasets["tab"].table
    assert read is not None
    assert read.x[0, 0] == 0.1 and np.signbit(read.x[3, 0]) and read.x[6, 0] == 5e-324

    with Campaign(config, Database(storage_url), LinearTrainer()) as here:
        written = here.datasets["tab"]
    (tmp_path / "t.csv").unlink()

    from sweep.publishing.pulling import campaign_table
    from sweep.search.config import load_campaign_config

    with Database(storage_url, read_only=True) as database:
        stored_config = load_campaign_config(database.campaigns, "rt")
        assert stored_config is not None and stored_config.datasets["tab"].table is None
        (op,) = stored_config.resolved_operations()
        back = campaign_table(database, stored_config, op)
    assert back is not None and back.inputs == ("x", "z") and back.target == "y"
    assert back.x.tobytes() == read.x.tobytes() and back.y.tobytes() == read.y.tobytes()

    with Campaign.join(Database(storage_url), "rt", LinearTrainer()) as there:
        joined = there.datasets["tab"]
        recorded = there.studies["tab"].user_attrs["data_fingerprint"]
    assert joined.fingerprint == written.fingerprint == recorded
    for split in ("train", "val", "test", "extrapolation"):
        for kind in ("x", "y"):
            ours = getattr(written, f"{kind}_{split}")
            theirs = getattr(joined, f"{kind}_{split}")
            assert ours.dtype == theirs.dtype and ours.tobytes() == theirs.tobytes(), split


def test_a_run_naming_fewer_operations_keeps_the_stored_tables_and_formulas(
    tmp_path: Path,
) -> None:
    """`sweep run --data gas=... --expr cube=...`, then `sweep run --ops add` on the same
    campaign: the stored campaign still records the table and the formula, so a worker, predict
    and best still know them (the second run used to store the list without the table)."""
    from benchmarks.scale import LinearTrainer
    from sweep.search.campaign import Campaign
    from sweep.search.config import load_campaign_config

    _csv(tmp_path / "gas.csv", rows=60)
    url = f"sqlite:///{tmp_path / 'sweeps.db'}"
    first = _config(
        tmp_path,
        '[campaign]\nname = "re"\noperations = ["gas", "cube"]\n[expressions]\ncube = "a*a*a"\n'
        '[datasets]\ngas = { file = "gas.csv", target = "P" }\n',
    )
    with Campaign(first, Database(url), LinearTrainer()):
        pass
    (tmp_path / "gas.csv").unlink()
    fewer = _config(tmp_path, '[campaign]\nname = "re"\noperations = ["add"]\n')
    with Campaign(fewer, Database(url), LinearTrainer()):
        pass
    with Database(url) as database:
        stored = load_campaign_config(database.campaigns, "re")
    assert stored is not None
    assert stored.operations == ("gas", "cube", "add") and set(stored.datasets) == {"gas"}
    assert [op.name for op in stored.resolved_operations()] == ["gas", "cube", "add"]
    with Campaign.join(Database(url), "re", LinearTrainer()) as worker:
        assert worker.datasets["gas"].operation.inputs == ("n", "R", "T", "V")

    # The same name as a formula here and a table there is another campaign.
    for text, named in (
        ('[expressions]\ngas = "n*R*T/V"\n', "expressions.gas (a table in the stored"),
        (
            '[datasets]\ncube = { file = "again.csv", target = "P" }\n',
            "datasets.cube (an expression in the stored",
        ),
    ):
        _csv(tmp_path / "again.csv", rows=60)
        other = _config(tmp_path, '[campaign]\nname = "re"\noperations = ["add"]\n' + text)
        with pytest.raises(ConfigError, match=re.escape(named)):
            Campaign(other, Database(url), LinearTrainer())
