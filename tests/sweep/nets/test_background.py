"""The worker's trainer: TensorFlow imported ahead in a thread, or only when first used."""

from __future__ import annotations

import json
import subprocess
import sys

_SCRIPT = """
import json, sys
from sweep.nets.background import BackgroundTrainer
lazy = BackgroundTrainer(1, start=False)
before = "tensorflow" in sys.modules
ahead = BackgroundTrainer(1, start=True)
ahead.wait()
after = "tensorflow" in sys.modules
print(json.dumps({"before": before, "after": after, "versions": lazy.versions(),
                  "same": type(ahead.ready()).__name__}))
"""


def test_tensorflow_loads_only_when_started_or_used() -> None:
    done = subprocess.run(
        [sys.executable, "-c", _SCRIPT], capture_output=True, text=True, timeout=300, check=True
    )
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["before"] is False  # an unstarted trainer imports nothing
    assert result["after"] is True
    assert set(result["versions"]) == {"keras", "tensorflow"}
    assert result["same"] == "KerasTrainer"
