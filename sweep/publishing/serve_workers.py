"""Where `sweep serve` does a request's work: off the event loop, so one large request does
not hold up the small ones.

A small request is read, predicted and written on a thread pool (onnxruntime and NumPy release
the GIL). A large one is mostly Python and orjson holding the GIL (65 ms to parse 200,000
pairs here, 230 ms to check them, more to write the answer), which a thread cannot hide from the
event loop: a body past `PROCESS_BODY_BYTES` is answered whole in a worker process, which opens
its own onnxruntime session on the served model's bytes (cached by version) and hands back the
response's bytes. A model without ONNX bytes (the TensorFlow backend) is answered on the
threads. With ``threads=0`` everything runs on the event loop (the behaviour before 2026-12-07,
kept to measure against: BENCHMARKS.md section 7).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import functools
import multiprocessing
import os
from collections.abc import Callable
from concurrent.futures.process import BrokenProcessPool
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt

from sweep.publishing.model_backends import ServedOnnx
from sweep.publishing.model_store import Served
from sweep.publishing.serve_requests import RequestError

__all__ = ["DEFAULT_THREADS", "PROCESS_BODY_BYTES", "Workers"]

T = TypeVar("T")
R = TypeVar("R")

DEFAULT_THREADS = 2
# 64 KiB of JSON is ~5,000 pairs, read in about 2 ms: below it a process hop costs more than
# it saves; above it the parse would hold the GIL for longer than a small request takes.
PROCESS_BODY_BYTES = 64 * 1024
WORKER_NICENESS = 10


def _yield_the_cpu() -> None:
    """A worker process runs niced: on cores shared with the event loop, the small requests
    get the CPU first and the large one takes what is left."""
    with contextlib.suppress(OSError):
        os.nice(WORKER_NICENESS)


def _ready() -> bool:
    """A worker process's first task: imports done, so the first large request is not slow."""
    import sweep.publishing.serve_kserve
    import sweep.publishing.serve_tfserving  # noqa: F401

    return True


class _InAnotherProcess:
    """The predictor's place in a `Served` sent to a worker process, which opens its own."""

    def predict(self, x: npt.ArrayLike) -> npt.NDArray[np.float64]:
        raise RuntimeError("this model's session lives in the serving process")


# A worker process's sessions, by (operation, version, sha256): a few models, kept.
_sessions: dict[tuple[str, int, str], ServedOnnx] = {}
_MAX_SESSIONS = 32


def _answer_here(
    parse: Callable[[bytes, Any], T], answer: Callable[[Served, T], R], body: bytes,
    served: Served, onnx: bytes,
) -> R:
    """In a worker process: the request parsed, checked, predicted and written."""
    key = (served.entry.operation, served.entry.version, served.entry.sha256)
    session = _sessions.get(key)
    if session is None:
        if len(_sessions) >= _MAX_SESSIONS:
            _sessions.clear()
        session = _sessions[key] = ServedOnnx(onnx)
    here = dataclasses.replace(served, predictor=session)
    return answer(here, parse(body, here.operation))


class Workers:
    """A thread pool for predictions and a process pool for parsing large bodies; both made by
    `start` and ended by `stop` (the app's lifespan)."""

    def __init__(self, threads: int = DEFAULT_THREADS) -> None:
        if threads < 0:
            raise ValueError("threads must be 0 or more")
        self.threads = threads
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._processes: concurrent.futures.ProcessPoolExecutor | None = None

    def start(self) -> None:
        if self.threads == 0:
            return
        self._pool = concurrent.futures.ThreadPoolExecutor(
            self.threads, thread_name_prefix="sweep-serve-predict"
        )
        self._processes = self._new_processes()

    def _new_processes(self) -> concurrent.futures.ProcessPoolExecutor:
        # spawn, not fork: this process has threads (the registry poll, the pool) and a loop.
        processes = concurrent.futures.ProcessPoolExecutor(
            max(1, self.threads // 2), mp_context=multiprocessing.get_context("spawn"),
            initializer=_yield_the_cpu,
        )
        processes.submit(_ready)
        return processes

    def stop(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
        if self._processes is not None:
            self._processes.shutdown(wait=False, cancel_futures=True)
        self._pool = self._processes = None

    async def run(self, work: Callable[..., T], *args: Any) -> T:
        """`work(*args)` on the thread pool (or inline, with no threads)."""
        if self._pool is None:
            return work(*args)
        return await asyncio.get_running_loop().run_in_executor(
            self._pool, functools.partial(work, *args)
        )

    async def answer(
        self, parse: Callable[[bytes, Any], T], answer: Callable[[Served, T], R], body: bytes,
        served: Served,
    ) -> R:
        """``answer(served, parse(body, served.operation))``: in a worker process for a large
        body and an ONNX model, else on a thread. The response and a `RequestError` cross back
        whole (both pickle)."""
        onnx = getattr(served.predictor, "onnx", None)
        if self._processes is None or len(body) <= PROCESS_BODY_BYTES or onnx is None:
            return await self.run(lambda: answer(served, parse(body, served.operation)))
        processes = self._processes
        sent = dataclasses.replace(served, predictor=_InAnotherProcess())
        try:
            return await asyncio.wrap_future(
                processes.submit(_answer_here, parse, answer, body, sent, onnx)
            )
        except BrokenProcessPool:
            # The worker died (killed for memory, say): a new pool for the next request.
            if self._processes is processes:
                self._processes = self._new_processes()
            raise RequestError(503, "the request's parser stopped; try again shortly",
                               {"Retry-After": "2"}) from None
