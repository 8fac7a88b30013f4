"""Recognising Ctrl-C (or SIGTERM) on its way up, even when Python wrapped it."""

from __future__ import annotations

__all__ = ["is_interruption"]


def is_interruption(error: BaseException) -> bool:
    """A KeyboardInterrupt, also one Python wrapped on its way up.

    Ctrl-C inside a class body being created surfaces as "RuntimeError: Error calling
    __set_name__" (seen once in 140 Ctrl-Cs at 0.6-2 s, during an import), with the
    interrupt as its cause.
    """
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        if isinstance(current, KeyboardInterrupt):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False
