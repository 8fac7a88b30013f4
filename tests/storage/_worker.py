"""A worker process for the concurrency tests (run by the ``start_together`` fixture).

Usage: ``_worker.py schema URL`` or ``_worker.py promote URL WORKER_INDEX ROUNDS``.
"""

from __future__ import annotations

import json
import random
import sys
from typing import Any

from storage import ModelCandidate, ModelRegistry, create_engine, ensure_schema

OPERATIONS = ("add", "mul")


def promote(url: str, worker: int, rounds: int) -> dict[str, Any]:
    """Submit candidates that mostly improve, so that workers collide on every round."""
    rng = random.Random(worker)
    submitted: list[dict[str, Any]] = []
    with ModelRegistry(url) as registry:  # Also races schema creation on a fresh database.
        for round_number in range(rounds):
            operation = OPERATIONS[round_number % len(OPERATIONS)]
            objective = (rounds - round_number) + rng.random()
            trial_number = worker * 1000 + round_number
            entry = registry.promote_if_better(
                ModelCandidate(
                    campaign="race",
                    operation=operation,
                    study_name=f"race-{operation}",
                    trial_number=trial_number,
                    objective_value=objective,
                    metrics={"mae": objective},
                    params={"worker": worker, "round": round_number},
                    model_bytes=f"model {worker} {round_number}".encode() * 100,
                    keras_version="3.6.0",
                    tensorflow_version="2.18.0",
                )
            )
            submitted.append(
                {
                    "operation": operation,
                    "objective": objective,
                    "trial_number": trial_number,
                    "version": None if entry is None else entry.version,
                }
            )
    return {"worker": worker, "submitted": submitted}


def main(argv: list[str]) -> int:
    mode, url = argv[1], argv[2]
    # Import the database driver now (an engine imports it): slow imports must not stagger
    # the start of the race.
    create_engine(url).dispose()
    print("ready", flush=True)
    if sys.stdin.readline().strip() != "go":
        return 2
    if mode == "schema":
        engine = create_engine(url)
        try:
            result: dict[str, Any] = {"version": ensure_schema(engine)}
        finally:
            engine.dispose()
    elif mode == "promote":
        result = promote(url, worker=int(argv[3]), rounds=int(argv[4]))
    else:
        print(f"unknown mode {mode!r}", file=sys.stderr)
        return 2
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
