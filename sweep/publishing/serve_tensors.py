"""A KServe v2 (Open Inference Protocol) inference request, read and checked.

    {"id": "42", "parameters": {...},
     "inputs": [{"name": "operands", "shape": [n, N], "datatype": "FP64", "data": [...]}],
     "outputs": [{"name": "result", "parameters": {"binary_data": true}}]}

The model takes one tensor, ``operands`` (n, N) in the operation's input order; one tensor per
input name, each (n) or (n, 1), is taken too (what clients that name their features send).
``data`` is flat (row-major) or nested as the shape; or, with Triton's binary tensor extension
(what `tritonclient` sends by default), the tensor's little-endian bytes after the JSON, whose
length the ``Inference-Header-Content-Length`` header gives.

Every numeric datatype is taken exactly or refused: FP64 as is; FP32 and FP16 values are exact
in float64, but a JSON number given as FP32/FP16 must be one of that type's values (0.1 is
not: send it as FP64); integers up to 2**53 in magnitude, within their type. BOOL, BYTES and
BF16 are refused; so are NaN and infinities, and points outside the operation's domain. Pure
functions of the bytes: large bodies are read in a worker process (`serve_workers`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from sweep.nets.portable import INPUT_NAME, OUTPUT_NAME
from sweep.problem.operations import Operation
from sweep.publishing.serve_requests import (
    EXACT_INTEGER,
    RequestError,
    check_count,
    check_domain,
    quoted,
    shortened,
)

__all__ = ["DATATYPES", "InferRequest", "parse_infer"]

# The protocol's numeric datatypes, as little-endian NumPy types.
DATATYPES: dict[str, str] = {
    "FP64": "<f8", "FP32": "<f4", "FP16": "<f2",
    "INT8": "i1", "INT16": "<i2", "INT32": "<i4", "INT64": "<i8",
    "UINT8": "u1", "UINT16": "<u2", "UINT32": "<u4", "UINT64": "<u8",
}
_REFUSED = ("BOOL", "BYTES", "BF16")
_REQUEST_FIELDS = {"id", "parameters", "inputs", "outputs"}
_TENSOR_FIELDS = {"name", "shape", "datatype", "parameters", "data"}


@dataclass(frozen=True)
class InferRequest:
    """The rows (n, arity) in `op.inputs` order, the request's id, and whether the output is
    wanted as binary data."""

    x: npt.NDArray[np.float64]
    request_id: str | None
    binary_output: bool


def parse_infer(body: bytes, op: Operation, header_length: int | None = None) -> InferRequest:
    """An inference request -> `InferRequest`, or a `RequestError` naming what is wrong."""
    import orjson

    if header_length is not None:
        if header_length > len(body):
            raise RequestError(400, f"Inference-Header-Content-Length {header_length} is more "
                             f"than the body's {len(body)} bytes")
        text, binary = body[:header_length], body[header_length:]
    else:
        text, binary = body, b""
    try:
        document = orjson.loads(text)
    except orjson.JSONDecodeError as e:
        raise RequestError(400, f"the body is not JSON: {str(e).splitlines()[0][:200]}") from None
    if not isinstance(document, dict) or "inputs" not in document:
        raise RequestError(400, 'expected a JSON object {"inputs": [{"name": "operands", '
                         f'"shape": [n, {op.arity}], "datatype": "FP64", "data": [...]}}]}}')
    extra = sorted(set(document) - _REQUEST_FIELDS)
    if extra:
        raise RequestError(400, f"unknown field {quoted(extra[0])}; expected id, parameters, "
                         "inputs, outputs")
    request_id = document.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise RequestError(400, '"id" must be a string')
    parameters = _parameters(document.get("parameters"), '"parameters"')
    binary_output = parameters.get("binary_data_output", False) is True
    binary_output = _outputs(document.get("outputs"), binary_output)
    tensors = document["inputs"]
    if not isinstance(tensors, list) or not tensors:
        raise RequestError(400, '"inputs" must be a non-empty list of tensors')
    if len(tensors) > max(op.arity, 1):
        raise RequestError(400, f"{len(tensors)} input tensors; {op.name} takes one, "
                         f"{INPUT_NAME!r} (n, {op.arity}), or one per input ({_names(op)})")
    columns: dict[str, npt.NDArray[np.float64]] = {}
    offset = 0
    for index, tensor in enumerate(tensors):
        name, values, used = _tensor(tensor, index, op, binary, offset)
        offset += used
        if name in columns:
            raise RequestError(400, f"input {quoted(name)} is given twice")
        columns[name] = values
    if offset != len(binary):
        raise RequestError(400, f"{len(binary) - offset} bytes after the JSON belong to no "
                         "input's binary_data_size")
    if INPUT_NAME in columns:
        if len(columns) > 1:
            raise RequestError(400, f"give {INPUT_NAME!r} or one tensor per input, not both")
        x = columns[INPUT_NAME]
    else:
        missing = [name for name in op.inputs if name not in columns]
        if missing:
            raise RequestError(400, f"no tensor for {op.name}'s input(s) {', '.join(missing)}; "
                             f"give {INPUT_NAME!r} (n, {op.arity}) or one per input "
                             f"({_names(op)})")
        lengths = {len(columns[name]) for name in op.inputs}
        if len(lengths) != 1:
            raise RequestError(400, "the input tensors have different lengths: "
                             + ", ".join(f"{n}: {len(columns[n])}" for n in op.inputs))
        x = np.stack([columns[name].reshape(-1) for name in op.inputs], axis=1)
    check_domain(op, x, "instance")
    return InferRequest(x, request_id, binary_output)


def _names(op: Operation) -> str:
    return ", ".join(op.inputs)


def _parameters(given: Any, where: str) -> dict[str, Any]:
    if given is None:
        return {}
    if not isinstance(given, dict):
        raise RequestError(400, f"{where} must be an object")
    return given


def _outputs(given: Any, binary: bool) -> bool:
    """The requested outputs: only ``result``; whether it is wanted as binary data."""
    if given is None:
        return binary
    if not isinstance(given, list):
        raise RequestError(400, '"outputs" must be a list of {"name": "result"}')
    for output in given:
        if not isinstance(output, dict) or output.get("name") != OUTPUT_NAME:
            name = output.get("name") if isinstance(output, dict) else output
            raise RequestError(400, f"no output {shortened(name, 40)}; the model's output is "
                             f"{OUTPUT_NAME!r}")
        parameters = _parameters(output.get("parameters"), f'output "{OUTPUT_NAME}" parameters')
        if "binary_data" in parameters:
            binary = parameters["binary_data"] is True
    return binary


def _tensor(
    tensor: Any, index: int, op: Operation, binary: bytes, offset: int
) -> tuple[str, npt.NDArray[np.float64], int]:
    """One input tensor -> (name, float64 values shaped (n, columns), binary bytes used)."""
    where = f"input {index + 1}"
    if not isinstance(tensor, dict):
        raise RequestError(400, f"{where} must be an object with name, shape, datatype, data")
    extra = sorted(set(tensor) - _TENSOR_FIELDS)
    if extra:
        raise RequestError(400, f"{where}: unknown field {quoted(extra[0])}")
    name = tensor.get("name")
    if not isinstance(name, str):
        raise RequestError(400, f"{where} needs a \"name\": {INPUT_NAME!r} or one of {_names(op)}")
    if name != INPUT_NAME and name not in op.inputs:
        raise RequestError(400, f"no input {quoted(name)}; {op.name} takes {INPUT_NAME!r} "
                         f"(n, {op.arity}) or one tensor per input ({_names(op)})")
    where = f"input {name!r}"
    columns = op.arity if name == INPUT_NAME else 1
    rows = _shape(tensor.get("shape"), columns, where, op)
    datatype = tensor.get("datatype")
    if datatype in _REFUSED:
        raise RequestError(400, f"{where}: datatype {datatype} is not numeric; send FP64 (or "
                         f"another of {', '.join(DATATYPES)})")
    if not isinstance(datatype, str) or datatype not in DATATYPES:
        raise RequestError(400, f"{where}: datatype must be one of {', '.join(DATATYPES)}, got "
                         f"{shortened(datatype, 40)}")
    count = rows * columns
    parameters = _parameters(tensor.get("parameters"), f"{where} parameters")
    size = parameters.get("binary_data_size")
    if size is not None:
        if "data" in tensor:
            raise RequestError(400, f"{where}: give data or binary_data_size, not both")
        dtype = np.dtype(DATATYPES[datatype])
        if type(size) is not int or size != count * dtype.itemsize:
            raise RequestError(400, f"{where}: binary_data_size must be {count * dtype.itemsize}"
                             f" ({count} {datatype} values), got {shortened(size, 40)}")
        if offset + size > len(binary):
            raise RequestError(400, f"{where}: binary_data_size {size} runs past the body's end")
        raw = np.frombuffer(binary, dtype=dtype, count=count, offset=offset)
        values = _from_binary(raw, datatype, where)
        return name, values.reshape(rows, columns), size
    if "data" not in tensor:
        raise RequestError(400, f"{where} needs \"data\" (or binary data)")
    flat = _flatten(tensor["data"], rows, columns, where)
    if len(flat) != count:
        raise RequestError(400, f"{where}: shape {[rows, columns]} holds {count} values, data "
                         f"has {len(flat)}")
    return name, _json_values(flat, datatype, where).reshape(rows, columns), 0


def _shape(shape: Any, columns: int, where: str, op: Operation) -> int:
    """The number of rows of a tensor of `columns` columns: shape [n, columns], or [n] where a
    row is one value."""
    wanted = f"[n, {columns}]" + (" or [n]" if columns == 1 else "")
    if (not isinstance(shape, list) or not 1 <= len(shape) <= 2
            or any(type(s) is not int or s < 0 for s in shape)):
        raise RequestError(400, f"{where}: shape must be {wanted}, got {shortened(shape, 40)}")
    if (len(shape) == 1 and columns != 1) or (len(shape) == 2 and shape[1] != columns):
        raise RequestError(400, f"{where}: shape must be {wanted} ({op.name} takes {op.arity} "
                         f"input(s): {_names(op)}), got {shortened(shape, 40)}")
    if shape[0] == 0:
        raise RequestError(400, f"{where}: no instances (shape {shape})")
    check_count(shape[0])
    return int(shape[0])


def _flatten(data: Any, rows: int, columns: int, where: str) -> list[Any]:
    """Flat data as given, or nested one level (rows of values)."""
    if not isinstance(data, list):
        raise RequestError(400, f"{where}: data must be a list of numbers")
    if len(data) > rows * columns:
        raise RequestError(400, f"{where}: shape {[rows, columns]} holds {rows * columns} "
                         f"values, data has {len(data)}")
    if data and type(data[0]) is list:
        flat: list[Any] = []
        for row in data:
            if type(row) is not list or len(row) != columns:
                raise RequestError(400, f"{where}: a nested row must hold {columns} number(s), "
                                 f"got {shortened(row)}")
            flat.extend(row)
        return flat
    return data


def _json_values(flat: list[Any], datatype: str, where: str) -> npt.NDArray[np.float64]:
    """JSON numbers as float64, exactly, or a 400 naming the first that cannot be. The common
    case inline, one pass: 400,000 values in a request."""
    whole = datatype.startswith(("INT", "UINT"))
    for value in flat:
        kind = type(value)
        if (kind is not float and (kind is not int or abs(value) > EXACT_INTEGER)) or (
            whole and kind is not int
        ):
            _refuse_value(value, datatype, where)
    if whole and flat:
        info = np.iinfo(np.dtype(DATATYPES[datatype]))
        for value in (min(flat), max(flat)):
            if not info.min <= value <= info.max:
                raise RequestError(400, f"{where}: {value} is outside {datatype}")
    values = np.asarray(flat, dtype=np.float64)
    if datatype in ("FP32", "FP16"):
        with np.errstate(over="ignore"):  # past the type's range: inf, refused below
            narrow = values.astype(DATATYPES[datatype])
        bad = narrow.astype(np.float64) != values
        if bad.any():
            shown = shortened(flat[int(np.argmax(bad))])
            raise RequestError(400, f"{where}: {shown} is not a {datatype} value (send it as "
                             "FP64)")
    return values


def _refuse_value(value: Any, datatype: str, where: str) -> None:
    kind = type(value)
    if kind is not int and kind is not float:  # bool subclasses int: compared exactly
        raise RequestError(400, f"{where}: {shortened(value)} is not a number")
    if kind is int and abs(value) > EXACT_INTEGER:
        raise RequestError(400, f"{where}: {value} is beyond what a float64 model can represent "
                         f"exactly (the limit is |x| <= 2**53 = {EXACT_INTEGER})")
    raise RequestError(400, f"{where}: {value!r} is not a whole number ({datatype})")


def _from_binary(raw: npt.NDArray[Any], datatype: str, where: str) -> npt.NDArray[np.float64]:
    """Binary values as float64, exactly, or the first that cannot be."""
    if datatype.startswith("FP"):
        values = raw.astype(np.float64)
        bad = ~np.isfinite(values)
    else:
        if raw.dtype.itemsize == 8:  # (U)INT64: past 2**53 float64 rounds
            limit = raw.dtype.type(EXACT_INTEGER)
            bad = raw > limit if raw.dtype.kind == "u" else (raw > limit) | (raw < -limit)
        else:
            bad = np.zeros(raw.shape, dtype=bool)
        values = raw.astype(np.float64)
    if bad.any():
        first = raw[int(np.argmax(bad))]
        if datatype.startswith("FP"):
            raise RequestError(400, f"{where}: {first} is not a finite number")
        raise RequestError(400, f"{where}: {first} is beyond what a float64 model can represent "
                         f"exactly (the limit is |x| <= 2**53 = {EXACT_INTEGER})")
    return values
