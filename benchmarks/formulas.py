"""Formulas with 3 to 9 named real inputs, each swept twice: from its expression and from a CSV.

Per formula: a campaign file with the expression and its inputs' real ranges (`sweep run
--config F.toml`), and a CSV of the same number of rows as the expression's `[data] examples`,
generated here with NumPy from the formula over the same ranges (seeded, independent of the
service's expression evaluator), swept as a table (`sweep run --data F=F.csv --target
target`). Both with default settings but the budget (`--trials N --timeout S`), each on a
fresh SQLite database in a temporary folder, each the `sweep` command in a subprocess, as a
user runs it; its wall time is measured. Then `sweep best --format json` gives the best
model's metrics (hit rate on unseen in-range rows and in the extrapolation band) and Optuna's
study the counted trials.

The point is that the two sources agree: both exact, or both inexact with a similar in-range
error. The extrapolation bands differ by design: an expression's is [high, high + (high - low))
of every input, a table's is its own rows above the q-quantile of at least one input (q =
0.9 ** (1 / inputs)), inside the ranges the CSV was drawn from.
"""

from __future__ import annotations

import json
import math
import subprocess
import tempfile
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt

from benchmarks._common import last_line, load_average, log, median, run_logged, sweep_command
from benchmarks.tables import fraction, significant, table

__all__ = [
    "FORMULAS",
    "QUICK_FORMULAS",
    "Formula",
    "FormulaCase",
    "FormulasResult",
    "SourceRun",
    "agreement",
    "agrees",
    "campaign_toml",
    "render_section",
    "run_formulas",
    "target_lines",
    "write_csv",
]

Columns = Mapping[str, npt.NDArray[np.float64]]
EXPRESSION, CSV = "expression", "CSV"
TARGET = "target"  # the CSV's result column; no formula has an input of that name
ROWS = 10_000  # the default `[data] examples`
# Both inexact: they agree when their in-range median relative errors are within this factor.
SIMILAR_ERROR = 10.0


@dataclass(frozen=True)
class Formula:
    name: str
    expression: str
    ranges: str  # "n=1:5 R=8:9": each input's real range [low, high), in input order
    compute: Callable[[Columns], npt.NDArray[np.float64]]  # the same formula, in NumPy

    @property
    def bounds(self) -> dict[str, tuple[float, float]]:
        pairs = (item.split("=") for item in self.ranges.split())
        return {name: (float(span.split(":")[0]), float(span.split(":")[1]))
                for name, span in pairs}


def _f(name: str, expression: str, ranges: str,
       compute: Callable[[Columns], npt.NDArray[np.float64]]) -> Formula:
    return Formula(name, expression, ranges, compute)


# Input names in order of first appearance in the expression (the service's input order).
FORMULAS: tuple[Formula, ...] = (
    # products and quotients
    _f("gas", "n*R*T/V", "n=1:5 R=8:9 T=250:350 V=1:10",
       lambda v: v["n"] * v["R"] * v["T"] / v["V"]),
    _f("gravity", "G*m1*m2/r**2", "G=6:7 m1=1:100 m2=1:100 r=1:10",
       lambda v: v["G"] * v["m1"] * v["m2"] / v["r"] ** 2),
    _f("box", "l*w*h", "l=1:10 w=1:10 h=1:10", lambda v: v["l"] * v["w"] * v["h"]),
    _f("density", "m/(l*w*h)", "m=1:10 l=0.5:2 w=0.5:2 h=0.5:2",
       lambda v: v["m"] / (v["l"] * v["w"] * v["h"])),
    _f("product9", "x1*x2*x3*x4*x5*x6*x7*x8*x9",
       " ".join(f"x{k}=1:2" for k in range(1, 10)),
       lambda v: np.prod([v[f"x{k}"] for k in range(1, 10)], axis=0)),
    # sums of products
    _f("sumprod", "a*b+c*d", "a=0:10 b=0:10 c=0:10 d=0:10",
       lambda v: v["a"] * v["b"] + v["c"] * v["d"]),
    _f("energy", "m*g*h+0.5*m*v**2", "m=1:10 g=9:10 h=0:10 v=0:10",
       lambda v: v["m"] * v["g"] * v["h"] + 0.5 * v["m"] * v["v"] ** 2),
    _f("kinetic", "0.5*m*(vx**2+vy**2+vz**2)", "m=1:10 vx=-5:5 vy=-5:5 vz=-5:5",
       lambda v: 0.5 * v["m"] * (v["vx"] ** 2 + v["vy"] ** 2 + v["vz"] ** 2)),
    _f("sum3x3", "x1*x2*x3+x4*x5*x6+x7*x8*x9", " ".join(f"x{k}=0:5" for k in range(1, 10)),
       lambda v: v["x1"] * v["x2"] * v["x3"] + v["x4"] * v["x5"] * v["x6"]
       + v["x7"] * v["x8"] * v["x9"]),
    # ratios of sums
    _f("ratiosum", "(a+b)/(c+d)", "a=1:10 b=1:10 c=1:10 d=1:10",
       lambda v: (v["a"] + v["b"]) / (v["c"] + v["d"])),
    _f("parallel", "1/(1/R1+1/R2+1/R3)", "R1=1:100 R2=1:100 R3=1:100",
       lambda v: 1 / (1 / v["R1"] + 1 / v["R2"] + 1 / v["R3"])),
    _f("wmean", "(w1*x1+w2*x2+w3*x3)/(w1+w2+w3)", "w1=1:10 x1=0:10 w2=1:10 x2=0:10 w3=1:10 x3=0:10",
       lambda v: (v["w1"] * v["x1"] + v["w2"] * v["x2"] + v["w3"] * v["x3"])
       / (v["w1"] + v["w2"] + v["w3"])),
    _f("seven", "(x1*x2+x3*x4+x5*x6)/x7", " ".join(f"x{k}=1:5" for k in range(1, 8)),
       lambda v: (v["x1"] * v["x2"] + v["x3"] * v["x4"] + v["x5"] * v["x6"]) / v["x7"]),
    # roots of sums
    _f("norm3", "sqrt(x**2+y**2+z**2)", "x=-5:5 y=-5:5 z=-5:5",
       lambda v: np.sqrt(v["x"] ** 2 + v["y"] ** 2 + v["z"] ** 2)),
    _f("distance", "sqrt((x1-x2)**2+(y1-y2)**2)", "x1=0:10 x2=0:10 y1=0:10 y2=0:10",
       lambda v: np.sqrt((v["x1"] - v["x2"]) ** 2 + (v["y1"] - v["y2"]) ** 2)),
    _f("rms", "sqrt((a**2+b**2+c**2+d**2+f**2)/5)", "a=0:10 b=0:10 c=0:10 d=0:10 f=0:10",
       lambda v: np.sqrt((v["a"] ** 2 + v["b"] ** 2 + v["c"] ** 2 + v["d"] ** 2
                          + v["f"] ** 2) / 5)),
    # trigonometry
    _f("wave", "A*sin(w*t)", "A=1:10 w=0.5:2 t=0:3", lambda v: v["A"] * np.sin(v["w"] * v["t"])),
    _f("phase", "A*cos(w*t+p)", "A=1:10 w=0.5:2 t=0:3 p=0:1.5",
       lambda v: v["A"] * np.cos(v["w"] * v["t"] + v["p"])),
    _f("projectile", "v**2*sin(2*th)/g", "v=1:20 th=0.1:0.7 g=9:10",
       lambda v: v["v"] ** 2 * np.sin(2 * v["th"]) / v["g"]),
    # exponentials
    _f("decay", "N0*exp(-k*t)", "N0=1:100 k=0.1:1 t=0:5",
       lambda v: v["N0"] * np.exp(-v["k"] * v["t"])),
    _f("arrhenius", "A*exp(-Ea/(R*T))", "A=1:10 Ea=1000:5000 R=8:9 T=250:350",
       lambda v: v["A"] * np.exp(-v["Ea"] / (v["R"] * v["T"]))),
    _f("gauss", "A*exp(-(x-m)**2/(2*s**2))", "A=1:10 x=0:10 m=0:10 s=1:3",
       lambda v: v["A"] * np.exp(-((v["x"] - v["m"]) ** 2) / (2 * v["s"] ** 2))),
    _f("interest", "P*(1+r)**t", "P=100:1000 r=0.01:0.1 t=1:10",
       lambda v: v["P"] * (1 + v["r"]) ** v["t"]),
    # logarithms
    _f("logratio", "k*log(p/q)", "k=1:10 p=1:10 q=1:10",
       lambda v: v["k"] * np.log(v["p"] / v["q"])),
    _f("isowork", "n*R*T*log(V2/V1)", "n=1:5 R=8:9 T=250:350 V2=1:10 V1=1:10",
       lambda v: v["n"] * v["R"] * v["T"] * np.log(v["V2"] / v["V1"])),
)
QUICK_FORMULAS: tuple[str, ...] = ("gas", "wave")


# --- measured ---------------------------------------------------------------------------------


@dataclass
class SourceRun:
    source: str  # EXPRESSION or CSV
    hit_rate: float = math.nan  # unseen in-range rows, the service's own test set
    extrapolation_hit_rate: float = math.nan
    median_relative_error: float = math.nan
    extrapolation_median_relative_error: float = math.nan
    trials: int = 0  # counted: COMPLETE or PRUNED
    failed_trials: int = 0
    best_trial: int | None = None
    wall_seconds: float = math.nan  # the whole `sweep run` process
    architecture: str = ""
    inputs: list[str] = field(default_factory=list)
    integer_valued: bool | None = None
    exit_code: int = 0
    error: str = ""

    @property
    def exact(self) -> bool:
        return self.hit_rate == 1.0 and self.extrapolation_hit_rate == 1.0


@dataclass
class FormulaCase:
    name: str
    expression: str
    ranges: dict[str, tuple[float, float]]
    rows: int
    runs: list[SourceRun] = field(default_factory=list)
    load: str = ""

    def run(self, source: str) -> SourceRun | None:
        return next((r for r in self.runs if r.source == source), None)


@dataclass
class FormulasResult:
    cases: list[FormulaCase] = field(default_factory=list)
    trials: int = 20
    timeout: float = 60.0
    rows: int = ROWS
    sweep: str = "sweep"  # how the command was started


def agreement(case: FormulaCase) -> str:
    """"both exact", "both inexact, similar error", or why the two sources differ."""
    ours, table_run = case.run(EXPRESSION), case.run(CSV)
    if ours is None or table_run is None or ours.error or table_run.error:
        return "not measured"
    if ours.exact and table_run.exact:
        return "both exact"
    if ours.exact != table_run.exact:
        return f"only the {EXPRESSION if ours.exact else CSV} exact"
    a, b = ours.median_relative_error, table_run.median_relative_error
    if math.isnan(a) or math.isnan(b):
        return "not measured"
    if max(a, b) <= SIMILAR_ERROR * max(min(a, b), 1e-300):
        return "both inexact, similar error"
    return "both inexact, errors differ"


def agrees(case: FormulaCase) -> bool:
    return agreement(case) in ("both exact", "both inexact, similar error")


# --- inputs -----------------------------------------------------------------------------------


def _number(value: float) -> str:
    return repr(float(value))


def campaign_toml(formula: Formula, rows: int = ROWS) -> str:
    """The campaign file a user writes for the expression: its inputs' real ranges."""
    lines = [
        "[campaign]", f'operations = ["{formula.name}"]', "",
        "[expressions]", f'{formula.name} = "{formula.expression}"', "",
        "[data]", f"examples = {rows}", "",
        f"[inputs.{formula.name}]",
    ]
    lines += [f'{name} = {{ low = {_number(low)}, high = {_number(high)}, kind = "real" }}'
              for name, (low, high) in formula.bounds.items()]
    return "\n".join(lines) + "\n"


def write_csv(formula: Formula, path: Path, rows: int = ROWS) -> None:
    """`rows` draws over the formula's ranges, uniform and independent, seeded by its name;
    one column per input (input order), then `target`, to 17 significant digits."""
    rng = np.random.default_rng(zlib.crc32(formula.name.encode("utf-8")))
    columns = {name: rng.uniform(low, high, size=rows)
               for name, (low, high) in formula.bounds.items()}
    with np.errstate(all="ignore"):
        y = np.asarray(formula.compute(columns), dtype=np.float64)
    if not np.all(np.isfinite(y)):
        raise ValueError(f"{formula.name}: the formula is undefined somewhere in its ranges")
    data = np.column_stack([*columns.values(), y])
    np.savetxt(path, data, delimiter=",", fmt="%.17g", comments="",
               header=",".join([*columns, TARGET]))


# --- the runs ---------------------------------------------------------------------------------


def _trial_counts(url: str, study_name: str) -> tuple[int, int]:
    import optuna

    from storage import Database
    from sweep.api import optuna_storage

    with Database(url) as database:
        storage = optuna_storage(database)
        study = optuna.load_study(study_name=study_name, storage=storage)
        states = [t.state.name for t in study.get_trials(deepcopy=False)]
        storage.engine.dispose()
    counted = sum(state in ("COMPLETE", "PRUNED") for state in states)
    return counted, states.count("FAIL")


def _measure(source: str, name: str, arguments: list[str], folder: Path, trials: int,
             timeout: float) -> SourceRun:
    url = f"sqlite:///{folder / f'{source.lower()}.db'}"
    command = [*sweep_command(), "run", *arguments, "--storage", url,
               "--trials", str(trials), "--timeout", f"{timeout:g}"]
    run = SourceRun(source)
    try:
        run.exit_code, run.wall_seconds = run_logged(command, folder, f"{source}.log",
                                                     3 * timeout + 600)
    except subprocess.TimeoutExpired:
        run.exit_code, run.error = -9, "killed: no end within 3x the timeout + 10 min"
        return run
    if run.exit_code != 0:
        run.error = last_line(folder / f"{source}.log")
        return run
    code, _ = run_logged([*sweep_command(), "best", "--storage", url, "--format", "json"],
                         folder, f"{source}.best.json", 300)
    best = json.loads((folder / f"{source}.best.json").read_text()) if code == 0 else []
    entry = next((e for e in best if e.get("operation") == name), None)
    if entry is None:
        run.error = f"`sweep best` exited {code} without {name}"
        return run
    for key in ("hit_rate", "extrapolation_hit_rate", "median_relative_error",
                "extrapolation_median_relative_error"):
        value = entry.get(key)
        setattr(run, key, math.nan if value is None else float(value))
    run.best_trial = entry.get("trial")
    run.architecture = str(entry.get("architecture") or "")
    run.inputs = list(entry.get("inputs") or [])
    run.integer_valued = entry.get("integer_valued")
    run.trials, run.failed_trials = _trial_counts(url, str(entry["study"]))
    return run


def run_formulas(
    names: Sequence[str] | None = None,
    *,
    trials: int = 20,
    timeout: float = 60.0,
    rows: int = ROWS,
    on_case: Callable[[FormulaCase], None] | None = None,
) -> FormulasResult:
    """Every formula (or those named) from its expression, then from its CSV."""
    unknown = sorted(set(names or ()) - {f.name for f in FORMULAS})
    if unknown:
        raise ValueError(f"unknown formula(s) {', '.join(unknown)}")
    result = FormulasResult(trials=trials, timeout=timeout, rows=rows,
                            sweep=" ".join(Path(part).name for part in sweep_command()))
    for formula in FORMULAS:
        if names is not None and formula.name not in names:
            continue
        case = FormulaCase(formula.name, formula.expression, formula.bounds, rows,
                           load=load_average())
        with tempfile.TemporaryDirectory(prefix=f"sweep-bench-{formula.name}-") as scratch:
            folder = Path(scratch)
            (folder / f"{formula.name}.toml").write_text(campaign_toml(formula, rows))
            write_csv(formula, folder / f"{formula.name}.csv", rows)
            sources = {
                EXPRESSION: ["--config", f"{formula.name}.toml"],
                CSV: ["--data", f"{formula.name}={formula.name}.csv", "--target", TARGET],
            }
            for source, arguments in sources.items():
                log(f"formulas {formula.name} ({formula.expression}) from its {source}"
                    f" ({trials} trials or {timeout:g} s; load {load_average()})")
                run = _measure(source, formula.name, arguments, folder, trials, timeout)
                log(f"formulas {formula.name} from its {source}: {_verdict(run)},"
                    f" {run.trials} trials, {run.wall_seconds:.0f} s")
                case.runs.append(run)
        result.cases.append(case)
        if on_case is not None:
            on_case(case)
    return result


# --- the report -------------------------------------------------------------------------------


def _verdict(run: SourceRun) -> str:
    if run.error:
        return f"failed ({run.error})"
    return "exact" if run.exact else "not exact"


def _rate(value: float) -> str:
    return "1" if value == 1.0 else fraction(value)


def _shorten(text: str, limit: int = 90) -> str:
    """A long found formula cut to `limit` characters (the record keeps it whole)."""
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def _bound(value: float) -> str:
    return f"{value:g}"


def render_section(result: FormulasResult | None, number: int = 10) -> list[str]:
    """Section `number` of BENCHMARKS.md: one row per formula and source, then the summary."""
    if result is None or not result.cases:
        return []
    lines = [
        f"## {number}. Formulas from an expression and from a table",
        "",
        f"Per formula, two campaigns, each `{result.sweep} run` in a subprocess on a fresh"
        f" SQLite database with default settings and a budget of {result.trials} trials or"
        f" {result.timeout:g} s per operation (`--trials {result.trials} --timeout"
        f" {result.timeout:g}`); the default stop at an exact model is on. *expression*: a"
        f" campaign file with the expression and its inputs' real ranges, `[data] examples ="
        f" {result.rows}` (`--config F.toml`). *CSV*: {result.rows:,} rows drawn uniformly over"
        f" the same ranges (seeded NumPy, not the service's evaluator), the result in column"
        f" `{TARGET}` (`--data F=F.csv --target {TARGET}`). Metrics from `sweep best --format"
        " json`: hit rate on unseen in-range rows and in the extrapolation band (hit ="
        " relative error ≤ 1e-6, every formula being real-valued). The bands differ by"
        " design: an expression's is [high, high + (high - low)) of every input; a table's is"
        " its own rows above the q-quantile of at least one input (q = 0.9^(1/inputs)), inside"
        " the drawn ranges. *exact*: both hit rates 1. *trials*: counted (COMPLETE or"
        " PRUNED; *+N failed*: trials that crashed, not counted). *wall s*: the whole"
        " `sweep run` process, TensorFlow's start and the data included. *agree*: both"
        " exact, or both inexact with in-range median relative errors within"
        f" {SIMILAR_ERROR:g}x of each other.",
        "",
    ]
    rows = []
    for case in result.cases:
        verdict = agreement(case)
        for run in case.runs:
            failed = f" (+{run.failed_trials} failed)" if run.failed_trials else ""
            rows.append([
                case.name, f"`{case.expression}`", str(len(case.ranges)), run.source,
                _rate(run.hit_rate), _rate(run.extrapolation_hit_rate),
                "failed" if run.error else "yes" if run.exact else "no",
                significant(run.median_relative_error, 2),
                f"{run.trials}{failed}", significant(run.wall_seconds, 3),
                _shorten(run.architecture or run.error or "—").replace("|", "/"), verdict,
            ])
    lines += table(["formula", "expression", "inputs", "source", "hit rate in range",
                    "hit rate extrap.", "exact", "median rel. error in range", "trials",
                    "wall s", "best architecture", "agree"], rows)
    lines += ["", *_summary(result), "", "Ranges, [low, high) per input (real):", ""]
    lines += [
        f"- {case.name}: " + ", ".join(f"{name} [{_bound(low)}, {_bound(high)})"
                                      for name, (low, high) in case.ranges.items())
        for case in result.cases
    ]
    loads = ", ".join(f"{c.name}: {c.load}" for c in result.cases)
    lines += ["", f"Load average (1, 5, 15 min) at the start of each formula: {loads}."]
    return lines


def _summary(result: FormulasResult) -> list[str]:
    verdicts = {case.name: agreement(case) for case in result.cases}
    count = len(result.cases)
    both_exact = [n for n, v in verdicts.items() if v == "both exact"]
    similar = [n for n, v in verdicts.items() if v == "both inexact, similar error"]
    differ = [f"{n} ({v})" for n, v in verdicts.items()
              if v not in ("both exact", "both inexact, similar error")]
    lines = [
        f"**{len(both_exact) + len(similar)} of {count} formulas agree:**"
        f" {len(both_exact)} exact from both sources ({', '.join(both_exact) or 'none'}),"
        f" {len(similar)} inexact from both with a similar in-range error"
        f" ({', '.join(similar) or 'none'}); they differ on {len(differ)}"
        f" ({', '.join(differ) or 'none'}).",
    ]
    for source in (EXPRESSION, CSV):
        runs = [r for c in result.cases if (r := c.run(source)) is not None and not r.error]
        if runs:
            exact = sum(r.exact for r in runs)
            lines.append(
                f"- From the {source}: {exact} of {len(runs)} exact; median"
                f" {significant(median(r.trials for r in runs), 3)} trials and"
                f" {significant(median(r.wall_seconds for r in runs), 3)} s per formula."
            )
    return lines


def target_lines(result: FormulasResult | None) -> list[str]:
    """The line for "Where we stand against the targets"."""
    if result is None or not result.cases:
        return []
    agreeing = [case.name for case in result.cases if agrees(case)]
    state = "holds" if len(agreeing) == len(result.cases) else "does not hold yet"
    exact = [c.name for c in result.cases if agreement(c) == "both exact"]
    differ = [f"{c.name}: {agreement(c)}" for c in result.cases if not agrees(c)]
    return [
        f"- **{len(result.cases)} formulas of 3-9 real inputs give the same verdict from their"
        f" expression and from a CSV generated from it (both exact, or both inexact with a"
        f" similar in-range error): {state}** ({len(agreeing)} of {len(result.cases)} agree;"
        f" exact from both: {', '.join(exact) or 'none'}"
        + (f"; differ: {'; '.join(differ)}" if differ else "") + "; section 10).",
    ]
