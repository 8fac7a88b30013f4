"""TF Serving's predict request, read and checked: rows, named instances, columns.

Every value is checked before it costs memory or time: only JSON numbers are numbers, whole
numbers beyond 2**53 are refused (float64 would answer for another number), points outside the
operation's domain by `check_pairs`, at most `MAX_INSTANCES` instances. Each refusal is a
`RequestError`: a 4xx status and one line, values echoed back cut to about 40 characters. The
KServe v2 reader (`serve_kserve`) shares the checks. Pure functions of the bytes and the
operation: they run in a worker process for large bodies (`serve_workers`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from sweep.errors import ConfigError, first_line
from sweep.nets.portable import INPUT_NAME, SIGNATURE_NAME
from sweep.problem.operations import Operation
from sweep.publishing.models import (
    answers_of,
    arrange_named,
    beyond_exact,
    check_pairs,
    rounded_rows,
)

__all__ = [
    "ECHO_CHARS",
    "EXACT_INTEGER",
    "MAX_INSTANCES",
    "ParsedRequest",
    "RequestError",
    "answers_for",
    "check_count",
    "check_domain",
    "check_signature",
    "exact_number",
    "parse_instances",
    "parse_request",
    "quoted",
    "shortened",
]

MAX_INSTANCES = 200_000
ECHO_CHARS = 40
EXACT_INTEGER = 2**53


class RequestError(Exception):
    """A request refused: its HTTP status and the one line of its JSON error."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}

    def __reduce__(self) -> tuple[Any, ...]:
        # Raised in a worker process (`serve_workers`), answered by the server's.
        return RequestError, (self.status, self.message, self.headers)


def parse_instances(body: bytes, op: Operation) -> npt.NDArray[np.float64]:
    """A predict request -> a float64 array (n, arity) in `op.inputs` order, or one 4xx line
    naming the problem.

    TF Serving's row format, ``{"instances": [[n, R, T, V], ...]}`` (values in the operation's
    input order; ``[a, ...]`` for a one-input operation) or ``{"instances": [{"n": .., ...},
    ...]}`` (by name), and its columnar format, ``{"inputs": {"n": [..], ...}}`` (or ``{"inputs":
    [[..], ...]}``). By name, every input exactly once. The signature's own input name works as
    TF Serving takes it, ``{"instances": [{"operands": [n, R, T, V]}, ...]}`` and ``{"inputs":
    {"operands": [[n, R, T, V], ...]}}``, unless an input of the operation is named so. Only
    JSON numbers are numbers (not ``true``, not ``"3"``); NaN and infinities are not JSON and
    are refused by the parser; magnitudes beyond 2**53 and points outside the operation's domain
    by `check_pairs`.
    """
    return parse_request(body, op).x


@dataclass(frozen=True)
class ParsedRequest:
    """A predict request: its rows (in `op.inputs` order), whether it was columnar (TF Serving
    answers ``"inputs"`` with ``"outputs"``, not ``"predictions"``) and whether it asked for
    the answers as `sweep predict` gives them (``"answers": true``)."""

    x: npt.NDArray[np.float64]
    columnar: bool
    answers: bool


def parse_request(body: bytes, op: Operation) -> ParsedRequest:
    """`parse_instances`, with the request's form (`ParsedRequest`)."""
    import orjson

    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as e:
        raise RequestError(400, f"the body is not JSON: {first_line(e)}") from None
    rows = f"[[{', '.join(op.inputs)}], ...]" + (" or [a, ...]" if op.arity == 1 else "")
    by_name = ", ".join(f'"{name}": [...]' for name in op.inputs)
    if not isinstance(document, dict) or not {"instances", "inputs"} & set(document):
        raise RequestError(
            400, f'expected a JSON object {{"instances": {rows}}} or {{"inputs": {{{by_name}}}}}'
        )
    extra = sorted(set(document) - {"instances", "inputs", "signature_name", "answers"})
    if extra:
        raise RequestError(
            400, f'unknown field {quoted(extra[0])}; expected "instances" or "inputs"'
        )
    if "instances" in document and "inputs" in document:
        raise RequestError(400, 'give "instances" (rows) or "inputs" (columns), not both')
    check_signature(document.get("signature_name"))
    if not isinstance(document.get("answers", False), bool):
        raise RequestError(400, '"answers" must be true or false')
    columnar = "inputs" in document
    given = document["inputs"] if columnar else document["instances"]
    signature = columnar and isinstance(given, dict) and _signature_input(given, op)
    if signature:
        given = given[INPUT_NAME]  # TF Serving's named columnar form of the one tensor
    if columnar and isinstance(given, dict):
        x = _columns(given, op)
        named = True
    else:
        field = "inputs" if columnar else "instances"
        if not isinstance(given, list) or not given:
            raise RequestError(400, f'"{field}" must be a non-empty list: {rows}')
        check_count(len(given))
        checked: list[list[float]] = []
        named = signature
        for index, row in enumerate(given):
            if type(row) is dict and _signature_input(row, op):
                row, named = row[INPUT_NAME], True  # TF Serving's named instance of the tensor
            if type(row) is dict:
                named = True
                values = _named(row, op, f"instance {index + 1}")
            else:
                if op.arity == 1 and type(row) in (int, float):
                    row = [row]
                if type(row) is not list or len(row) != op.arity:
                    raise RequestError(
                        400, f"instance {index + 1}: {op.name} takes {op.arity} number(s) per "
                        f"instance ({rows}, or by name), got {shortened(row)}"
                    )
                values = row
            for value in values:
                kind = type(value)  # the common case inline: 200,000 instances in a request
                if kind is not float and (kind is not int or abs(value) > EXACT_INTEGER):
                    exact_number(value, f"instance {index + 1}")  # raises, naming it
            checked.append(values)
        x = np.asarray(checked, dtype=np.float64).reshape(len(checked), op.arity)
    if named:
        _refuse_repeated_names(body)
    check_domain(op, x, "instance")
    return ParsedRequest(x, columnar, document.get("answers", False))


def check_signature(name: Any) -> None:
    """TF Serving's ``signature_name``: the exported model has one signature, and a request
    for any other is refused (TF Serving answers 400 for an unknown one too), not ignored."""
    if name is None or name in ("", SIGNATURE_NAME):
        return
    if not isinstance(name, str):
        raise RequestError(400, f'"signature_name" must be a string; the model\'s signature '
                         f"is {SIGNATURE_NAME!r}")
    raise RequestError(400, f"no signature {quoted(name)}; the model's only signature is "
                     f"{SIGNATURE_NAME!r}")


def check_domain(op: Operation, x: npt.NDArray[np.float64], what: str) -> None:
    """Every row inside the operation's domain (as `sweep predict` checks), else one 400 line."""
    try:
        check_pairs(op, x, what=what)
    except ConfigError as e:
        raise RequestError(400, str(e)) from None


def answers_for(
    x: npt.NDArray[np.float64], y: npt.ArrayLike, op: Operation
) -> dict[str, npt.NDArray[Any]]:
    """``"answers": true``: per instance the answer as `sweep predict` gives it (rounded only
    for an integer-valued operation on whole inputs), whether it was rounded, and whether its
    magnitude is beyond 2**53 (where float64 no longer holds every whole number)."""
    rounded = rounded_rows(x, op.integer_valued)
    answers = answers_of(np.asarray(y, dtype=np.float64), rounded)
    return {"answers": answers, "rounded": rounded, "beyond_2_53": beyond_exact(answers)}


def check_count(count: int) -> None:
    if count > MAX_INSTANCES:
        raise RequestError(413, f"{count} instances in one request; the limit is {MAX_INSTANCES}")


def exact_number(value: Any, where: str) -> float:
    """A JSON number as float64: exact (ints beyond 2**53 refused), never a bool or a string."""
    kind = type(value)
    if kind is int and abs(value) > EXACT_INTEGER:
        # Exact in JSON, but float64 would round it to another number: refuse it here.
        raise RequestError(400, f"{where}: {value} is beyond what a float64 model can represent "
                         f"exactly (the limit is |x| <= 2**53 = {EXACT_INTEGER})")
    if kind is not int and kind is not float:  # bool subclasses int: compare exactly
        raise RequestError(400, f"{where}: {shortened(value)} is not a number")
    return float(value)


def _signature_input(given: dict[str, Any], op: Operation) -> bool:
    """``{"operands": ...}``: the exported signature's one input by its name (as TF Serving
    reads a named instance or column), not an input of the operation named so."""
    return len(given) == 1 and INPUT_NAME in given and INPUT_NAME not in op.inputs


def _named(row: dict[str, Any], op: Operation, where: str) -> list[Any]:
    """One instance given by name, in `op.inputs` order, as `sweep predict` takes one."""
    try:
        return arrange_named(op, row.items())
    except ConfigError as e:
        raise RequestError(400, f"{where}: {e}") from None


def _columns(given: dict[str, Any], op: Operation) -> npt.NDArray[np.float64]:
    """TF Serving's columnar ``{"inputs": {"n": [..], ...}}``: one list per input, all of one
    length (or one number per input: one instance)."""
    columns = _named(given, op, '"inputs"')
    if all(type(c) is not list for c in columns):
        return np.asarray([[exact_number(v, f'"inputs".{n}') for n, v in zip(
            op.inputs, columns, strict=True)]], dtype=np.float64)
    lengths = {name: len(c) if type(c) is list else None for name, c in zip(
        op.inputs, columns, strict=True)}
    if None in lengths.values() or len(set(lengths.values())) != 1 or not columns[0]:
        shown = ", ".join(f"{n}: {'not a list' if k is None else k}" for n, k in lengths.items())
        raise RequestError(400, f'"inputs": every input needs a non-empty list of numbers, all of '
                         f"one length ({shown[:200]})")
    check_count(len(columns[0]))
    x = np.empty((len(columns[0]), op.arity), dtype=np.float64)
    for k, (name, column) in enumerate(zip(op.inputs, columns, strict=True)):
        x[:, k] = [exact_number(v, f'"inputs".{name}[{i}]') for i, v in enumerate(column)]
    return x


def _refuse_repeated_names(body: bytes) -> None:
    """JSON parsers keep the last of a repeated key (``{"n": 1, "n": 2}``); a name given twice
    is refused instead. Only for requests by name, whose structure is checked by now (shallow:
    objects of numbers or of lists of numbers), so Python's own parser reads it safely."""
    import json

    def no_repeats(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise RequestError(400, f"{quoted(key)} is given twice; give each input once")
            seen.add(key)
        return dict(pairs)

    json.loads(body, object_pairs_hook=no_repeats)


def shortened(value: Any, limit: int = 60) -> str:
    """A parsed JSON value as compact JSON, cut to `limit` characters.

    Written out by hand, a piece at a time, and only as far as shown: a value may nest 1,000
    levels deep (orjson reads 1,024), past what `repr` and `orjson.dumps` recurse through.
    """
    import orjson

    pieces: list[str] = []
    size = 0
    pending: list[Any] = [value]  # values to write, and _Piece texts, last first
    while pending and size <= limit:
        item = pending.pop()
        if isinstance(item, _Piece):
            text = item.text
        elif isinstance(item, (list, dict)):
            opening, closing = ("[", "]") if isinstance(item, list) else ("{", "}")
            text = opening
            parts: list[Any] = []
            # Each element shows at least one character: more than `limit` are never reached.
            for index, element in enumerate(item.items() if isinstance(item, dict) else item):
                if index > limit:
                    break
                if index:
                    parts.append(_Piece(","))
                if isinstance(item, dict):
                    key, element = element
                    parts.extend((key, _Piece(":")))
                parts.append(element)
            pending.append(_Piece(closing))
            pending.extend(reversed(parts))
        elif isinstance(item, str):
            text = orjson.dumps(item[: limit + 1]).decode()
        else:
            try:
                text = orjson.dumps(item).decode()
            except TypeError:
                text = repr(item)[: limit + 1]
        pieces.append(text)
        size += len(text)
    text = "".join(pieces)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class _Piece:
    """Literal text in `_short`'s queue of values to write."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text


def quoted(text: str) -> str:
    """A value from the request (a path segment, a field name) quoted and cut to ~40 characters."""
    return repr(text if len(text) <= ECHO_CHARS else text[: ECHO_CHARS - 3] + "...")
