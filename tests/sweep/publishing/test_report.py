"""The HTML report: self-contained, well-formed, a section per operation, robust to odd studies."""

from __future__ import annotations

import base64
import re
from html.parser import HTMLParser
from pathlib import Path

import keras
import optuna
import pytest
import tensorflow as tf
from _finished_sweep import CAMPAIGN, FinishedSweep, finished_sweep
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState
from sqlalchemy.engine import make_url

from storage import Database, ModelCandidate, ModelRegistry
from sweep.cli import main
from sweep.nets import SCHEMES
from sweep.publishing.report import build_report

pytestmark = pytest.mark.slow

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
DATA_URI = re.compile(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"')
# Elements HTML never closes.
VOID = {"meta", "img", "br", "hr", "input", "link", "col", "area", "base", "source", "wbr"}
DATA = {"low": 0, "high": 50, "examples": 200, "seed": 0, "validation_fraction": 0.2,
        "test_examples": 40, "extrapolation_examples": 40}


@pytest.fixture(scope="module")
def sweep_run(tmp_path_factory: pytest.TempPathFactory) -> FinishedSweep:
    return finished_sweep(tmp_path_factory)


class _Outline(HTMLParser):
    """Parses the page strictly enough to catch unbalanced tags; records sections and images."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.sections: dict[str, dict[str, int]] = {}
        self.tags: set[str] = set()
        self.sources: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        values = dict(attrs)
        if tag == "section":
            self.sections[values.get("id") or ""] = {"images": 0}
        if tag == "img":
            self.sources.append(values.get("src") or "")
            current = next((t for t in reversed(self.stack) if t.startswith("section#")), None)
            if current is not None:
                self.sections[current.removeprefix("section#")]["images"] += 1
        for name in ("src", "href"):
            value = values.get(name) or ""
            if value and not value.startswith(("#", "data:image/png;base64,")):
                self.errors.append(f"external reference {name}={value[:60]!r}")
        if tag not in VOID:
            self.stack.append(f"section#{values.get('id')}" if tag == "section" else tag)

    def handle_endtag(self, tag: str) -> None:
        if tag in VOID:
            return
        top = self.stack.pop() if self.stack else None
        if top is None or top.split("#")[0] != tag:
            self.errors.append(f"</{tag}> closes {top!r}")


def _outline(text: str) -> _Outline:
    parser = _Outline()
    parser.feed(text)
    parser.close()
    assert not parser.errors, parser.errors[:5]
    assert not parser.stack, f"unclosed: {parser.stack}"
    return parser


def _section(text: str, name: str) -> str:
    found = re.search(rf'<section id="op-{re.escape(name)}">(.*?)</section>', text, re.S)
    assert found is not None, f"no section for {name}"
    return found.group(1)


def _assert_pngs(text: str) -> int:
    images = DATA_URI.findall(text)
    for data in images:
        assert base64.b64decode(data)[:8] == PNG_MAGIC
    return len(images)


def test_report_of_a_finished_sweep(
    sweep_run: FinishedSweep, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    output = tmp_path / "report.html"
    code = main(["report", "-o", str(output), "--storage", sweep_run.url])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert out.strip() == f"wrote {output}"
    text = output.read_text(encoding="utf-8")
    outline = _outline(text)
    assert "script" not in outline.tags and "<script" not in text
    assert "http://" not in text and "https://" not in text  # nothing to fetch
    assert set(outline.sections) == {"op-add", "op-multiply"}

    with ModelRegistry(sweep_run.url) as registry:
        entries = {e.operation: e for e in registry.best_all(CAMPAIGN)}
    best_table = text.split('<table class="best">', 1)[1].split("</table>", 1)[0]
    for op, entry in entries.items():
        assert f'href="#op-{op}"' in best_table
        assert entry.sha256[:12] in best_table
        section = _section(text, op)
        # History, normalisation, importances (3 complete trials) and the extrapolation plot.
        assert outline.sections[f"op-{op}"]["images"] >= 3
        assert _assert_pngs(section) >= 3
        assert 'alt="optimisation history"' in section
        assert 'alt="best validation error per normalisation scheme"' in section
        assert 'alt="predicted vs true on the extrapolation band"' in section
        assert f"registry version {entry.version} from trial {entry.trial_number}" in section


def _edge_studies(url: str, add_model_bytes: bytes) -> None:
    """Campaign `edge` without a stored config: odd studies, written with Optuna directly."""
    storage = optuna.storages.RDBStorage(url)

    def study(op: str, objective: str = "validation mae") -> optuna.Study:
        created = optuna.create_study(study_name=f"edge.{op}", storage=storage)
        for key, value in {"campaign": "edge", "operation": op, "data": DATA,
                           "objective": objective}.items():
            created.set_user_attr(key, value)
        return created

    def add(
        target: optuna.Study, state: TrialState, normalisation: str, value: float | None = None,
        reports: dict[int, float] | None = None,
    ) -> None:
        target.add_trial(optuna.trial.create_trial(
            state=state, value=value, intermediate_values=reports or {},
            params={"input_normalization": normalisation, "target_normalization": "none",
                    "learning_rate": 0.01},
            distributions={
                "input_normalization": CategoricalDistribution(SCHEMES),
                "target_normalization": CategoricalDistribution(SCHEMES),
                "learning_rate": FloatDistribution(1e-4, 1e-1, log=True),
            },
        ))

    subtract = study("subtract", objective="validation <mae> & friends")
    add(subtract, TrialState.COMPLETE, "none", 120.0, {0: 240.0})
    add(subtract, TrialState.COMPLETE, "standard", 3.5, {0: 7.0})
    add(subtract, TrialState.PRUNED, "none", reports={0: 900.0, 1: 800.0})
    add(subtract, TrialState.PRUNED, "log")  # diverged before reporting anything
    add(subtract, TrialState.FAIL, "minmax")
    subtract.ask()  # still running

    square = study("square")
    add(square, TrialState.COMPLETE, "log", 12.0)

    study("divide")  # created, never ran a trial
    # A name that would be markup if it were not escaped.
    study("<img src=x onerror=alert(1)>")

    add(study("add"), TrialState.COMPLETE, "standard", 0.25)
    with ModelRegistry(url) as registry:
        registry.promote_if_better(ModelCandidate(
            campaign="edge", operation="add", study_name="edge.add", trial_number=0,
            objective_value=0.25, metrics={"test_mae": 0.2, "extrapolation_hit_rate": 0.5},
            params={"architecture": "2-1 linear", "input_normalization": "standard",
                    "target_normalization": "none", "learning_rate": 0.01},
            model_bytes=add_model_bytes, keras_version=keras.__version__,
            tensorflow_version=tf.__version__,
        ))


def test_report_with_failed_pruned_single_empty_and_modelless_studies(
    sweep_run: FinishedSweep, tmp_path: Path
) -> None:
    with ModelRegistry(sweep_run.url) as registry:
        _, add_bytes = registry.fetch(CAMPAIGN, "add")
    _edge_studies(sweep_run.url, add_bytes)
    output = build_report(Database(sweep_run.url), "edge", tmp_path / "edge.html")
    text = output.read_text(encoding="utf-8")
    outline = _outline(text)
    assert "<img src=x" not in text and "&lt;img src=x onerror=alert(1)&gt;" in text
    assert "validation &lt;mae&gt; &amp; friends" in text
    assert not any(name.startswith("op-arith") for name in outline.sections)

    subtract = _section(text, "subtract")
    assert "6 trials (2 complete, 2 pruned, 1 failed, 1 running)" in subtract
    assert _assert_pngs(subtract) == 2  # history and normalisation
    assert "No model in the registry" in subtract
    assert "Parameter importances need at least 3 complete trials; this study has 2" in subtract

    square = _section(text, "square")
    assert "1 trial (1 complete, 0 pruned)" in square
    assert _assert_pngs(square) == 2

    divide = _section(text, "divide")
    assert "no trials yet" in divide and _assert_pngs(divide) == 0

    single = _section(text, "add")  # one trial, a model, data from the study's attributes
    assert _assert_pngs(single) == 3
    assert 'alt="predicted vs true on the extrapolation band"' in single
    assert "[50, 100)" in single


def test_report_refuses_a_symlink_a_directory_and_an_unknown_campaign(
    sweep_run: FinishedSweep, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "elsewhere.html"
    target.write_text("keep me")
    link = tmp_path / "link.html"
    link.symlink_to(target)
    cases = [
        (["-o", str(link)], "symbolic link"),
        (["-o", str(tmp_path)], "is a directory"),
        (["-o", str(tmp_path / "missing" / "r.html")], "does not exist"),
        (["-o", str(tmp_path / "r.html"), "--campaign", "nothing"], "has no studies and no models"),
    ]
    for args, message in cases:
        code = main(["report", "--storage", sweep_run.url, *args])
        _, err = capsys.readouterr()
        assert code == 2, args
        assert message in err and len(err.strip().splitlines()) == 1, err
    assert target.read_text() == "keep me"
    assert not (tmp_path / "r.html").exists()


def test_report_on_a_missing_sqlite_file_creates_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["report", "-o", str(tmp_path / "r.html"), "--storage",
                 f"sqlite:///{tmp_path / 'none.db'}"])
    _, err = capsys.readouterr()
    assert code == 2 and "no database at" in err
    assert not (tmp_path / "none.db").exists()


@pytest.mark.server
def test_the_password_never_reaches_the_report(tmp_path: Path) -> None:
    from _servers import drop_server_database, make_server_database, require_server

    require_server("postgresql")
    plain = make_server_database("postgresql")
    try:
        # The local server trusts 127.0.0.1, so a made-up password still connects.
        url = make_url(plain).set(password="pw-s3cr3t").render_as_string(hide_password=False)
        created = optuna.create_study(study_name="secret.add", storage=url)
        created.set_user_attr("data", DATA)
        created.add_trial(optuna.trial.create_trial(
            value=1.0, params={"input_normalization": "log", "target_normalization": "log"},
            distributions={"input_normalization": CategoricalDistribution(SCHEMES),
                           "target_normalization": CategoricalDistribution(SCHEMES)},
        ))
        path = build_report(Database(url), "secret", tmp_path / "r.html")
        text = path.read_text(encoding="utf-8")
        assert "pw-s3cr3t" not in text
        assert "***" in text
        _outline(text)
    finally:
        drop_server_database("postgresql", plain)
