"""constraints.txt: the image installs every package at a pinned version, the tested one."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version
from test_deployment import dockerfile_instructions

ROOT = Path(__file__).resolve().parent.parent
CONSTRAINTS = ROOT / "constraints.txt"
REFRESH = ROOT / "compose" / "refresh_constraints.py"
REFRESH_COMMAND = ".venv/bin/python compose/refresh_constraints.py"
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;#]+)$")


def pins() -> dict[str, Version]:
    pinned: dict[str, Version] = {}
    for line in CONSTRAINTS.read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        match = _PIN.match(line)
        assert match, f"not an exact pin: {line!r}"
        name = canonicalize_name(match.group(1))
        assert name not in pinned, f"{name} pinned twice"
        pinned[name] = Version(match.group(2))
    return pinned


def image_extras() -> list[str]:
    """The extras of the Dockerfile's `pip install ... ".[EXTRA,...]"`."""
    installs = [a for k, a in dockerfile_instructions() if k == "RUN" and "pip install" in a]
    assert len(installs) == 1, installs
    match = re.search(r'"\.\[([^\]]*)\]"', installs[0])
    assert match, installs[0]
    return [extra.strip() for extra in match.group(1).split(",")]


def test_the_dockerfile_installs_with_the_constraints() -> None:
    instructions = dockerfile_instructions()
    (install_index,) = [
        i for i, (k, a) in enumerate(instructions) if k == "RUN" and "pip install" in a
    ]
    assert "-c constraints.txt" in instructions[install_index][1]
    copied_before = [
        a for k, a in instructions[:install_index] if k == "COPY" and "constraints.txt" in a.split()
    ]
    assert copied_before, "constraints.txt must be copied before the install"


def test_every_requirement_of_the_image_is_pinned_within_its_range() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    requirements = list(project["dependencies"])
    for extra in image_extras():
        requirements += project["optional-dependencies"][extra]
    pinned = pins()
    for text in requirements:
        requirement = Requirement(text)
        if requirement.marker is not None and not requirement.marker.evaluate():
            continue
        name = canonicalize_name(requirement.name)
        assert name in pinned, f"{requirement.name} (pyproject.toml) is not in constraints.txt"
        assert requirement.specifier.contains(pinned[name], prereleases=True), (
            f"constraints.txt pins {name}=={pinned[name]}, outside {requirement}"
        )
    assert canonicalize_name(project["name"]) not in pinned, "the project itself is not pinned"


def test_the_constraints_are_this_venvs_versions() -> None:
    """Fresh: exactly the image's packages, at the versions installed here (the tested ones).

    Only meaningful in a venv installed from the pins (`pip install -c constraints.txt -e
    ".[test]"`): a venv installed without them has whatever PyPI published since, and then
    this says so instead of failing on PyPI's news.
    """
    differ = {}
    for name, version in pins().items():
        try:
            installed = Version(metadata.version(name))
        except metadata.PackageNotFoundError:
            installed = None
        if installed != version:
            differ[name] = (str(version), str(installed))
    if differ:
        shown = ", ".join(f"{n} {p} (installed: {i})" for n, (p, i) in sorted(differ.items())[:5])
        pytest.skip(
            f"this venv was not installed with -c constraints.txt ({len(differ)} differ: "
            f"{shown}); install with `pip install -c constraints.txt -e '.[test]'` to check "
            "that constraints.txt is complete"
        )
    result = subprocess.run([sys.executable, str(REFRESH), "--check"], capture_output=True,
                            text=True, timeout=120, cwd=ROOT)
    assert result.returncode == 0, (
        f"constraints.txt is stale; run `{REFRESH_COMMAND}`\n{result.stdout}{result.stderr}"
    )


def test_the_refresh_command_is_documented_and_works(tmp_path: Path) -> None:
    for document in (ROOT / "docs" / "deployment.md", CONSTRAINTS):
        assert REFRESH_COMMAND in document.read_text(encoding="utf-8"), document
    written = tmp_path / "constraints.txt"
    subprocess.run([sys.executable, str(REFRESH), "--output", str(written)], check=True,
                   capture_output=True, timeout=120, cwd=ROOT)
    text = written.read_text(encoding="utf-8")
    assert text.startswith("# The image's packages") and REFRESH_COMMAND in text
    lines = [line for line in text.splitlines() if line and not line.startswith("#")]
    assert all(_PIN.match(line) for line in lines)
    names = {canonicalize_name(_PIN.match(line).group(1)) for line in lines}  # type: ignore[union-attr]
    assert {"tensorflow", "optuna", "onnxruntime", "uvicorn", "numpy"} <= names
    assert "neural-arithmetic-sweep" not in names
    check = [sys.executable, str(REFRESH), "--check", "--output", str(written)]
    assert subprocess.run(check, capture_output=True, timeout=120, cwd=ROOT).returncode == 0
    written.write_text(text.replace("numpy==", "numpy==0.0.0+"))
    stale = subprocess.run(check, capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert stale.returncode == 1 and "out of date" in stale.stderr
