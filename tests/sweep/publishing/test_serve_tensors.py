"""KServe v2 inference requests read exactly or refused in one line: JSON and binary tensors, every
numeric datatype, by `operands` or by input name (no server: the reader is a pure function)."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

from sweep.problem.operations import BUILTIN_OPERATIONS
from sweep.publishing.serve_requests import MAX_INSTANCES, RequestError
from sweep.publishing.serve_tensors import DATATYPES, parse_infer

ADD = BUILTIN_OPERATIONS["add"]
DIVIDE = BUILTIN_OPERATIONS["divide"]


def _body(*tensors: dict[str, Any], **fields: Any) -> bytes:
    return json.dumps({"inputs": list(tensors), **fields}).encode()


def _operands(data: Any, shape: list[int], datatype: str = "FP64") -> dict[str, Any]:
    return {"name": "operands", "shape": shape, "datatype": datatype, "data": data}


def _binary(array: np.ndarray, datatype: str, **fields: Any) -> tuple[bytes, int]:
    """The binary tensor extension as tritonclient sends it: JSON, then the raw bytes."""
    raw = array.astype(DATATYPES[datatype]).tobytes()
    header = json.dumps({"inputs": [{
        "name": "operands", "shape": list(array.shape), "datatype": datatype,
        "parameters": {"binary_data_size": len(raw)}}], **fields}).encode()
    return header + raw, len(header)


def test_the_protocol_documents_example_shape_is_read_flat_or_nested() -> None:
    flat = parse_infer(_body(_operands([1, 2, 3, 4], [2, 2], "UINT32"), id="42"), ADD)
    nested = parse_infer(_body(_operands([[1, 2], [3, 4]], [2, 2], "UINT32")), ADD)
    assert flat.x.tolist() == nested.x.tolist() == [[1.0, 2.0], [3.0, 4.0]]
    assert flat.request_id == "42" and nested.request_id is None
    assert not flat.binary_output


def test_one_tensor_per_input_name_is_arranged_in_the_operations_order() -> None:
    body = _body({"name": "b", "shape": [2], "datatype": "FP64", "data": [3, 4]},
                 {"name": "a", "shape": [2, 1], "datatype": "INT32", "data": [[1], [2]]})
    assert parse_infer(body, ADD).x.tolist() == [[1.0, 3.0], [2.0, 4.0]]


@pytest.mark.parametrize("datatype", sorted(DATATYPES))
def test_every_numeric_datatype_is_taken_exactly_in_json_and_in_binary(datatype: str) -> None:
    values = np.asarray([[1, 2], [100, 7]])
    if datatype.startswith("FP"):
        values = values + 0.5  # halves are exact in FP16 as well
    json_read = parse_infer(_body(_operands(values.reshape(-1).tolist(), [2, 2], datatype)), ADD)
    body, length = _binary(values, datatype)
    binary_read = parse_infer(body, ADD, header_length=length)
    assert json_read.x.tolist() == binary_read.x.tolist() == values.astype(float).tolist()


def test_binary_outputs_are_asked_for_as_tritonclient_asks() -> None:
    body = _body(_operands([1, 2], [1, 2]), parameters={"binary_data_output": True})
    assert parse_infer(body, ADD).binary_output
    body = _body(_operands([1, 2], [1, 2]),
                 outputs=[{"name": "result", "parameters": {"binary_data": True}}])
    assert parse_infer(body, ADD).binary_output
    body = _body(_operands([1, 2], [1, 2]), outputs=[{"name": "result"}])
    assert not parse_infer(body, ADD).binary_output


def test_64_bit_integers_are_exact_up_to_2_53_and_refused_past_it() -> None:
    fine = np.asarray([[2**53, -(2**53)]], dtype=np.int64)
    body, length = _binary(fine, "INT64")
    assert parse_infer(body, ADD, header_length=length).x.tolist() == [[2.0**53, -(2.0**53)]]
    for datatype in ("INT64", "UINT64"):
        past = np.asarray([[2**53 + 1, 1]], dtype=DATATYPES[datatype])
        body, length = _binary(past, datatype)
        with pytest.raises(RequestError, match=r"9007199254740993 is beyond .* 2\*\*53"):
            parse_infer(body, ADD, header_length=length)
    with pytest.raises(RequestError, match="beyond"):
        parse_infer(_body(_operands([2**53 + 1, 1], [1, 2], "INT64")), ADD)


LIMIT = 2**53 + 1


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (b"not json", "not JSON"),
        (b"[1, 2]", 'expected a JSON object {"inputs"'),
        (_body(_operands([1, 2], [1, 2]), extra=1), "unknown field 'extra'"),
        (json.dumps({"inputs": []}).encode(), "non-empty list"),
        (_body(_operands([1, 2], [1, 2]), id=5), '"id" must be a string'),
        (_body({"name": "c", "shape": [1], "datatype": "FP64", "data": [1]}), "no input 'c'"),
        (_body({"name": "a", "shape": [1], "datatype": "FP64", "data": [1]}),
         "no tensor for add's input(s) b"),
        (_body(_operands([1, 2], [1, 2]), _operands([1, 2], [1, 2])), "given twice"),
        (_body(_operands([1, 2, 3], [1, 3])), "shape must be [n, 2]"),
        (_body(_operands([1, 2], [2])), "shape must be [n, 2]"),
        (_body(_operands([1, 2], [1, 2, 1])), "shape must be [n, 2]"),
        (_body(_operands([1, 2], [-1, 2])), "shape must be"),
        (_body(_operands([], [0, 2])), "no instances"),
        (_body(_operands([1, 2, 3], [1, 2])), "holds 2 values, data has 3"),
        (_body(_operands([1], [1, 2])), "holds 2 values, data has 1"),
        (_body(_operands([1, "2"], [1, 2])), '"2" is not a number'),
        (_body(_operands([True, 2], [1, 2])), "true is not a number"),
        (_body(_operands([None, 2], [1, 2])), "null is not a number"),
        (_body(_operands([[1, [2]]], [1, 2])), "[2] is not a number"),
        (_body(_operands([LIMIT, 1], [1, 2])), "beyond what a float64 model"),
        (_body(_operands([1.5, 2], [1, 2], "INT32")), "1.5 is not a whole number (INT32)"),
        (_body(_operands([300, 2], [1, 2], "UINT8")), "300 is outside UINT8"),
        (_body(_operands([-1, 2], [1, 2], "UINT32")), "-1 is outside UINT32"),
        (_body(_operands([0.1, 2], [1, 2], "FP32")), "0.1 is not a FP32 value"),
        (_body(_operands([1e300, 2], [1, 2], "FP32")), "is not a FP32 value"),
        (_body(_operands([1, 0], [1, 2], "BOOL")), "datatype BOOL is not numeric"),
        (_body(_operands(["a", "b"], [1, 2], "BYTES")), "datatype BYTES is not numeric"),
        (_body(_operands([1, 2], [1, 2], "FP8")), "datatype must be one of"),
        (_body(_operands([1, 2], [1, 2]), outputs=[{"name": "answer"}]), 'no output "answer"'),
        (_body(_operands([1, 2], [MAX_INSTANCES + 1, 2])), f"the limit is {MAX_INSTANCES}"),
        (_body({"name": "operands", "shape": [1, 2], "datatype": "FP64",
                "parameters": {"binary_data_size": 16}}), "runs past the body's end"),
    ],
)
def test_bad_requests_are_one_line_naming_the_value(body: bytes, fragment: str) -> None:
    with pytest.raises(RequestError) as refused:
        parse_infer(body, ADD)
    assert refused.value.status in (400, 413)
    assert fragment in refused.value.message and "\n" not in refused.value.message


def test_binary_data_must_add_up_to_the_body() -> None:
    body, length = _binary(np.asarray([[1.0, 2.0]]), "FP64")
    with pytest.raises(RequestError, match="1 bytes after the JSON belong to no input"):
        parse_infer(body + b"x", ADD, header_length=length)
    with pytest.raises(RequestError, match="more than the body's"):
        parse_infer(body, ADD, header_length=len(body) + 1)
    nan, length = _binary(np.asarray([[np.nan, 2.0]]), "FP64")
    with pytest.raises(RequestError, match="nan is not a finite number"):
        parse_infer(nan, ADD, header_length=length)


def test_points_outside_the_domain_are_refused_as_predict_refuses_them() -> None:
    with pytest.raises(RequestError, match="instance"):
        parse_infer(_body(_operands([1, 0], [1, 2])), DIVIDE)


def test_a_refusal_crosses_a_process_boundary_whole() -> None:
    import pickle

    error = RequestError(503, "loading", {"Retry-After": "2"})
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.status, copy.message, copy.headers) == (503, "loading", {"Retry-After": "2"})
