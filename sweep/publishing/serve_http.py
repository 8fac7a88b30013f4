"""What both of `sweep serve`'s protocols share: JSON answers, the bounded body, the lookup of
the model that answers, and the labels a request carries into the metrics and the access log.

Imported only once the server starts (Starlette is the serve extra's).
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from sweep.publishing.http_limits import MAX_BODY_BYTES
from sweep.publishing.model_store import ModelStore, Served
from sweep.publishing.serve_requests import ECHO_CHARS, RequestError, quoted

__all__ = [
    "OPERATION_KEY",
    "ROUTE_KEY",
    "error_response",
    "json_response",
    "label",
    "lookup",
    "read_body",
    "shown_version",
]

# Where a handler leaves its route template and operation for the middleware (`serve_metrics`):
# templates, not paths, and only operations served here, so the metrics' labels stay few.
ROUTE_KEY = "sweep.route"
OPERATION_KEY = "sweep.operation"


def json_response(
    status: int, body: dict[str, Any], headers: dict[str, str] | None = None
) -> Response:
    return Response(
        orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY),
        status_code=status,
        media_type="application/json",
        headers=headers,
    )


def error_response(e: RequestError) -> Response:
    return json_response(e.status, {"error": e.message}, e.headers)


def label(request: Request, route: str, store: ModelStore, name: str | None = None) -> None:
    """Tag the request with its route template and (if served here) its operation."""
    request.scope[ROUTE_KEY] = route
    if name is not None and store.is_known(name):
        request.scope[OPERATION_KEY] = name


async def read_body(request: Request) -> bytes:
    """The body, refused (413) past `MAX_BODY_BYTES` before it is held whole."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise RequestError(400, "Content-Length is not a number")
        if int(declared) > MAX_BODY_BYTES:
            raise RequestError(413, f"the body is {declared} bytes; the limit is "
                             f"{MAX_BODY_BYTES} bytes")
    chunks: list[bytes] = []
    total = 0
    try:
        async for chunk in request.stream():
            total += len(chunk)
            if total > MAX_BODY_BYTES:
                raise RequestError(413, f"the body exceeds the limit of {MAX_BODY_BYTES} bytes")
            chunks.append(chunk)
    except ClientDisconnect:
        # The client left, or the server cut off a slow body and answered it (408): this
        # answer goes nowhere, and it is no error of ours to log.
        raise RequestError(400, "the connection closed before the body arrived") from None
    return b"".join(chunks)


def shown_version(version: str) -> str:
    return version if version.isdigit() and len(version) <= ECHO_CHARS else quoted(version)


def lookup(store: ModelStore, name: str, version: str | None) -> Served:
    """The model answering for `name` (and `version`, if named), else a 404/503 line."""
    if not store.is_known(name):
        raise RequestError(404, f"no operation {quoted(name)} is served here")
    served = store.served(name)
    if served is None:
        status = store.status(name)
        if status.state == "LOADING":
            raise RequestError(503, f"{name} is loading; try again shortly", {"Retry-After": "2"})
        raise RequestError(404, f"no model for {name!r} yet: {status.error}")
    if version is not None and version != str(served.entry.version):
        raise RequestError(
            404, f"{name} version {shown_version(version)} is not served (version "
            f"{served.entry.version} is)"
        )
    return served
