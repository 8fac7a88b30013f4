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


_ABANDON = """
import os, sys, threading, time
from sweep.nets.background import BackgroundTrainer
trainer = BackgroundTrainer(1, start=True)
time.sleep(0.5)  # inside the import: fd 2 points at /dev/null
os.write(2, b"lost\\n")
trainer.abandon()
os.write(2, b"after abandon\\n")
print("tensorflow imported" if "tensorflow" in sys.modules and not trainer._thread.is_alive()
      else "still importing", flush=True)
os._exit(0)
"""


def test_abandon_gives_stderr_back_while_the_import_still_runs() -> None:
    """Ctrl-C during the import: the process says one line on stderr and leaves, unjoined."""
    done = subprocess.run(
        [sys.executable, "-c", _ABANDON], capture_output=True, text=True, timeout=300, check=True
    )
    assert done.stdout.strip() == "still importing"
    assert done.stderr == "after abandon\n"
