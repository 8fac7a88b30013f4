"""How `sweep serve` turns a registry version's `.keras` bytes into something that answers.

Two backends: onnxruntime (the default with the `onnx` extra) converts the models in a
short-lived child process (`python -m sweep.nets.exporting`), so the serving process never loads
TensorFlow; without the extra the models run in-process as TensorFlow graphs. Either way a
model that cannot be made to answer comes back as a one-line reason, never an exception, so
the store keeps serving what it has. Reads no storage: the store hands the bytes in.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np
import numpy.typing as npt

from storage import ModelEntry
from sweep.errors import ConfigError, SweepError, first_line
from sweep.nets.portable import ONNX_EXTRA, ONNX_MODULES, OnnxPredictor, missing_modules
from sweep.problem.data import DataSpec
from sweep.problem.operations import Operation

if TYPE_CHECKING:
    from sweep.problem.tables import Table

__all__ = [
    "BACKENDS",
    "CONVERT_TIMEOUT",
    "ModelToConvert",
    "OnnxConverter",
    "Predictor",
    "ServedOnnx",
    "choose_backend",
    "load_tensorflow",
]

BACKENDS = ("auto", "onnxruntime", "tensorflow")
CONVERT_TIMEOUT = 600.0


class Predictor(Protocol):
    def predict(self, x: npt.ArrayLike) -> npt.NDArray[np.float64]: ...


def choose_backend(requested: str) -> str:
    """``onnxruntime`` when the onnx extra is installed (or asked for), else ``tensorflow``."""
    if requested not in BACKENDS:
        raise ConfigError(f"unknown backend {requested!r}; choose one of {', '.join(BACKENDS)}")
    missing = missing_modules(ONNX_MODULES)
    if requested == "onnxruntime" and missing:
        raise ConfigError(
            f"--backend onnxruntime needs {', '.join(missing)}; install it with: {ONNX_EXTRA}"
        )
    if requested == "auto":
        return "tensorflow" if missing else "onnxruntime"
    return requested


class ServedOnnx(OnnxPredictor):
    """An onnxruntime session that keeps its model's bytes, so that a worker process can open
    its own session on the same model (`serve_workers`)."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.onnx = data


@dataclass(frozen=True)
class ModelToConvert:
    """One registry version to convert: its entry, its `.keras` bytes, what it computes (and,
    for a table's operation, its rows: the export is checked on them; without them, on the
    generic `sweep.nets.portable.default_probe`)."""

    entry: ModelEntry
    data: bytes
    operation: Operation
    table: Table | None = None


class OnnxConverter:
    """`.keras` -> ONNX sessions, all of one poll in one TensorFlow start, in a child process.

    One converter per store: `kill` (from another thread, on shutdown) ends a conversion that
    is under way instead of waiting up to CONVERT_TIMEOUT for it.
    """

    def __init__(self) -> None:
        self._child: subprocess.Popen[bytes] | None = None

    def kill(self) -> None:
        child = self._child
        if child is not None and child.poll() is None:
            child.kill()

    def convert(
        self, models: Sequence[ModelToConvert], data_spec: DataSpec
    ) -> list[Predictor | str]:
        """A predictor, or the reason there is none, for each of `models` in order."""
        from sweep.publishing.pulling import probe_inputs

        with tempfile.TemporaryDirectory(prefix="sweep-serve-") as folder:
            base = Path(folder)
            jobs = []
            for index, model in enumerate(models):
                entry, op = model.entry, model.operation
                keras_path = base / f"{index}.keras"
                keras_path.write_bytes(model.data)
                probe_path = base / f"{index}.npy"
                probe = probe_inputs(op, data_spec, model.table)
                np.save(probe_path, probe, allow_pickle=False)
                jobs.append(
                    {
                        "keras": str(keras_path),
                        "onnx": str(base / f"{index}.onnx"),
                        "probe": str(probe_path),
                        "integer_valued": op.integer_valued,
                        "label": f"{entry.operation} version {entry.version}",
                        "metadata": {
                            "operation": entry.operation,
                            "inputs": ",".join(op.inputs),
                            "registry_version": str(entry.version),
                            "registry_sha256": entry.sha256,
                        },
                    }
                )
            results_path = base / "results.json"
            jobs_path = base / "jobs.json"
            jobs_path.write_text(json.dumps({"jobs": jobs, "results": str(results_path)}))
            error = self._run(jobs_path)
            if error is not None:
                return [error] * len(models)
            results = json.loads(results_path.read_text())
            out: list[Predictor | str] = []
            for index, result in enumerate(results):
                if not result["ok"]:
                    out.append(str(result["error"]))
                    continue
                try:
                    out.append(ServedOnnx((base / f"{index}.onnx").read_bytes()))
                except SweepError as e:
                    out.append(first_line(e))
            return out

    def _run(self, jobs_path: Path) -> str | None:
        command = [sys.executable, "-m", "sweep.nets.exporting", str(jobs_path)]
        try:
            child = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
        except OSError as e:
            return f"cannot start the ONNX converter: {e}"
        self._child = child
        try:
            _, stderr = child.communicate(timeout=CONVERT_TIMEOUT)
        except subprocess.TimeoutExpired:
            child.kill()
            child.communicate()
            return f"the ONNX converter took more than {CONVERT_TIMEOUT:g} s"
        finally:
            self._child = None
        if child.returncode != 0:
            lines = [line for line in stderr.decode(errors="replace").splitlines() if line.strip()]
            detail = lines[-1][:300] if lines else f"exit code {child.returncode}"
            return f"the ONNX converter failed: {detail}"
        return None


def load_tensorflow(entry: ModelEntry, data: bytes) -> Predictor | str:
    """The model as an in-process TensorFlow graph, or the reason it cannot be loaded."""
    try:
        from sweep.nets.archive import check_archive

        check_archive(data, label=f"{entry.operation} version {entry.version}")
        from sweep.nets.exporting import GraphPredictor
        from sweep.nets.saving import load_model_bytes

        model = load_model_bytes(data, label=f"{entry.operation} version {entry.version}")
        return GraphPredictor(model)
    except SweepError as e:
        return first_line(e)
