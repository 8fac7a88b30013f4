"""Is the machinery's cost per trial flat in the study's size? One study per size, measured
in turns in one process, so a shared machine's load weighs on every size alike.

    python -m benchmarks.flat_cost --sizes 100,1000,10000 --rounds 5

Each study (a fresh SQLite file, and a fresh PostgreSQL database when the server answers) is
filled to its size as section 3 fills it (finished trials drawn from the same space), then the
sizes take turns, round after round and in alternating order, each turn timing section 3's 10
trials through the sweep's machinery (`overhead.Measurement`). A study grows by 10 trials a
turn. Prints a Markdown table: per backend and size, the median ms per trial over every timed
trial, its parts, and the ratio to the smallest size.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from benchmarks._common import DEFAULT_POSTGRES_ADMIN_URL, median, temporary_postgres
from benchmarks.overhead import PARTS, SWEEP, WINDOW, Measurement
from benchmarks.tables import significant, times

__all__ = ["FlatCost", "main", "measure", "render"]


@dataclass(frozen=True)
class FlatCost:
    backend: str
    size: int
    trial_ms: list[float]  # every round's median, in round order
    parts_ms: dict[str, float]  # median over the rounds


def measure(urls: dict[int, str], backend: str, rounds: int) -> list[FlatCost]:
    """`urls`: size -> a fresh database for that size's study."""
    studies = {size: Measurement(url, backend, (size,), SWEEP) for size, url in urls.items()}
    per_round: dict[int, list[float]] = {size: [] for size in studies}
    parts: dict[int, list[dict[str, float]]] = {size: [] for size in studies}
    order = sorted(studies)
    for turn in range(rounds):
        for size in order if turn % 2 == 0 else reversed(order):
            study = studies[size]
            # The first turn fills to size - WINDOW, so the timed trials end at `size`.
            study.window(size + turn * WINDOW)
            per_round[size].append(study.per_size[size + turn * WINDOW])
            parts[size].append(study.parts[size + turn * WINDOW])
    for study in studies.values():
        study.result()  # disposes of its engine
    return [
        FlatCost(
            backend,
            size,
            per_round[size],
            {p: median([r[p] for r in parts[size]]) for p in PARTS},
        )
        for size in order
    ]


def render(costs: list[FlatCost]) -> list[str]:
    lines = [
        "| backend | trials in study | ms/trial (median of rounds) | rounds | against the"
        " smallest | " + " | ".join(PARTS) + " |",
        "|---|---|---|---|---|" + "---|" * len(PARTS),
    ]
    for backend in dict.fromkeys(c.backend for c in costs):
        rows = [c for c in costs if c.backend == backend]
        base = median(rows[0].trial_ms)
        for row in rows:
            ms = median(row.trial_ms)
            rounds = ", ".join(f"{m:.0f}" for m in row.trial_ms)
            parts = " | ".join(significant(row.parts_ms[p], 3) for p in PARTS)
            lines.append(
                f"| {backend} | {row.size} | {ms:.1f} | {rounds} | {times(ms / base)} | {parts} |"
            )
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="the machinery's cost per trial by study size")
    parser.add_argument("--sizes", default="100,1000,10000")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--postgres", default=DEFAULT_POSTGRES_ADMIN_URL, help="'' for none")
    args = parser.parse_args(argv)
    sizes = sorted(int(s) for s in args.sizes.split(","))
    started = time.monotonic()
    print(f"load average before: {os.getloadavg()}", flush=True)
    costs: list[FlatCost] = []
    with tempfile.TemporaryDirectory(prefix="sweep-bench-flat-") as folder:
        urls = {s: f"sqlite:///{Path(folder) / f'flat-{s}.db'}" for s in sizes}
        costs += measure(urls, "SQLite", args.rounds)
    if args.postgres:
        with ExitStack() as stack:
            urls = {s: stack.enter_context(temporary_postgres(args.postgres)) for s in sizes}
            costs += measure(urls, "PostgreSQL", args.rounds)
    minutes = (time.monotonic() - started) / 60
    print(f"load average after: {os.getloadavg()}; {minutes:.1f} min")
    print("\n".join(render(costs)))


if __name__ == "__main__":
    main()
