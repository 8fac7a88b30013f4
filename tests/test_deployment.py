"""The container deployment, checked without a Docker engine.

docker-compose.yml is validated against the Compose specification's JSON schema, read for the
properties the deployment relies on (scaling, health-gated start, loopback-only ports, no
secrets), and its service commands are parsed by the real `sweep` CLI. The last test runs those
same commands as local processes, through the image's entry point, against the local PostgreSQL.
The entry point's restart policy and the health check have their own tests
(tests/test_entrypoint.py, tests/test_healthcheck.py), as do constraints.txt and
deploy/kubernetes/ (tests/test_constraints.py, tests/test_kubernetes.py).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from _servers import drop_server_database, make_server_database, require_server
from _serving import free_port
from sqlalchemy.engine import make_url

from storage import normalize_storage_url
from sweep.cli import build_parser
from sweep.problem.operations import BUILTIN_OPERATIONS
from sweep.search.config import config_from_toml, load_toml

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
ENV_EXAMPLE = ROOT / ".env.example"
SERVICES = ("postgres", "worker", "dashboard", "serve")
SWEEP_SERVICES = ("worker", "dashboard", "serve")
# What the Dockerfile may copy into the image: the package build's inputs, the pinned versions,
# and the entry point and health check scripts; nothing else.
BUILD_INPUTS = {
    "pyproject.toml", "README.md", "sweep", "storage", "constraints.txt",
    "compose/entrypoint.py", "compose/healthcheck.py",
}
ENTRYPOINT_SCRIPT = ROOT / "compose" / "entrypoint.py"
IMAGE_SCRIPTS = "/usr/local/lib/sweep-image/"
HEALTHCHECK_COMMAND = ["CMD", "python", IMAGE_SCRIPTS + "healthcheck.py"]

# `${VAR}`, `${VAR:-default}`, `${VAR-default}`, `${VAR:?error}`, `${VAR?error}`, `$VAR`, `$$`.
_INTERPOLATION = re.compile(
    r"\$\$|\$\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}"
    r"|\$(?P<bare>[A-Za-z_][A-Za-z0-9_]*)"
)
_WHOLE_INTERPOLATION = re.compile(r"^\$\{[A-Za-z_][A-Za-z0-9_]*(?::?[-?][^}]*)?\}$")
# scheme://user:password@ with a password that is not a ${...} interpolation.
_URL_WITH_LITERAL_PASSWORD = re.compile(r"[a-z][a-z0-9+.-]*://[^\s:/@]+:(?!\$\{)[^\s@/]+@", re.I)
_SECRET_NAME = re.compile(r"PASSWORD|PASSWD|SECRET|TOKEN|API_?KEY", re.I)


class MissingVariable(Exception):
    """A `${VAR:?message}` variable is unset or empty: compose refuses to start."""


def interpolate(value: str, env: Mapping[str, str]) -> str:
    """Compose's variable interpolation (the subset docker-compose.yml may use)."""

    def substitute(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group("braced") or match.group("bare")
        op, arg = match.group("op"), match.group("arg") or ""
        current = env.get(name)
        unset = current is None or (op is not None and op.startswith(":") and current == "")
        if op in ("?", ":?") and unset:
            raise MissingVariable(f"{name}: {arg}")
        if op in ("-", ":-") and unset:
            return arg
        return current or ""

    return _INTERPOLATION.sub(substitute, value)


def interpolate_tree(node: Any, env: Mapping[str, str]) -> Any:
    if isinstance(node, str):
        return interpolate(node, env)
    if isinstance(node, list):
        return [interpolate_tree(item, env) for item in node]
    if isinstance(node, dict):
        return {key: interpolate_tree(value, env) for key, value in node.items()}
    return node


def load_compose() -> dict[str, Any]:
    document = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    assert isinstance(document, dict)
    return document


def service(name: str, env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """One service, interpolated with `env` when given (as `docker compose config` would)."""
    spec = load_compose()["services"][name]
    assert isinstance(spec, dict)
    return spec if env is None else dict(interpolate_tree(spec, env))


def environment_of(spec: Mapping[str, Any]) -> dict[str, str]:
    """A service's `environment`, in either the mapping or the list form."""
    raw = spec.get("environment", {})
    if isinstance(raw, list):
        return dict(str(item).split("=", 1) for item in raw)
    return {str(key): str(value) for key, value in raw.items()}


@dataclass(frozen=True)
class Mount:
    kind: str
    source: str
    target: str
    read_only: bool


def mounts_of(spec: Mapping[str, Any]) -> list[Mount]:
    """A service's volumes, short (`src:dst[:ro]`) or long syntax."""
    mounts = []
    for entry in spec.get("volumes", []):
        if isinstance(entry, str):
            parts = entry.split(":")
            source, target = parts[0], parts[1]
            kind = "bind" if source.startswith((".", "/", "~")) else "volume"
            mounts.append(Mount(kind, source, target, len(parts) > 2 and "ro" in parts[2]))
        else:
            mounts.append(
                Mount(entry["type"], entry["source"], entry["target"], bool(entry.get("read_only")))
            )
    return mounts


def published_ports(spec: Mapping[str, Any]) -> list[str]:
    """Every published port as HOST_IP:HOST_PORT:CONTAINER_PORT (empty HOST_IP if none)."""
    ports = []
    for entry in spec.get("ports", []):
        if isinstance(entry, dict):
            host_ip = entry.get("host_ip", "")
            ports.append(f"{host_ip}:{entry.get('published', '')}:{entry['target']}")
        else:
            text = str(entry)
            ports.append(text if text.count(":") >= 2 else f":{text}")
    return ports


def parse_duration(text: str) -> float:
    """Compose durations: ``90s``, ``2m``, ``1m30s``, ``1h``."""
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", text)
    assert parts and "".join(n + u for n, u in parts) == text, f"not a duration: {text!r}"
    return sum(float(number) * units[unit] for number, unit in parts)


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with continuation lines joined and comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for line in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        keyword, _, arguments = (pending + stripped).partition(" ")
        instructions.append((keyword.upper(), arguments.strip()))
        pending = ""
    assert not pending, "Dockerfile ends inside a continued line"
    return instructions


def exec_form(arguments: str) -> list[str]:
    value = json.loads(arguments)
    assert isinstance(value, list) and all(isinstance(item, str) for item in value), arguments
    return value


def env_example() -> dict[str, str]:
    values = {}
    for line in ENV_EXAMPLE.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            values[key.strip()] = value.strip()
    return values


def compose_env(**overrides: str) -> dict[str, str]:
    """The variables a user's .env gives compose: the example's, with a password filled in."""
    return {**env_example(), "POSTGRES_PASSWORD": "k8Jr2vQx9", **overrides}


# --- the compose file ------------------------------------------------------------------------


def test_compose_file_validates_against_the_compose_specification() -> None:
    result = subprocess.run(
        [
            sys.executable, "-m", "check_jsonschema",
            "--builtin-schema", "vendor.compose-spec", str(COMPOSE_FILE),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_file_has_the_three_services_and_its_named_volumes() -> None:
    document = load_compose()
    assert "version" not in document, "the Compose specification has no top-level version"
    assert set(SERVICES) <= set(document["services"])
    declared = set(document.get("volumes") or {})
    assert {"pgdata", "artifacts"} <= declared
    for name in SERVICES:
        for mount in mounts_of(service(name)):
            if mount.kind == "volume":
                assert mount.source in declared, f"{name} mounts undeclared volume {mount.source}"


def test_postgres_is_health_checked_and_keeps_its_data_in_a_named_volume() -> None:
    postgres = service("postgres")
    assert str(postgres["image"]).startswith("postgres:16")
    test = postgres["healthcheck"]["test"]
    assert "pg_isready" in (test if isinstance(test, str) else " ".join(test))
    data = [m for m in mounts_of(postgres) if m.target == "/var/lib/postgresql/data"]
    assert data and data[0].kind == "volume" and data[0].source == "pgdata"


def test_workers_scale_and_start_only_once_postgres_is_healthy() -> None:
    worker = service("worker")
    assert "container_name" not in worker, "a fixed container name prevents --scale worker=N"
    assert not worker.get("ports"), "a published host port prevents --scale worker=N"
    assert worker["depends_on"]["postgres"]["condition"] == "service_healthy"
    # Docker's policies cannot tell exit 2 (a configuration error: final) from a crash; the
    # image's entry point restarts crashes itself (tests/test_entrypoint.py).
    assert worker["restart"] == "no", "on-failure restarts a worker that exits 2 forever"
    assert "entrypoint" not in worker, "the image's entry point runs the worker"
    assert worker.get("stop_signal", "SIGTERM") == "SIGTERM"
    # A worker fails its current trial on SIGTERM; compose must not SIGKILL it first.
    assert parse_duration(worker["stop_grace_period"]) >= 60
    assert service("dashboard")["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert service("serve")["depends_on"]["postgres"]["condition"] == "service_healthy"


@pytest.mark.parametrize("name", SERVICES)
def test_published_ports_are_bound_to_loopback_only(name: str) -> None:
    for port in published_ports(service(name, compose_env())):
        assert port.startswith("127.0.0.1:"), f"{name} publishes {port} beyond this host"


def test_dashboard_is_published_on_loopback() -> None:
    ports = published_ports(service("dashboard", compose_env()))
    assert ports and all(port.startswith("127.0.0.1:") for port in ports)


def test_sweep_services_run_the_image_built_here() -> None:
    for name in SWEEP_SERVICES:
        spec = service(name)
        assert spec["build"]["context"] == "."
        assert spec["build"].get("dockerfile", "Dockerfile") == DOCKERFILE.name
        # Never pulled: a registry image with the same name would run instead of this code.
        assert spec["pull_policy"] == "build"


# --- secrets ---------------------------------------------------------------------------------


@pytest.mark.parametrize("path", [COMPOSE_FILE, DOCKERFILE], ids=lambda p: p.name)
def test_no_url_carries_a_literal_password(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    assert not _URL_WITH_LITERAL_PASSWORD.findall(text)


@pytest.mark.parametrize("name", SERVICES)
def test_secret_settings_are_interpolated_never_literal(name: str) -> None:
    for key, value in environment_of(service(name)).items():
        if _SECRET_NAME.search(key):
            assert _WHOLE_INTERPOLATION.match(value), f"{name}.{key} holds a literal secret"


def test_the_password_is_required_not_defaulted() -> None:
    """Without POSTGRES_PASSWORD compose refuses to start rather than use a known password."""
    env = {key: value for key, value in compose_env().items() if key != "POSTGRES_PASSWORD"}
    for name in SERVICES:
        with pytest.raises(MissingVariable, match="POSTGRES_PASSWORD"):
            service(name, env)
        with pytest.raises(MissingVariable, match="POSTGRES_PASSWORD"):
            service(name, {**env, "POSTGRES_PASSWORD": ""})


def test_the_image_holds_no_credentials() -> None:
    for keyword, arguments in dockerfile_instructions():
        if keyword in ("ENV", "ARG"):
            for assignment in shlex.split(arguments):
                key = assignment.partition("=")[0]
                assert not _SECRET_NAME.search(key), f"{keyword} {key} puts a secret in the image"
                assert key != "SWEEP_STORAGE", "the storage URL comes from the environment"


# --- the storage URL the services get ----------------------------------------------------------


@pytest.mark.parametrize(
    "overrides",
    [{}, {"POSTGRES_USER": "alice", "POSTGRES_DB": "sweeps2", "POSTGRES_PASSWORD": "Zq81xPmm"}],
    ids=["example-env", "custom-env"],
)
def test_sweep_services_reach_the_postgres_service(overrides: dict[str, str]) -> None:
    env = compose_env(**overrides)
    postgres = environment_of(service("postgres", env))
    for name in SWEEP_SERVICES:
        url = environment_of(service(name, env))["SWEEP_STORAGE"]
        parsed = make_url(normalize_storage_url(url))
        assert parsed.drivername == "postgresql+psycopg"
        assert (parsed.host, parsed.port) == ("postgres", 5432)
        assert parsed.username == postgres["POSTGRES_USER"]
        assert parsed.password == postgres["POSTGRES_PASSWORD"] == env["POSTGRES_PASSWORD"]
        assert parsed.database == postgres["POSTGRES_DB"]


def test_worker_settings_come_from_the_environment() -> None:
    worker = environment_of(service("worker", compose_env(SWEEP_CAMPAIGN="night-run")))
    assert worker["SWEEP_CAMPAIGN"] == "night-run"
    assert environment_of(service("worker", {"POSTGRES_PASSWORD": "x1"}))["SWEEP_CAMPAIGN"] == (
        "arith"
    )
    for name in ("worker", "dashboard"):  # the services that write or show artifacts
        spec = service(name, compose_env())
        artifacts = environment_of(spec)["SWEEP_ARTIFACTS"]
        assert any(m.target == artifacts and m.source == "artifacts" for m in mounts_of(spec))


def test_env_example_names_every_variable_compose_requires() -> None:
    required = set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*):?\?", COMPOSE_FILE.read_text()))
    assert required and required <= set(env_example())
    # The example ships no usable password: copying it unedited fails loudly.
    assert env_example()["POSTGRES_PASSWORD"] == ""
    gitignored = (ROOT / ".gitignore").read_text(encoding="utf-8").splitlines()
    assert ".env" in gitignored


# --- the image --------------------------------------------------------------------------------


def test_dockerfile_builds_a_non_root_sweep_image() -> None:
    instructions = dockerfile_instructions()
    keywords = [keyword for keyword, _ in instructions]
    assert instructions[0] == ("FROM", "python:3.11-slim")
    users = [arguments for keyword, arguments in instructions if keyword == "USER"]
    assert users, "the image must not run as root"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0"), f"the image runs as {users[-1]}"
    # The USER switch comes after the install (root) and before the entry point.
    assert keywords.index("ENTRYPOINT") > len(keywords) - 1 - keywords[::-1].index("USER")
    last = {keyword: arguments for keyword, arguments in instructions}
    assert exec_form(last["ENTRYPOINT"]) == ["python", IMAGE_SCRIPTS + "entrypoint.py"]
    assert exec_form(last["CMD"]) == ["worker"]
    copies = [a.split() for k, a in instructions if k == "COPY"]
    assert any(words[-1] == IMAGE_SCRIPTS and "compose/entrypoint.py" in words
               and "compose/healthcheck.py" in words for words in copies)
    env: dict[str, str] = {}
    for keyword, arguments in instructions:
        if keyword == "ENV":
            for assignment in shlex.split(arguments):
                key, _, value = assignment.partition("=")
                env[key] = value
    assert env["TF_CPP_MIN_LOG_LEVEL"] == "3"
    assert env["PYTHONUNBUFFERED"] == "1"
    installs = [a for k, a in instructions if k == "RUN" and "pip install" in a]
    # optuna-dashboard and matplotlib are core dependencies: a plain install serves both roles.
    # The serve extra: `sweep serve` answers with onnxruntime, never TensorFlow, in the image;
    # the s3 extra: artifacts in a bucket.
    assert any(a.split()[-1] == '".[serve,s3]"' and "--no-cache-dir" in a for a in installs)
    # Pinned: tests/test_constraints.py checks constraints.txt itself.
    assert all("-c constraints.txt" in a for a in installs)
    exposed = {p for k, a in instructions if k == "EXPOSE" for p in a.split()}
    assert {"8080", "8500"} <= exposed


def test_dockerfile_has_a_healthcheck_that_needs_no_curl() -> None:
    (healthcheck,) = [a for k, a in dockerfile_instructions() if k == "HEALTHCHECK"]
    options, _, command = healthcheck.partition(" CMD ")
    assert ["CMD", *exec_form(command)] == HEALTHCHECK_COMMAND
    durations = dict(option.lstrip("-").split("=") for option in options.split())
    # serve's first load (TensorFlow started once to convert the first models) takes 10-30 s.
    assert parse_duration(durations["start-period"]) >= 60
    assert parse_duration(durations["timeout"]) >= 5


def test_dockerfile_copies_only_the_package_sources() -> None:
    for keyword, arguments in dockerfile_instructions():
        if keyword in ("COPY", "ADD"):
            assert keyword == "COPY", "ADD fetches URLs and unpacks archives: use COPY"
            words = [w for w in shlex.split(arguments) if not w.startswith("--")]
            for source in words[:-1]:
                name = source.rstrip("/")
                assert name in BUILD_INPUTS, f"COPY {source} is not a build input"
                assert (ROOT / name).exists(), f"COPY {source}: no such path in the repository"


def test_dockerignore_keeps_secrets_and_local_state_out_of_the_build_context() -> None:
    patterns = {
        line.strip()
        for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    }
    for needed in (".git", ".env", ".venv", "venv", "*.db", "artifacts", ".pytest_cache"):
        assert needed in patterns, f".dockerignore lacks {needed}"


# --- the commands the services run ------------------------------------------------------------


def parsed_command(name: str) -> argparse.Namespace:
    command = service(name)["command"]
    assert isinstance(command, list), "exec form: no shell between compose and sweep"
    namespace = build_parser().parse_args(command)
    assert namespace.command == name
    return namespace


def test_worker_command_parses_and_its_config_file_is_mounted() -> None:
    args = parsed_command("worker")
    mounts = {m.target: m for m in mounts_of(service("worker"))}
    assert args.config in mounts, f"--config {args.config} is not mounted into the worker"
    mount = mounts[args.config]
    assert mount.kind == "bind" and mount.read_only
    assert (ROOT / mount.source).is_file()


def test_dashboard_command_parses_and_serves_the_published_port() -> None:
    args = parsed_command("dashboard")
    assert args.host == "0.0.0.0", "inside the container it must listen beyond its loopback"
    assert args.allow_remote and not args.writable, "beyond loopback it must be read-only"
    container_ports = {p.rsplit(":", 1)[1] for p in published_ports(service("dashboard"))}
    assert str(args.port) in container_ports
    mounts = {m.target for m in mounts_of(service("dashboard"))}
    assert args.artifacts in mounts


def test_serve_command_parses_and_serves_the_published_port() -> None:
    args = parsed_command("serve")
    assert args.host == "0.0.0.0", "inside the container it must listen beyond its loopback"
    assert args.operations == [], "every operation with a model, as they are promoted"
    container_ports = {p.rsplit(":", 1)[1] for p in published_ports(service("serve"))}
    assert str(args.port) in container_ports
    # The image's check: ready once a model is loaded (tests/test_healthcheck.py).
    assert service("serve")["healthcheck"]["test"] == HEALTHCHECK_COMMAND
    assert parse_duration(service("serve")["healthcheck"]["start_period"]) >= 60
    assert service("dashboard")["healthcheck"]["test"] == HEALTHCHECK_COMMAND


def test_mounted_campaign_file_loads_and_validates() -> None:
    (mount,) = [m for m in mounts_of(service("worker")) if m.source.endswith(".toml")]
    raw = load_toml(ROOT / mount.source)
    # The name comes from SWEEP_CAMPAIGN; a name in the file could contradict it.
    assert "name" not in raw.get("campaign", {})
    config = config_from_toml(raw)
    config.validate()
    assert {op.name for op in config.resolved_operations()} == set(BUILTIN_OPERATIONS)
    assert config.trials is not None and config.trials >= 20


# --- the same commands as real processes --------------------------------------------------------

SMALL_CAMPAIGN = """
[campaign]
operations = ["add"]
trials = 3
timeout = 240
stop_when_exact = false
[data]
examples = 600
test_examples = 200
extrapolation_examples = 200
[space]
epochs = 2
layers = { low = 0, high = 1 }
"""


@pytest.fixture
def postgresql_url() -> Iterator[str]:
    require_server("postgresql")
    url = make_server_database("postgresql")
    try:
        yield url
    finally:
        drop_server_database("postgresql", url)


def _entrypoint() -> list[str]:
    """The image's ENTRYPOINT, compose/entrypoint.py, with this environment's `sweep`."""
    return [sys.executable, str(ENTRYPOINT_SCRIPT)]


def _as_local_process(
    name: str, storage_url: str, paths: Mapping[str, Path]
) -> tuple[list[str], dict[str, str]]:
    """A service's command and environment, with container paths mapped to host paths."""
    spec = service(name, compose_env(SWEEP_CAMPAIGN="compose-check"))
    command = [str(paths.get(word, word)) for word in spec["command"]]
    env = {**os.environ, **environment_of(spec), "SWEEP_STORAGE": storage_url}
    env = {key: str(paths.get(value, value)) for key, value in env.items()}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return [*_entrypoint(), *command], env


@pytest.mark.server
@pytest.mark.slow
@pytest.mark.timeout(600)
def test_service_commands_run_against_postgresql(postgresql_url: str, tmp_path: Path) -> None:
    """Two `worker` services (scale=2) finish one campaign; `dashboard` then serves it."""
    config = tmp_path / "sweep.toml"
    config.write_text(SMALL_CAMPAIGN, encoding="utf-8")
    artifacts = tmp_path / "artifacts"
    artifacts.mkdir()
    paths = {"/etc/sweep/sweep.toml": config, "/artifacts": artifacts}

    command, env = _as_local_process("worker", postgresql_url, paths)
    env["SWEEP_WORKERS"] = "2"
    workers = [
        subprocess.Popen(command, env=env, cwd=tmp_path, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    try:
        for worker in workers:
            _, stderr = worker.communicate(timeout=420)
            assert worker.returncode == 0, stderr
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
                worker.wait()

    import optuna

    study = optuna.load_study(study_name="compose-check.add", storage=postgresql_url)
    counted = [
        t for t in study.trials
        if t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    ]
    assert len(counted) == 3
    assert not [t for t in study.trials if t.state == optuna.trial.TrialState.RUNNING]

    port = free_port()
    command, env = _as_local_process("dashboard", postgresql_url, paths)
    # Same command, but listening on this machine's loopback and a free port, not 0.0.0.0:8080.
    command = [{"0.0.0.0": "127.0.0.1", "8080": str(port)}.get(w, w) for w in command]
    dashboard = subprocess.Popen(command, env=env, cwd=tmp_path, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True)
    try:
        names = _poll_study_names(f"http://127.0.0.1:{port}/api/studies", dashboard)
        assert "compose-check.add" in names
        dashboard.send_signal(signal.SIGTERM)  # what `docker compose stop` sends
        dashboard.wait(timeout=30)
    finally:
        if dashboard.poll() is None:
            dashboard.kill()
        dashboard.communicate()

    # `serve` answers with the model the workers promoted, in TF Serving's REST shape.
    port = free_port()
    command, env = _as_local_process("serve", postgresql_url, paths)
    command = [{"0.0.0.0": "127.0.0.1", "8500": str(port)}.get(w, w) for w in command]
    serve = subprocess.Popen(command, env=env, cwd=tmp_path, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    try:
        _poll_ok(f"http://127.0.0.1:{port}/healthz", serve)
        # The image's health check finds it (the entry point exec'd `sweep serve`) and calls it
        # ready: the workers promoted a model.
        health = subprocess.run(
            [sys.executable, str(ROOT / "compose" / "healthcheck.py"), "--pid", str(serve.pid)],
            capture_output=True, text=True, timeout=60,
        )
        assert health.returncode == 0 and "serving add v" in health.stdout, health.stdout
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/v1/models/add:predict",
            data=b'{"instances": [[2, 3]]}', method="POST",
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            body = json.load(response)
            assert response.headers["X-Model-Version"] == str(body["model_version"])
        assert len(body["predictions"]) == 1
        serve.send_signal(signal.SIGTERM)
        assert serve.wait(timeout=30) == 0
    finally:
        if serve.poll() is None:
            serve.kill()
        serve.communicate()


def _poll_ok(url: str, process: subprocess.Popen[str], seconds: float = 300) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            _, stderr = process.communicate()
            pytest.fail(f"serve exited with {process.returncode}:\n{stderr}")
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.5)
    pytest.fail(f"serve did not answer {url} within {seconds} s")


def _poll_study_names(url: str, process: subprocess.Popen[str], seconds: float = 120) -> set[str]:
    """The study names from the dashboard's API (the compose healthcheck's URL)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            _, stderr = process.communicate()
            pytest.fail(f"dashboard exited with {process.returncode}:\n{stderr}")
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                summaries = json.load(response)["study_summaries"]
            return {summary["study_name"] for summary in summaries}
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.5)
    pytest.fail(f"dashboard did not answer {url} within {seconds} s")
