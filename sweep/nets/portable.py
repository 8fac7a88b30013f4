"""The exported forms' side that needs no TensorFlow: signature names, onnxruntime, comparisons.

`sweep serve` answers with an onnxruntime session built from here, so the serving process never
loads TensorFlow (71 MB and 0.5 s to start instead of 560 MB and 8 s, research r17);
`sweep.nets.exporting` (TensorFlow) writes the files these run.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from sweep.errors import ConfigError, ExportError

__all__ = [
    "INPUT_NAME",
    "MAX_EXACT_INPUT",
    "ONNX_EXTRA",
    "OUTPUT_NAME",
    "SIGNATURE_NAME",
    "TOLERANCE",
    "Comparison",
    "OnnxPredictor",
    "check_answers",
    "compare_answers",
    "default_probe",
    "missing_modules",
    "require_modules",
]

# Every exported form: input `operands` float64 (n, arity), the inputs in the operation's
# order, output `result` float64 (n,).
INPUT_NAME = "operands"
OUTPUT_NAME = "result"
SIGNATURE_NAME = "serving_default"
# The largest magnitude at which every integer is a float64: beyond it an input is not the
# number the user typed, so no answer can be exact.
MAX_EXACT_INPUT = 2.0**53
# An export must agree with the registry model to this relative error (values below 1 compared
# absolutely): onnxruntime and TensorFlow sum dot products in different orders, which costs
# MLPs up to ~1e-12 (r17); a wrong op or a float32 path costs 1e-7 or more.
TOLERANCE = 1e-11

ONNX_EXTRA = 'pip install "neural-arithmetic-sweep[onnx]"'
ONNX_MODULES = ("tf2onnx", "onnx", "onnxruntime")
# `default_probe` lists every combination of the small values while it stays this short
# (three inputs: 1331 rows); over more inputs it samples them (10 inputs would be 26e9 rows).
_MAX_GRID_ROWS = 4096
_MIXED_ROWS = 1024


def missing_modules(names: tuple[str, ...]) -> list[str]:
    """Which of these importable names are not installed (without importing them)."""
    missing = []
    for name in names:
        try:
            found = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):  # a broken install, or a name blocked in sys.modules
            found = False
        if not found:
            missing.append(name)
    return missing


def require_modules(names: tuple[str, ...], purpose: str, install: str) -> None:
    """Raise one ConfigError line naming what is missing and the command that installs it."""
    missing = missing_modules(names)
    if missing:
        raise ConfigError(f"{purpose} needs {', '.join(missing)}; install it with: {install}")


@dataclass(frozen=True)
class Comparison:
    """How an export's answers differ from the registry model's on the same batch.

    `beyond_tolerance` counts the rows that differ by more than `TOLERANCE` (relative) and by
    more than the model's own float64 rounding, when that is known (`compare_answers`).
    """

    rows: int
    bitwise: bool
    differing_rows: int
    max_relative_error: float
    integer_mismatches: int
    beyond_tolerance: int = 0

    def describe(self) -> str:
        if self.bitwise:
            return f"bit for bit on {self.rows} rows"
        within = (
            " (within the model's own float64 rounding)"
            if self.max_relative_error > TOLERANCE and not self.beyond_tolerance
            else ""
        )
        return (
            f"{self.differing_rows}/{self.rows} rows differ, max relative error "
            f"{self.max_relative_error:.1e}{within}, {self.integer_mismatches} rounded answers "
            "differ"
        )


def compare_answers(
    reference: npt.ArrayLike,
    candidate: npt.ArrayLike,
    *,
    integer_valued: bool,
    rounding: npt.ArrayLike | None = None,
) -> Comparison:
    """Compare two answer vectors for the same inputs (same batch: TF and onnxruntime both sum
    differently by batch shape). Non-finite values agree only with the same non-finite value.

    Rounded answers are compared only for an `integer_valued` operation: a real-valued one's
    answers need not be near a whole number. `rounding`, per row, bounds how far two correct
    float64 evaluations of the model may part (its output layer summed in another order: large
    for a power model whose terms cancel); a row within it is not beyond the tolerance.
    """
    ref = np.asarray(reference, dtype=np.float64).reshape(-1)
    got = np.asarray(candidate, dtype=np.float64).reshape(-1)
    if ref.shape != got.shape:
        raise ExportError(f"the export gave {got.size} answers for {ref.size} rows")
    same = (ref == got) | (np.isnan(ref) & np.isnan(got))
    finite = np.isfinite(ref) & np.isfinite(got)
    with np.errstate(invalid="ignore", over="ignore"):
        relative = np.where(finite, np.abs(got - ref) / np.maximum(np.abs(ref), 1.0), np.inf)
        relative = np.where(same, 0.0, relative)
        beyond = relative > TOLERANCE
        if rounding is not None:
            bound = np.broadcast_to(np.asarray(rounding, dtype=np.float64).reshape(-1), ref.shape)
            beyond &= ~(finite & (np.abs(got - ref) <= bound))
    mismatches = 0
    if integer_valued:
        # Only where the model's answer is clearly an integer: at a .5 tie rounding may flip.
        confident = finite & (np.abs(ref - np.rint(ref)) < 0.49)
        mismatches = int(np.sum(confident & (np.rint(ref) != np.rint(got))))
    return Comparison(
        rows=int(ref.size),
        bitwise=bool(np.all(same) and np.array_equal(np.signbit(ref), np.signbit(got))),
        differing_rows=int(np.sum(~same)),
        max_relative_error=float(np.max(relative)) if ref.size else 0.0,
        integer_mismatches=mismatches,
        beyond_tolerance=int(np.sum(beyond)),
    )


def check_answers(
    reference: npt.ArrayLike,
    candidate: npt.ArrayLike,
    *,
    integer_valued: bool,
    label: str,
    rounding: npt.ArrayLike | None = None,
) -> Comparison:
    """`compare_answers`, raising ExportError when the export is not faithful."""
    comparison = compare_answers(
        reference, candidate, integer_valued=integer_valued, rounding=rounding
    )
    if comparison.beyond_tolerance or comparison.integer_mismatches:
        raise ExportError(
            f"{label} does not reproduce the registry model: {comparison.describe()} "
            f"(allowed: relative error {TOLERANCE:g} or the model's own float64 rounding, no "
            "rounded answer different)"
        )
    return comparison


def default_probe(arity: int) -> npt.NDArray[np.float64]:
    """Inputs to compare an export on when the operation's own data are not at hand: zeros,
    small integers, and values up to 1e6 of both signs, in `arity` columns.

    Every combination of -5..5 while there are at most `_MAX_GRID_ROWS` of them (up to three
    inputs); over more inputs, each input alone at each small value (the others 0) and
    `_MIXED_ROWS` random combinations, so ten inputs cost about 1200 rows, not 11**10.
    """
    if arity < 1:
        raise ValueError(f"a model takes at least one input, not {arity}")
    rng = np.random.default_rng(0)
    small = np.arange(-5, 6, dtype=np.float64)
    wide = rng.uniform(-1e6, 1e6, size=(64, arity)).round(3)
    medium = rng.integers(-1000, 1000, size=(64, arity)).astype(np.float64)
    if len(small) ** arity <= _MAX_GRID_ROWS:
        grid = np.stack(np.meshgrid(*[small] * arity), axis=-1).reshape(-1, arity)
    else:
        alone = np.zeros((arity * len(small), arity))
        for k in range(arity):
            alone[k * len(small) : (k + 1) * len(small), k] = small
        grid = np.concatenate([alone, rng.choice(small, size=(_MIXED_ROWS, arity))])
    return np.concatenate([grid, wide, medium])


class OnnxPredictor:
    """One onnxruntime session on a float64 ONNX model: raw rows in, raw answers out.

    One intra-op thread: the models are tiny, and with the HTTP server on the same cores more
    threads only add contention (r17: 2.3 ms p50 with 1 thread, 2.6 ms with 2).
    """

    def __init__(self, data: bytes) -> None:
        require_modules(("onnxruntime",), "running an ONNX model", ONNX_EXTRA)
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.log_severity_level = 3  # errors only: no per-session chatter on stderr
        try:
            self._session: Any = onnxruntime.InferenceSession(
                data, options, providers=["CPUExecutionProvider"]
            )
        except Exception as e:  # onnxruntime raises its own untyped errors
            first = " ".join(str(e).split())[:300]
            raise ExportError(f"onnxruntime cannot load the ONNX model: {first}") from None
        inputs = self._session.get_inputs()
        if len(inputs) != 1 or inputs[0].type != "tensor(double)":
            described = ", ".join(f"{i.name} {i.type}" for i in inputs)
            raise ExportError(f"the ONNX model takes {described}, not one float64 tensor")
        self._input = str(inputs[0].name)
        self.arity = int(inputs[0].shape[1])

    def predict(self, x: npt.ArrayLike) -> npt.NDArray[np.float64]:
        array = np.ascontiguousarray(x, dtype=np.float64)
        (out,) = self._session.run(None, {self._input: array})
        return np.asarray(out, dtype=np.float64).reshape(-1)
