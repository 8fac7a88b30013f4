"""The bounds on what an HTTP client sends `sweep serve`, enforced under the app.

uvicorn's httptools protocol bounds nothing of a request but what the app reads: httptools
gathers a header field whole before it hands it on, and neither it nor uvicorn limits a head's
size or the time to send a head or a body (the red team's three connections sending 256 MiB of
headers took the server from 105 to 870 MiB; a client sending a byte a second held its
connection for good). `guarded_protocol` is that protocol with those bounds: each refusal is a
4xx with one JSON line, ``{"error": "..."}``, as the app's are. The body's size and the
document itself are the app's to bound (`serve`), with `MAX_BODY_BYTES` from here.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from http import HTTPStatus
from typing import Any

__all__ = [
    "BODY_GRACE_SECONDS",
    "BODY_MIN_BYTES_PER_SECOND",
    "HEAD_SECONDS",
    "MAX_BODY_BYTES",
    "MAX_CONNECTIONS",
    "MAX_HEADER_FIELDS",
    "MAX_HEAD_BYTES",
    "MAX_URL_BYTES",
    "guarded_protocol",
]

# 8 MiB holds ~250,000 pairs of JSON numbers; more is refused (413) before it is read whole.
MAX_BODY_BYTES = 8 * 1024 * 1024
# The request head: our requests need a few hundred bytes. These are the common servers' figures
# (nginx: 8 KiB for a request line, 32 KiB of headers; gunicorn: 100 fields): 414, 431 past them.
MAX_URL_BYTES = 8 * 1024
MAX_HEAD_BYTES = 32 * 1024
MAX_HEADER_FIELDS = 100
# The whole head must arrive within 5 s of the connection (or of a later request's first byte):
# uvicorn's own keep-alive closes an idle connection after 5 s too. Else 408 (or, if not a byte
# came, the connection is closed without a word, as at keep-alive's end).
HEAD_SECONDS = 5.0
# A body gets 5 s, and 1 s more for every 64 KiB received: a client trickling bytes is cut off
# (408) after 5 s, while 8 MiB may take two minutes (512 kbit/s). Bytes the app did not read
# (after an early refusal) are dropped, up to twice the body limit.
BODY_GRACE_SECONDS = 5.0
BODY_MIN_BYTES_PER_SECOND = 64 * 1024
# Each connection holds at most ~32 KiB of head (plus one read); more connections get a 503.
MAX_CONNECTIONS = 1000
# After a refusal the connection is read (and dropped) for 2 s or 1 MiB before it closes, so a
# client still sending reads the answer instead of a reset; a flood gets the reset.
_LINGER_SECONDS = 2.0
_LINGER_BYTES = 1024 * 1024


def _refusal(status: int, message: str, default_headers: list[tuple[bytes, bytes]]) -> bytes:
    """A whole HTTP/1.1 response: one JSON line, and the connection closes after it."""
    import orjson

    body = orjson.dumps({"error": message})
    lines = [f"HTTP/1.1 {status} {HTTPStatus(status).phrase}".encode()]
    lines += [name + b": " + value for name, value in default_headers]
    lines += [b"content-type: application/json", b"content-length: %d" % len(body),
              b"connection: close"]
    if status == 503:
        lines.append(b"retry-after: 2")
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def _head_end(data: bytes) -> int:
    """Where the blank line that ends a request head starts in `data`; -1 if it does not."""
    ends = [i for i in (data.find(b"\r\n\r\n"), data.find(b"\n\n")) if i >= 0]
    return min(ends) if ends else -1


@functools.cache
def guarded_protocol() -> type[asyncio.Protocol]:
    """uvicorn's httptools protocol, with the bounds it lacks on what a client sends.

    It counts the head's bytes before httptools holds them, counts the fields and the URL as
    they are parsed, and times the head and the body. It refuses with a JSON answer of its own:
    414, 431, 408; 413 for a body past twice `MAX_BODY_BYTES` that the app did not read (the
    app refuses one it reads at `MAX_BODY_BYTES`); 503 past `MAX_CONNECTIONS`; 400 where
    httptools cannot parse the request (uvicorn's is plain text). It then reads and drops what
    still comes for a while (`_LINGER_SECONDS`, `_LINGER_BYTES`) before it closes. The h11
    protocol would bound the head's size (a plain-text 400) but not its time, and is slower.

    It overrides the parser callbacks and `data_received` of uvicorn's `HttpToolsProtocol` and
    reads its `cycle`, `pipeline` and `flow`: tests/faults/test_serving_limits.py checks each
    bound against the installed uvicorn.
    """
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    class GuardedHttpToolsProtocol(HttpToolsProtocol):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.phase = "idle"  # idle (between requests), head, body
            self.heard = False  # a byte arrived since the last request ended
            self.began = False  # a request began in the data being parsed
            self.head_bytes = 0
            self.tail = b""  # the head's last 3 bytes: its blank line may straddle two reads
            self.url_bytes = 0
            self.field_bytes = 0
            self.fields = 0
            self.body_bytes = 0
            self.body_started = 0.0
            self.deadline: asyncio.TimerHandle | None = None
            self.pending: tuple[int, str] | None = None  # a refusal found while parsing
            self.refused = False
            self.lingered = 0  # bytes read and dropped since the refusal

        # --- the connection ----------------------------------------------------------------

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            if len(self.connections) > MAX_CONNECTIONS:
                self.refuse(503, f"more than {MAX_CONNECTIONS} connections are open; "
                                 "try again shortly")
                return
            self.arm(HEAD_SECONDS, self.head_late)

        def connection_lost(self, exc: Exception | None) -> None:
            self.disarm()
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            if self.refused:
                self.lingered += len(data)  # read and dropped
                if self.lingered > _LINGER_BYTES:
                    self.transport.close()
                return
            self.heard = True
            if self.phase != "body":
                # Count the head before httptools holds it: it keeps a field until it is whole.
                window = self.tail + data
                end = _head_end(window)
                size = self.head_bytes + (len(window) if end < 0 else end) - len(self.tail)
                if size > MAX_HEAD_BYTES:
                    self.refuse(431, self.too_big())
                    return
            self.began = False
            super().data_received(data)
            if self.refused or self.transport.is_closing():
                return
            if self.pending is not None:
                self.refuse(*self.pending)
            elif self.phase == "head":
                # A head that began in this read counts from the read's start: at most one
                # read (256 KiB) more than it is, and only for a request behind another.
                self.head_bytes = len(data) if self.began else self.head_bytes + len(data)
                self.tail = (self.tail + data)[-3:]
                if self.head_bytes > MAX_HEAD_BYTES:
                    self.refuse(431, self.too_big())
            elif self.phase == "idle" and self.deadline is None and not self.answering():
                self.arm(HEAD_SECONDS, self.head_late)  # stray bytes between requests

        def send_400_response(self, msg: str) -> None:
            # httptools could not parse the request: uvicorn's plain-text 400, made JSON.
            self.refuse(400, "the request is not valid HTTP/1.1")

        # --- httptools' callbacks ----------------------------------------------------------

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self.phase, self.began = "head", True
            self.head_bytes = self.url_bytes = self.field_bytes = self.fields = 0
            self.tail = b""
            if self.deadline is None:
                self.arm(HEAD_SECONDS, self.head_late)

        def on_url(self, url: bytes) -> None:
            self.url_bytes += len(url)
            if self.url_bytes > MAX_URL_BYTES:
                self.pending = self.pending or (
                    414, f"the URL is longer than {MAX_URL_BYTES} bytes"
                )
            if self.pending is None:
                super().on_url(url)

        def on_header(self, name: bytes, value: bytes) -> None:
            self.fields += 1
            self.field_bytes += len(name) + len(value) + 4
            if self.fields > MAX_HEADER_FIELDS:
                self.pending = self.pending or (
                    431, f"more than {MAX_HEADER_FIELDS} header fields"
                )
            elif self.url_bytes + self.field_bytes > MAX_HEAD_BYTES:
                self.pending = self.pending or (431, self.too_big())
            if self.pending is None:
                super().on_header(name, value)

        def on_headers_complete(self) -> None:
            if self.pending is not None:
                return  # refused: the app never sees it
            self.phase, self.body_bytes = "body", 0
            self.body_started = self.loop.time()
            self.arm(BODY_GRACE_SECONDS, self.body_late)
            super().on_headers_complete()

        def on_body(self, body: bytes) -> None:
            if self.pending is not None:
                return
            self.body_bytes += len(body)
            if self.body_bytes > 2 * MAX_BODY_BYTES:
                self.pending = (413, f"the body exceeds the limit of {MAX_BODY_BYTES} bytes")
                return
            super().on_body(body)

        def on_message_complete(self) -> None:
            if self.pending is not None:
                return
            self.phase, self.heard = "idle", False
            self.head_bytes, self.tail = 0, b""
            self.disarm()
            super().on_message_complete()

        # --- the clocks --------------------------------------------------------------------

        def arm(self, seconds: float, then: Callable[[], None]) -> None:
            self.disarm()
            self.deadline = self.loop.call_later(seconds, then)

        def disarm(self) -> None:
            if self.deadline is not None:
                self.deadline.cancel()
                self.deadline = None

        def head_late(self) -> None:
            self.deadline = None
            if self.refused or self.phase == "body":
                return
            if self.flow.read_paused or self.answering():
                # We are not reading, or still answering the last request: not the client's
                # delay. Its time starts again.
                self.arm(HEAD_SECONDS, self.head_late)
            elif self.phase == "idle" and not self.heard:
                self.transport.close()  # idle: closed without a word, as at keep-alive's end
            else:
                self.refuse(408, f"the request head did not arrive within {HEAD_SECONDS:g} s")

        def body_late(self) -> None:
            self.deadline = None
            if self.refused or self.phase != "body":
                return
            now = self.loop.time()
            if self.flow.read_paused:
                # The app has not taken what came (or an earlier request is being answered):
                # the body's clock starts again once we read.
                self.body_started, self.body_bytes = now, 0
                self.arm(BODY_GRACE_SECONDS, self.body_late)
                return
            due = self.body_started + max(
                BODY_GRACE_SECONDS, self.body_bytes / BODY_MIN_BYTES_PER_SECOND
            )
            if due > now:
                self.arm(due - now, self.body_late)
                return
            self.refuse(
                408, f"the body did not arrive in time: {self.body_bytes} bytes in "
                f"{now - self.body_started:.0f} s (a body gets {BODY_GRACE_SECONDS:g} s, and 1 s "
                f"more for every {BODY_MIN_BYTES_PER_SECOND // 1024} KiB that arrives)"
            )

        # --- refusing ----------------------------------------------------------------------

        def too_big(self) -> str:
            return f"the request head (URL and headers) exceeds {MAX_HEAD_BYTES} bytes"

        def answering(self) -> bool:
            return self.cycle is not None and not self.cycle.response_complete

        def refuse(self, status: int, message: str) -> None:
            """Answer `status` once and end the connection, unless an answer is already owed."""
            if self.refused:
                return
            self.refused = True
            self.pending = None
            self.disarm()
            cycle = self.cycle
            if self.pipeline or (
                cycle is not None and cycle.response_started and not cycle.response_complete
            ):
                # An answer to an earlier request is under way: no answer can follow it in order.
                self.transport.close()
                return
            if self.phase == "body" and cycle is not None:
                if not cycle.response_complete:
                    # This request's app waits for the body: it stops waiting, and we answer.
                    cycle.disconnected = True
                    cycle.message_event.set()
                    self.transport.write(
                        _refusal(status, message, self.server_state.default_headers)
                    )
            elif cycle is not None and not cycle.response_complete:
                # The head of a request behind one still being answered: end after that answer.
                cycle.keep_alive = False
                return
            else:
                self.transport.write(_refusal(status, message, self.server_state.default_headers))
            self.flow.resume_reading()
            if self.transport.can_write_eof():
                self.transport.write_eof()
            self.deadline = self.loop.call_later(_LINGER_SECONDS, self.transport.close)

    return GuardedHttpToolsProtocol
