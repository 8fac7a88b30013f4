"""Every input of `sweep serve` is bounded: the request head (size, fields, URL, the time to send
it), the body (bytes and time), JSON nesting, and what an error echoes back.

A real `sweep serve` process with a model, asked over raw sockets where the request is malformed
or slow, with httpx elsewhere. Each refusal is a 4xx with one JSON line, the service goes on
answering, and its log holds no traceback. The timeouts are the product's own (a few seconds).
docs/reliability.md lists each case.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from _hand_models import exact_add, promote
from _serving import Server, start_server

from sweep.publishing.http_limits import (
    BODY_GRACE_SECONDS,
    HEAD_SECONDS,
    MAX_BODY_BYTES,
    MAX_CONNECTIONS,
    MAX_HEAD_BYTES,
    MAX_HEADER_FIELDS,
    MAX_URL_BYTES,
)

# A real server (about 13 s to start, a model promoted first) and four 5 s clocks: about 50 s in
# all, so the slow tier, as the other tests of the service. No single test takes over 6 s.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

PREDICT = "/v1/models/add:predict"
BODY = b'{"instances": [[2, 3]]}'


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    folder = tmp_path_factory.mktemp("limits")
    url = f"sqlite:///{folder / 'sweeps.db'}"
    promote(url, "add", exact_add(), 1.0)
    running = start_server(url, folder)
    yield running
    assert running.stop() == 0, running.logged()
    logged = running.logged()
    assert "Traceback" not in logged and "Exception in ASGI" not in logged, logged


def _connect(server: Server) -> socket.socket:
    port = int(server.base.rsplit(":", 1)[1])
    return socket.create_connection(("127.0.0.1", port), timeout=10)


def _read(sock: socket.socket, within: float = 10) -> bytes:
    """Everything the server sends until it closes (or resets, or `within` seconds pass)."""
    chunks: list[bytes] = []
    deadline = time.monotonic() + within
    while (left := deadline - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            chunk = sock.recv(65536)
        except (TimeoutError, ConnectionResetError):
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


def _responses(raw: bytes) -> list[tuple[int, dict[str, str], bytes]]:
    """The responses in `raw` (each framed by its Content-Length): status, headers, body."""
    found = []
    while raw:
        head, _, rest = raw.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, v in (x.split(":", 1) for x in lines[1:])}
        length = int(headers["content-length"])
        found.append((int(lines[0].split()[1]), headers, rest[:length]))
        raw = rest[length:]
    return found


def _one_response(sock: socket.socket, within: float = 10) -> bytes:
    """One whole response on a kept-alive connection: the head, then as many bytes as it says."""
    raw = b""
    deadline = time.monotonic() + within
    while (left := deadline - time.monotonic()) > 0:
        head, found, rest = raw.partition(b"\r\n\r\n")
        if found:
            fields = (line.split(b":", 1) for line in head.split(b"\r\n")[1:])
            length = next(int(v) for k, v in fields if k.strip().lower() == b"content-length")
            if len(rest) >= length:
                return raw
        sock.settimeout(left)
        chunk = sock.recv(65536)
        if not chunk:
            break
        raw += chunk
    raise AssertionError(f"no whole response within {within:g} s: {raw[:300]!r}")


def _request(path: str = PREDICT, body: bytes = BODY, extra: bytes = b"") -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n".encode() + extra + b"\r\n" + body
    )


def _refused(raw: bytes, status: int, fragment: str) -> dict[str, Any]:
    """`raw` is one response: `status`, one JSON line holding `fragment`, and the close."""
    assert raw, "no answer: the connection was closed or reset without one"
    [(got, headers, body)] = _responses(raw)
    assert (got, headers["content-type"]) == (status, "application/json"), raw[:300]
    assert headers["connection"] == "close" and b"\n" not in body
    document: dict[str, Any] = json.loads(body)
    assert fragment in document["error"], document
    return document


def _still_answers(server: Server) -> None:
    response = httpx.post(f"{server.base}{PREDICT}", content=BODY, timeout=30)
    assert response.json() == {"predictions": [5.0], "model_version": 1}


def _answer(server: Server, request: bytes, within: float = 10) -> bytes:
    with _connect(server) as sock:
        sock.sendall(request)
        return _read(sock, within)


# --- the head: bytes, fields, URL ---------------------------------------------------------------


def _field(size: int) -> bytes:
    return b"X-Padding: " + b"a" * size + b"\r\n"


def test_a_head_within_the_limits_is_answered(server: Server) -> None:
    fields = b"".join(b"X-Field-%d: 1\r\n" % i for i in range(MAX_HEADER_FIELDS - 4))
    for extra in (_field(MAX_HEAD_BYTES - 1024), fields):
        raw = _answer(server, _request(extra=extra + b"Connection: close\r\n"))
        [(status, _, body)] = _responses(raw)
        assert (status, json.loads(body)["predictions"]) == (200, [5.0])


@pytest.mark.parametrize("pieces", [1, 64], ids=["at-once", "in-64-reads"])
def test_a_head_over_the_limit_is_refused_with_431(server: Server, pieces: int) -> None:
    request = _request(extra=_field(MAX_HEAD_BYTES + 1024))
    with _connect(server) as sock:
        step = len(request) // pieces + 1
        for start in range(0, len(request), step):
            sock.sendall(request[start : start + step])
            if pieces > 1:
                time.sleep(0.01)  # separate reads on the server's side
        raw = _read(sock)
    _refused(raw, 431, f"exceeds {MAX_HEAD_BYTES} bytes")
    _still_answers(server)


def test_too_many_header_fields_is_refused_with_431(server: Server) -> None:
    fields = b"".join(b"X-Field-%d: 1\r\n" % i for i in range(MAX_HEADER_FIELDS))
    _refused(_answer(server, _request(extra=fields)), 431, f"more than {MAX_HEADER_FIELDS}")
    _still_answers(server)


@pytest.mark.parametrize(
    "path",
    [PREDICT + "?pad=" + "a" * MAX_URL_BYTES, "/v1/models/" + "a" * MAX_URL_BYTES + ":predict"],
    ids=["query", "path"],
)
def test_a_url_over_the_limit_is_refused_with_414(server: Server, path: str) -> None:
    _refused(_answer(server, _request(path)), 414, f"longer than {MAX_URL_BYTES} bytes")
    _still_answers(server)


def test_what_is_not_http_gets_a_json_400(server: Server) -> None:
    _refused(_answer(server, b"HELLO\x00 there\r\n\r\n"), 400, "not valid HTTP")
    _still_answers(server)


def test_requests_pipelined_on_one_connection_are_answered_in_order(server: Server) -> None:
    other = b'{"instances": [[10, 20]]}'
    raw = _answer(server, _request() + _request(body=other, extra=b"Connection: close\r\n"))
    answers = [json.loads(body)["predictions"] for _, _, body in _responses(raw)]
    assert answers == [[5.0], [30.0]]


# --- what an error echoes --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "body", "fragment"),
    [
        ("POST", f"/v1/models/add/versions/{'9' * 5000}:predict", BODY,
         "add version '" + "9" * 37 + "...' is not served (version 1 is)"),
        ("GET", f"/v1/models/add/versions/{'9' * 5000}", b"", "is not served (version 1 is)"),
        ("POST", f"/v1/models/{'x' * 5000}:predict", BODY, "no operation 'xxxxxxxxx"),
        ("POST", f"/v1/models/add:{'x' * 5000}", BODY, "unknown method 'xxxxxxx"),
        ("GET", f"/nowhere/{'x' * 5000}", b"", "no such path '/nowhere/xxxx"),
        ("POST", PREDICT, b'{"instances": [[1, 2]], "' + b"k" * 5000 + b'": 1}', "unknown field"),
        ("POST", PREDICT, b'{"instances": [[1, "' + b"s" * 5000 + b'"]]}', "is not a number"),
    ],
    ids=["version", "version-status", "operation", "method", "path", "field", "value"],
)
def test_echoed_values_are_cut_short(
    server: Server, method: str, path: str, body: bytes, fragment: str
) -> None:
    response = httpx.request(method, f"{server.base}{path}", content=body, timeout=30)
    assert response.status_code in (400, 404), response.text[:300]
    error = response.json()["error"]
    assert fragment in error and len(error) < 120, error


# --- JSON nesting ----------------------------------------------------------------------------


def _nested(depth: int, opening: str, closing: str, inner: str = "1") -> str:
    return opening * depth + inner + closing * depth


OBJECT = '{"a": '


@pytest.mark.parametrize(
    ("instances", "fragment"),
    [
        (f"[{_nested(1000, '[', ']')}]", "add takes 2 number(s) per instance"),
        (f"[[1, {_nested(1000, OBJECT, '}')}]]", 'instance 1: {"a":{"a":'),
        (f"[[{_nested(1000, '[', ']')}, 1]]", "is not a number"),
        (_nested(1000, OBJECT, "}"), '"instances" must be a non-empty list'),
        (_nested(100_000, "[", "]"), "not JSON"),
        (_nested(100_000, OBJECT, "}"), "not JSON"),
    ],
    ids=["array-1000", "object-1000", "value-1000", "instances-object-1000", "array-100000",
         "object-100000"],
)
def test_deep_nesting_is_a_400_in_one_line(server: Server, instances: str, fragment: str) -> None:
    body = ('{"instances": ' + instances + "}").encode()
    response = httpx.post(f"{server.base}{PREDICT}", content=body, timeout=30)
    assert response.status_code == 400, response.text[:300]
    error = response.json()["error"]
    assert fragment in error and len(error) < 200, error
    _still_answers(server)


# --- time ------------------------------------------------------------------------------------


def _trickle(sock: socket.socket, pieces: Iterator[bytes], every: float, within: float) -> bytes:
    """Send a piece every `every` seconds until the server answers or closes; its answer."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            sock.sendall(next(pieces))
        except OSError:
            break
        sock.settimeout(every)
        try:
            first = sock.recv(65536)
        except TimeoutError:
            continue
        except ConnectionResetError:
            return b""
        return first + _read(sock, 5) if first else b""
    return _read(sock, 5)


def _fields() -> Iterator[bytes]:
    index = 0
    while True:
        yield b"X-Slow-%d: 1\r\n" % index
        index += 1


@pytest.mark.parametrize("after_a_request", [False, True], ids=["new", "kept-alive"])
def test_a_head_sent_slowly_is_cut_off_with_408(server: Server, after_a_request: bool) -> None:
    with _connect(server) as sock:
        if after_a_request:
            sock.sendall(_request())
            first = _one_response(sock)
            assert [status for status, _, _ in _responses(first)] == [200], first
        started = time.monotonic()
        sock.sendall(f"POST {PREDICT} HTTP/1.1\r\nHost: localhost\r\n".encode())
        raw = _trickle(sock, _fields(), every=0.5, within=HEAD_SECONDS + 10)
        seconds = time.monotonic() - started
    _refused(raw, 408, f"did not arrive within {HEAD_SECONDS:g} s")
    assert HEAD_SECONDS - 0.5 < seconds < HEAD_SECONDS + 2, seconds
    _still_answers(server)


def test_a_connection_that_sends_nothing_is_closed(server: Server) -> None:
    with _connect(server) as sock:
        started = time.monotonic()
        raw = _read(sock, HEAD_SECONDS + 10)
        seconds = time.monotonic() - started
    assert raw == b"" and HEAD_SECONDS - 0.5 < seconds < HEAD_SECONDS + 2, (raw, seconds)


def test_a_body_sent_slowly_is_cut_off_with_408(server: Server) -> None:
    head = _request(body=b" " * 1000)[: -1000]
    with _connect(server) as sock:
        sock.sendall(head)
        started = time.monotonic()
        raw = _trickle(sock, iter(lambda: b" ", None), every=0.25,
                       within=BODY_GRACE_SECONDS + 10)
        seconds = time.monotonic() - started
    _refused(raw, 408, "the body did not arrive in time")
    assert BODY_GRACE_SECONDS - 0.5 < seconds < BODY_GRACE_SECONDS + 2, seconds
    _still_answers(server)


def test_a_body_that_arrives_within_its_time_is_answered(server: Server) -> None:
    with _connect(server) as sock:
        sock.sendall(_request(extra=b"Connection: close\r\n")[: -len(BODY)])
        for start in range(0, len(BODY), 6):
            time.sleep(0.5)
            sock.sendall(BODY[start : start + 6])
        [(status, _, body)] = _responses(_read(sock))
    assert (status, json.loads(body)["predictions"]) == (200, [5.0])


def test_a_body_the_app_does_not_read_is_dropped_only_up_to_twice_the_limit(
    server: Server,
) -> None:
    """Answered 404 at once, the rest of its body is read and dropped, not for ever."""
    with _connect(server) as sock:
        sock.sendall(b"POST /v1/models/cube:predict HTTP/1.1\r\nHost: localhost\r\n"
                     b"Content-Length: %d\r\n\r\n" % (4 * MAX_BODY_BYTES))
        sent = 0
        with pytest.raises(OSError):
            while sent < 4 * MAX_BODY_BYTES:
                sock.sendall(b" " * 65536)
                sent += 65536
    assert 2 * MAX_BODY_BYTES < sent < 3 * MAX_BODY_BYTES, sent
    _still_answers(server)


def test_connections_past_the_limit_get_a_503(server: Server) -> None:
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = MAX_CONNECTIONS + 200
    if soft < wanted:
        if hard != resource.RLIM_INFINITY and hard < wanted:
            pytest.skip(f"{MAX_CONNECTIONS} connections need more open files than {hard}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    sockets = [_connect(server) for _ in range(MAX_CONNECTIONS + 1)]
    try:
        _refused(_read(sockets[-1], 10), 503, f"more than {MAX_CONNECTIONS} connections")
    finally:
        for sock in sockets:
            sock.close()
    _still_answers(server)


# --- memory ----------------------------------------------------------------------------------


def _rss_kib(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(x for x in status.splitlines() if x.startswith("VmRSS")).split()[1])


def test_three_clients_sending_huge_heads_leave_the_server_small(server: Server) -> None:
    """The red team's case: 256 MiB of headers on each of three connections (105 -> 870 MiB
    before the head was bounded). Each is refused after 32 KiB and reset soon after."""
    pid = server.process.pid
    before = _rss_kib(pid)
    sent = [0, 0, 0]
    outcomes: list[str] = ["", "", ""]
    block = b"a" * (1 << 20)

    def flood(index: int) -> None:
        with _connect(server) as sock:
            try:
                sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Big: ")
                while sent[index] < 256 << 20:
                    sock.sendall(block)
                    sent[index] += len(block)
                outcomes[index] = "sent everything"
            except OSError as e:
                outcomes[index] = type(e).__name__
            outcomes[index] += " " + _read(sock, 5)[:40].decode("latin-1")

    threads = [threading.Thread(target=flood, args=(i,)) for i in range(3)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    peak = before
    while any(thread.is_alive() for thread in threads) and time.monotonic() - started < 60:
        peak = max(peak, _rss_kib(pid))
        time.sleep(0.02)
    for thread in threads:
        thread.join(timeout=30)
    seconds = time.monotonic() - started
    assert peak - before < 32 * 1024, (before, peak, sent, outcomes)
    assert all(s < 64 << 20 for s in sent), (sent, outcomes)  # cut off, not read through
    assert all(o.startswith(("ConnectionResetError", "BrokenPipeError")) or "431" in o
               for o in outcomes), outcomes
    assert seconds < 15, seconds
    _still_answers(server)
    print(f"VmRSS {before} KiB before, {peak} KiB at the peak; sent {sent}; {outcomes}")
