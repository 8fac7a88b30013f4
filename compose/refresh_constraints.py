"""Write constraints.txt: the image's packages pinned at the versions installed in this venv.

    .venv/bin/python compose/refresh_constraints.py           # rewrite constraints.txt
    .venv/bin/python compose/refresh_constraints.py --check   # exit 1 if it is out of date

The image installs `.[serve,s3]` with `pip install -c constraints.txt`, so two builds get the same
packages: the ones this venv has, which are the ones the tests ran against. The file is what
`pip freeze` shows for this venv, narrowed to what the image installs: the project's
dependencies and its `serve` and `s3` extras (read from pyproject.toml) and everything they
require in turn (read from the installed packages' metadata, markers evaluated for this
interpreter: the
venv and the image are both CPython 3.11 on Linux). The test tools, the project itself and
anything else in the venv are left out. A package the image needs but this venv lacks is an
error: `pip install -e ".[serve,s3]"` first.

After changing a dependency in pyproject.toml: install it here, run the tests, then run this.
"""

from __future__ import annotations

import argparse
import difflib
import sys
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = ROOT / "pyproject.toml"
CONSTRAINTS = ROOT / "constraints.txt"
IMAGE_EXTRAS = ("serve", "s3")  # the Dockerfile's `pip install ".[serve,s3]"`

HEADER = """\
# The image's packages at the versions the tests ran against; the Dockerfile installs with
# `pip install -c constraints.txt ".[serve,s3]"`. Generated from the venv, do not edit by hand:
#     .venv/bin/python compose/refresh_constraints.py
# (`--check` tells whether it is up to date; docs/deployment.md, "The image").
"""


def image_requirements(pyproject: Path = PYPROJECT) -> list[Requirement]:
    """The project's own requirements that the image installs: dependencies + IMAGE_EXTRAS."""
    project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
    texts = list(project["dependencies"])
    for extra in IMAGE_EXTRAS:
        texts += project["optional-dependencies"][extra]
    return [Requirement(text) for text in texts]


def _applies(requirement: Requirement, extras: frozenset[str]) -> bool:
    if requirement.marker is None:
        return True
    environment = default_environment()
    return any(
        requirement.marker.evaluate({**environment, "extra": extra})  # type: ignore[dict-item]
        for extra in (extras or {""})
    )


def closure(roots: list[Requirement]) -> dict[str, metadata.Distribution]:
    """Every installed distribution the roots need, by canonical name.

    Raises:
        SystemExit: a needed package is not installed in this environment.
    """
    found: dict[str, metadata.Distribution] = {}
    wanted: dict[str, set[str]] = {}
    queue = [(requirement, frozenset[str]()) for requirement in roots]
    while queue:
        requirement, parent_extras = queue.pop()
        if not _applies(requirement, parent_extras):
            continue
        name = canonicalize_name(requirement.name)
        extras = wanted.setdefault(name, set())
        new_extras = set(requirement.extras) - extras
        if name in found and not new_extras:
            continue
        extras |= set(requirement.extras)
        if name not in found:
            try:
                found[name] = metadata.distribution(requirement.name)
            except metadata.PackageNotFoundError:
                raise SystemExit(
                    f"{requirement.name} (needed by the image) is not installed in "
                    f"{sys.prefix}; run: pip install -e '.[serve,s3]'"
                ) from None
        distribution = found[name]
        version = distribution.version
        if requirement.specifier and not requirement.specifier.contains(version, prereleases=True):
            raise SystemExit(f"installed {requirement.name} {version} does not meet {requirement}")
        for text in distribution.requires or []:
            queue.append((Requirement(text), frozenset(extras)))
    return found


def render(distributions: dict[str, metadata.Distribution]) -> str:
    lines = [f"{name}=={distributions[name].version}" for name in sorted(distributions)]
    return HEADER + "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if constraints.txt is stale")
    parser.add_argument("--output", type=Path, default=CONSTRAINTS)
    args = parser.parse_args(argv)
    project = canonicalize_name(tomllib.loads(PYPROJECT.read_text())["project"]["name"])
    distributions = closure(image_requirements())
    distributions.pop(project, None)
    text = render(distributions)
    if args.check:
        current = args.output.read_text(encoding="utf-8") if args.output.exists() else ""
        if current == text:
            return 0
        sys.stdout.writelines(
            difflib.unified_diff(
                current.splitlines(keepends=True), text.splitlines(keepends=True),
                str(args.output), "from this venv",
            )
        )
        print(
            f"{args.output.name} is out of date; run: .venv/bin/python "
            "compose/refresh_constraints.py",
            file=sys.stderr,
        )
        return 1
    args.output.write_text(text, encoding="utf-8")
    print(f"wrote {args.output} ({len(distributions)} packages)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
