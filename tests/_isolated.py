"""Virtual environments without this project, to prove an exported model needs none of it.

``tf``: only tensorflow (the version installed here); ``ort``: only onnxruntime and numpy. Each
is created once under the system temp folder (keyed by the versions, under a file lock, so
parallel sessions share it) and reused: creating them takes ~1 min through pip's mirror.
A script runs there with ``python -I`` (no user site, no PYTHONPATH, no current folder on the
path) and must not be able to import `sweep`; outside CI a venv that cannot be made skips the
test, in CI it fails it.
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib.metadata
import os
import subprocess
import sys
import tempfile
import venv
from pathlib import Path

import pytest

KINDS: dict[str, tuple[str, ...]] = {
    "tf": ("tensorflow",),
    "ort": ("onnxruntime", "numpy"),
}

# Run first in every isolated script: proves the file runs without the project (and, for a
# SavedModel, without Keras objects).
GUARD = """
import importlib.util, sys
for _name in ("sweep", "storage", "optuna"):
    if importlib.util.find_spec(_name) is not None:
        raise SystemExit(f"{_name} is importable in the isolated venv")
"""


def _requirements(kind: str) -> list[str]:
    return [f"{name}=={importlib.metadata.version(name)}" for name in KINDS[kind]]


def isolated_python(kind: str) -> Path:
    """The Python of the `kind` venv, created on first use."""
    requirements = _requirements(kind)
    key = hashlib.sha256(" ".join(requirements).encode()).hexdigest()[:12]
    root = Path(tempfile.gettempdir()) / "sweep-test-venvs"
    root.mkdir(exist_ok=True)
    folder = root / f"{kind}-{key}"
    python = folder / "bin" / "python"
    done = folder / ".complete"
    with open(root / f"{kind}-{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if done.is_file():
            return python
        try:
            venv.create(folder, with_pip=True, clear=True)
            subprocess.run(
                [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                 *requirements],
                check=True, capture_output=True, text=True, timeout=900,
            )
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as e:
            detail = getattr(e, "stderr", "") or str(e)
            message = f"cannot create the isolated {kind} venv ({requirements}): {detail[-500:]}"
            if "CI" in os.environ:
                pytest.fail(message, pytrace=False)
            pytest.skip(message)
        done.write_text(" ".join(requirements))
    return python


def run_isolated(kind: str, script: str, *args: str, timeout: float = 300) -> str:
    """Run `script` in the `kind` venv with ``python -I`` from an empty folder; its stdout."""
    python = isolated_python(kind)
    with tempfile.TemporaryDirectory(prefix="sweep-isolated-") as cwd:
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": cwd,
            "TF_CPP_MIN_LOG_LEVEL": "3",
            "CUDA_VISIBLE_DEVICES": "",
            "TF_ENABLE_ONEDNN_OPTS": "0",
        }
        done = subprocess.run(
            [str(python), "-I", "-c", GUARD + script, *args],
            cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout,
        )
    assert done.returncode == 0, f"isolated {kind} script failed:\n{done.stderr[-3000:]}"
    return done.stdout


if __name__ == "__main__":  # pragma: no cover - `python tests/_isolated.py` warms the cache
    for name in sys.argv[1:] or list(KINDS):
        isolated_python(name)
