"""Exports that run without this project: a TensorFlow SavedModel and an ONNX model.

Both wrap a loaded registry model in one float64 signature, ``operands`` (n, arity) in (the
operation's inputs in its order, 1 to 10 of them) and ``result`` (n,) out, raw values on both
sides (the normalisation is inside the graph):

- SavedModel: `keras.export.ExportArchive` (Keras' own exporter), loadable by
  ``tf.saved_model.load`` and TF Serving with no project code;
- ONNX: ``tf2onnx.convert.from_function`` with the op handlers of `sweep.nets._onnx_ops`
  (tf2onnx alone writes float32 logs and graphs onnxruntime refuses), then onnx's full checker,
  a no-float32 check and an onnxruntime run compared with the Keras model.

``python -m sweep.nets.exporting JOBS.json`` converts many `.keras` files to ONNX in one
TensorFlow start: `sweep serve` runs it as a short-lived subprocess, so that the server itself
never loads TensorFlow.
"""

from __future__ import annotations

import json
import logging
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

# isort: off
from sweep.nets.layers import Denormalize  # first: registers the layers, starts TF quietly
import keras
import tensorflow as tf

# isort: on
from sweep.errors import ExportError, SweepError, first_line
from sweep.nets.portable import (
    INPUT_NAME,
    ONNX_EXTRA,
    ONNX_MODULES,
    OUTPUT_NAME,
    SIGNATURE_NAME,
    Comparison,
    OnnxPredictor,
    check_answers,
    default_probe,
    require_modules,
)

__all__ = [
    "ONNX_OPSET",
    "GraphPredictor",
    "default_probe",
    "export_onnx",
    "export_savedmodel",
    "model_arity",
    "model_dtype",
    "rounding_bound",
    "savedmodel_answers",
]

# onnxruntime 1.16+ runs opset 17 (and every op the handlers emit has double kernels there).
ONNX_OPSET = 17


def model_arity(model: keras.Model) -> int:
    """Number of inputs the model takes (its input's last dimension)."""
    shape = model.inputs[0].shape
    if len(shape) != 2 or shape[1] is None:
        raise ExportError(f"the model's input has shape {tuple(shape)}, not (batch, arity)")
    return int(shape[1])


def model_dtype(model: keras.Model) -> tf.DType:
    """The model's input type (float64 for every model the sweep trains by default)."""
    return tf.as_dtype(model.inputs[0].dtype)


def _signature(model: keras.Model) -> list[tf.TensorSpec]:
    return [tf.TensorSpec([None, model_arity(model)], model_dtype(model), name=INPUT_NAME)]


def _serving(model: keras.Model) -> Any:
    def serve(operands: tf.Tensor) -> dict[str, tf.Tensor]:
        return {OUTPUT_NAME: tf.reshape(model(operands, training=False), [-1])}

    return serve


def export_savedmodel(model: keras.Model, directory: Path) -> None:
    """Write `model` as a SavedModel with one signature, ``serving_default``, to `directory`
    (which must not exist yet)."""
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(SIGNATURE_NAME, _serving(model), input_signature=_signature(model))
    try:
        archive.write_out(str(directory), verbose=False)
    except OSError as e:
        raise ExportError(f"cannot write the SavedModel to {str(directory)!r}: {e}") from None


def savedmodel_answers(directory: Path, x: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """The answers of a written SavedModel, loaded as TF Serving would (no Keras objects)."""
    loaded = tf.saved_model.load(str(directory))
    function = loaded.signatures[SIGNATURE_NAME]
    dtype = function.structured_input_signature[1][INPUT_NAME].dtype
    out = function(**{INPUT_NAME: tf.constant(np.asarray(x), dtype=dtype)})[OUTPUT_NAME]
    return np.asarray(out.numpy(), dtype=np.float64).reshape(-1)


class GraphPredictor:
    """The model's serving function as one traced TensorFlow graph: the SavedModel's answers
    (same graph, same optimiser), about 1 ms a call instead of Keras' 15 ms eager call."""

    def __init__(self, model: keras.Model) -> None:
        self._function = tf.function(_serving(model), input_signature=_signature(model))
        self._dtype = model_dtype(model)

    def predict(self, x: npt.ArrayLike) -> npt.NDArray[np.float64]:
        out = self._function(tf.constant(np.asarray(x), dtype=self._dtype))[OUTPUT_NAME]
        return np.asarray(out.numpy(), dtype=np.float64).reshape(-1)


def rounding_bound(
    model: keras.Model, x: npt.ArrayLike, answers: npt.ArrayLike
) -> npt.NDArray[np.float64] | None:
    """Per row, how far two correct float64 evaluations of a sweep model may part: its output
    layer's sum taken in another order (onnxruntime's, TensorFlow's), carried through the
    target's inverse. None for a model without the sweep's ``output`` and ``target_inverse``.

    The sum's rounding is at most (k + 1) * 2**-52 * (sum_i |w_i f_i| + |b|) over its k
    features (Higham's bound, doubled): tiny for an MLP, but a power model whose terms cancel
    (27,000 summed to 0.7) parts by 1e-11 of its answer, and that is no export's fault.
    """
    try:
        output = model.get_layer("output")
        inverse = model.get_layer("target_inverse")
    except ValueError:
        return None
    if (
        model_dtype(model) != tf.float64
        or not isinstance(output, keras.layers.Dense)
        or output.units != 1
        or not isinstance(inverse, Denormalize)
    ):
        return None
    features = keras.Model(model.inputs[0], output.input)
    values = np.asarray(
        keras.ops.convert_to_numpy(features(np.asarray(x, dtype=np.float64), training=False)),
        dtype=np.float64,
    )
    kernel, bias = (np.asarray(w, dtype=np.float64) for w in output.get_weights())
    with np.errstate(invalid="ignore", over="ignore"):
        magnitude = np.abs(values) @ np.abs(kernel[:, 0]) + abs(float(bias[0]))
        normalised = (values.shape[1] + 1) * 2.0**-52 * magnitude * abs(inverse.scale[0])
        out = np.abs(np.asarray(answers, dtype=np.float64).reshape(-1))
        if inverse.transform == "log_abs":
            bound = out * np.expm1(normalised)
        elif inverse.transform == "signed_log":
            bound = (1.0 + out) * np.expm1(normalised)
        else:
            bound = normalised
    return np.where(np.isfinite(bound), bound, 0.0)


def _keras_answers(model: keras.Model, x: npt.ArrayLike) -> npt.NDArray[np.float64]:
    from sweep.nets.training import predict

    return predict(model, np.asarray(x, dtype=np.float64))


def _float32_tensors(proto: Any) -> list[str]:
    """Names of float32 values and casts to float32 anywhere in an ONNX graph."""
    import onnx

    inferred = onnx.shape_inference.infer_shapes(proto)
    graph = inferred.graph
    found = [
        value.name
        for value in [*graph.value_info, *graph.input, *graph.output]
        if value.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    ]
    found += [init.name for init in graph.initializer if init.data_type == onnx.TensorProto.FLOAT]
    found += [
        node.name
        for node in graph.node
        if node.op_type == "Cast"
        and any(a.name == "to" and a.i == onnx.TensorProto.FLOAT for a in node.attribute)
    ]
    return found


def export_onnx(
    model: keras.Model,
    *,
    probe: npt.ArrayLike | None = None,
    integer_valued: bool = False,
    metadata: Mapping[str, str] | None = None,
    label: str = "the ONNX export",
) -> tuple[bytes, Comparison]:
    """The model as ONNX bytes, and how its onnxruntime answers compare with Keras' on `probe`.

    Raises:
        ConfigError: tf2onnx, onnx or onnxruntime is not installed (the `onnx` extra).
        ExportError: the conversion is invalid ONNX, narrows a float64 model to float32, or
            does not reproduce the model's answers (`sweep.nets.portable.TOLERANCE`).
    """
    require_modules(ONNX_MODULES, "exporting to ONNX", ONNX_EXTRA)
    import onnx
    import tf2onnx

    from sweep.nets._onnx_ops import HANDLERS

    serve = tf.function(_serving(model), input_signature=_signature(model))
    # tf2onnx logs progress, stale warnings ("only float32 for Gemm") and, worse, the ops it
    # could not convert, on the root logger; the checker below reports those in one line.
    logging.disable(logging.CRITICAL)
    try:
        proto, _ = tf2onnx.convert.from_function(
            serve,
            input_signature=_signature(model),
            opset=ONNX_OPSET,
            custom_op_handlers=dict(HANDLERS),
        )
    except Exception as e:  # tf2onnx raises bare exceptions of many types
        raise ExportError(f"tf2onnx cannot convert the model: {first_line(e)}") from None
    finally:
        logging.disable(logging.NOTSET)
    try:
        onnx.checker.check_model(proto, full_check=True)
    except Exception as e:  # onnx's checker and shape inference raise several types
        # tf2onnx writes an op it cannot convert as is and only logs it; the checker names it.
        raise ExportError(f"the ONNX conversion is not valid ONNX: {first_line(e)}") from None
    if model_dtype(model) == tf.float64:
        narrowed = _float32_tensors(proto)
        if narrowed:
            raise ExportError(
                f"the ONNX conversion computes in float32 ({', '.join(narrowed[:3])}); "
                "refusing to narrow a float64 model"
            )
    from sweep._version import __version__

    entries = {"producer": f"neural-arithmetic-sweep {__version__}", **(metadata or {})}
    onnx.helper.set_model_props(proto, dict(entries))
    data = proto.SerializeToString()
    x = default_probe(model_arity(model)) if probe is None else np.asarray(probe, np.float64)
    reference = _keras_answers(model, x)
    comparison = check_answers(
        reference,
        OnnxPredictor(data).predict(x),
        integer_valued=integer_valued,
        label=label,
        rounding=rounding_bound(model, x, reference),
    )
    return data, comparison


# --- the converter subprocess of `sweep serve` -------------------------------------------------


def convert_jobs(jobs_file: Path) -> int:
    """Convert every job in `jobs_file` (JSON) to ONNX; write one result per job next to it.

    A job: ``{"keras": PATH, "onnx": PATH, "probe": PATH.npy or null, "integer_valued": bool,
    "label": TEXT}``; its result ``{"label", "ok", "error", "comparison"}``. One job's failure
    (an unsafe model, an op that cannot be exported) does not stop the others.
    """
    from sweep.nets._runtime import configure_tensorflow
    from sweep.nets.saving import load_model_file

    configure_tensorflow(1)  # a guest on the server's cores
    document = json.loads(jobs_file.read_text(encoding="utf-8"))
    results: list[dict[str, Any]] = []
    for job in document["jobs"]:
        label = str(job["label"])
        try:
            model = load_model_file(job["keras"], label=label)
            probe = np.load(job["probe"], allow_pickle=False) if job.get("probe") else None
            data, comparison = export_onnx(
                model,
                probe=probe,
                integer_valued=bool(job.get("integer_valued")),
                metadata={str(k): str(v) for k, v in dict(job.get("metadata") or {}).items()},
                label=f"the ONNX export of {label}",
            )
            _write_atomically(Path(job["onnx"]), data)
            results.append(
                {"label": label, "ok": True, "error": None, "comparison": comparison.describe()}
            )
        except SweepError as e:
            results.append({"label": label, "ok": False, "error": first_line(e)})
        except Exception as e:  # keep converting the others; the server reports this one
            results.append({"label": label, "ok": False, "error": f"{type(e).__name__}: "
                            f"{first_line(e)}"})
    _write_atomically(Path(document["results"]), json.dumps(results).encode())
    return 0


def _write_atomically(path: Path, data: bytes) -> None:
    with tempfile.NamedTemporaryFile(dir=path.parent, delete=False, suffix=".tmp") as handle:
        handle.write(data)
    Path(handle.name).replace(path)


def _main(argv: Sequence[str]) -> int:
    if len(argv) != 1:
        return 2
    return convert_jobs(Path(argv[0]))


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
