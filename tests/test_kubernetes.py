"""deploy/kubernetes/: validated offline against the Kubernetes schemas, and read for what the
deployment relies on (exit 2 fails the Job, probes on the right ports, secrets from a Secret)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from test_deployment import (
    _SECRET_NAME,
    _URL_WITH_LITERAL_PASSWORD,
    dockerfile_instructions,
    exec_form,
)

from sweep.cli import build_parser
from sweep.problem.operations import BUILTIN_OPERATIONS
from sweep.search.config import config_from_toml

ROOT = Path(__file__).resolve().parent.parent
MANIFESTS = ROOT / "deploy" / "kubernetes"
# The oldest Kubernetes the manifests are meant for (podFailurePolicy is GA from 1.31) and the
# newest the validator ships.
KUBERNETES_VERSIONS = ("1.31.0", None)
IMAGE_SCRIPTS = "/usr/local/lib/sweep-image/"


def manifest_files() -> list[Path]:
    files = sorted(MANIFESTS.glob("*.yaml"))
    assert files, "no manifests"
    return files


def documents() -> list[dict[str, Any]]:
    found = []
    for path in manifest_files():
        found += [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d]
    return found


def resource(kind: str, name: str) -> dict[str, Any]:
    (found,) = [d for d in documents() if d["kind"] == kind and d["metadata"]["name"] == name]
    return found


def pod_spec(kind: str, name: str) -> dict[str, Any]:
    spec: dict[str, Any] = resource(kind, name)["spec"]["template"]["spec"]
    return spec


def container(kind: str, name: str) -> dict[str, Any]:
    (only,) = pod_spec(kind, name)["containers"]
    return dict(only)


def validator() -> list[str]:
    script = Path(sys.executable).with_name("kubernetes-validate")
    if script.is_file():
        return [str(script)]
    found = shutil.which("kubernetes-validate")
    assert found, "kubernetes-validate is not installed: pip install -e '.[test]'"
    return [found]


# --- the schemas ------------------------------------------------------------------------------


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS, ids=lambda v: v or "latest")
def test_every_manifest_validates_strictly_against_the_kubernetes_schemas(
    version: str | None
) -> None:
    command = [*validator(), "--strict", "--no-warn"]
    if version:
        command += ["--kubernetes-version", version]
    result = subprocess.run([*command, *map(str, manifest_files())], capture_output=True,
                            text=True, timeout=300)
    output = result.stdout + result.stderr
    assert result.returncode == 0 and "ERROR" not in output, output
    assert output.count("passed for resource") == len(documents()), output


def test_strict_validation_refuses_a_misspelt_field(tmp_path: Path) -> None:
    """The check above has teeth: an unknown field (here a typo) fails it."""
    broken = tmp_path / "workers.yaml"
    broken.write_text(
        (MANIFESTS / "workers.yaml").read_text().replace("parallelism:", "paralelism:")
    )
    result = subprocess.run([*validator(), "--strict", str(broken)], capture_output=True,
                            text=True, timeout=300)
    assert result.returncode != 0, result.stdout + result.stderr
    assert "paralelism" in result.stdout + result.stderr


# --- the workers ------------------------------------------------------------------------------


def test_workers_are_an_indexed_job_where_exit_2_fails_the_job() -> None:
    job = resource("Job", "sweep-workers")["spec"]
    assert job["completionMode"] == "Indexed"
    assert job["parallelism"] == job["completions"] >= 1
    assert pod_spec("Job", "sweep-workers")["restartPolicy"] == "Never"
    rules = job["podFailurePolicy"]["rules"]
    by_code = {
        code: rule["action"]
        for rule in rules if "onExitCodes" in rule
        for code in rule["onExitCodes"]["values"]
        if rule["onExitCodes"]["operator"] == "In"
        and rule["onExitCodes"]["containerName"] == "worker"
    }
    assert by_code[2] == "FailJob", "a configuration error is final"
    assert by_code[130] == "Ignore", "a stopped worker is not a failure"
    assert any(
        rule["action"] == "Ignore"
        and {"type": "DisruptionTarget", "status": "True"} in rule.get("onPodConditions", [])
        for rule in rules
    )
    # On SIGTERM a worker fails its trial in flight; the pod must not be killed first.
    assert pod_spec("Job", "sweep-workers")["terminationGracePeriodSeconds"] >= 60


def test_worker_command_parses_and_its_campaign_file_comes_from_the_configmap() -> None:
    worker = container("Job", "sweep-workers")
    assert "command" not in worker, "the image's entry point runs the worker"
    args = build_parser().parse_args(worker["args"])
    assert args.command == "worker"
    mounts = {m["mountPath"]: m for m in worker["volumeMounts"]}
    folder, _, filename = args.config.rpartition("/")
    mount = mounts[folder]
    assert mount.get("readOnly") is True
    volumes = {v["name"]: v for v in pod_spec("Job", "sweep-workers")["volumes"]}
    config_map = volumes[mount["name"]]["configMap"]
    assert config_map["name"] == "sweep-campaign"
    assert {"key": "sweep.toml", "path": filename} in config_map["items"]


def test_the_configmaps_campaign_is_compose_s_and_validates() -> None:
    data = resource("ConfigMap", "sweep-campaign")["data"]
    text = data["sweep.toml"]
    assert text == (ROOT / "compose" / "sweep.toml").read_text(encoding="utf-8")
    import tomllib

    raw = tomllib.loads(text)
    assert "name" not in raw.get("campaign", {}), "the name comes from SWEEP_CAMPAIGN"
    config = config_from_toml(raw)
    config.validate()
    assert {op.name for op in config.resolved_operations()} == set(BUILTIN_OPERATIONS)
    assert re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", data["campaign"])


def test_a_worker_gets_one_core_and_the_memory_it_needs() -> None:
    resources = container("Job", "sweep-workers")["resources"]
    # The entry point turns the CPU limit into TensorFlow's thread count.
    assert resources["limits"]["cpu"] == resources["requests"]["cpu"]
    assert _gibibytes(resources["requests"]["memory"]) >= 0.8  # docs: about 0.8 GiB a worker


# --- the dashboard and the prediction service ---------------------------------------------------


def _probe_port(probe: dict[str, Any], spec: dict[str, Any]) -> int:
    port = probe["httpGet"]["port"]
    if isinstance(port, int):
        return port
    (named,) = [p for p in spec["ports"] if p["name"] == port]
    return int(named["containerPort"])


@pytest.mark.parametrize("name", ["dashboard", "serve"])
def test_services_are_deployments_with_probes_on_their_port(name: str) -> None:
    spec = container("Deployment", f"sweep-{name}")
    args = build_parser().parse_args(spec["args"])
    assert args.command == name and args.host == "0.0.0.0"
    assert {p["containerPort"] for p in spec["ports"]} == {args.port}
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        assert probe in spec, f"{name} has no {probe}"
        if "httpGet" in spec[probe]:
            assert _probe_port(spec[probe], spec) == args.port
    service = resource("Service", f"sweep-{name}")["spec"]
    deployment = resource("Deployment", f"sweep-{name}")["spec"]
    assert service["selector"] == deployment["selector"]["matchLabels"]
    assert service["type"] == "ClusterIP", "no authentication: never exposed outside"


def test_dashboard_liveness_does_not_depend_on_the_database() -> None:
    spec = container("Deployment", "sweep-dashboard")
    assert spec["livenessProbe"]["httpGet"]["path"] == "/api/meta"
    assert spec["readinessProbe"]["httpGet"]["path"] == "/api/studies"
    args = build_parser().parse_args(spec["args"])
    assert args.allow_remote and not args.writable
    mounts = {m["mountPath"] for m in spec["volumeMounts"]}
    assert args.artifacts in mounts


def test_serve_is_ready_only_with_a_model_and_alive_while_it_answers() -> None:
    spec = container("Deployment", "sweep-serve")
    assert spec["startupProbe"]["httpGet"]["path"] == "/healthz"
    assert spec["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    startup = spec["startupProbe"]
    # The first load takes 10-30 s (the compose health check allows 120 s).
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 120
    # Ready = a requested operation has a model loaded (tests/sweep/publishing/
    # test_serve_kserve.py), as the image's health check judges it (tests/test_healthcheck.py).
    assert spec["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert _image_copies(IMAGE_SCRIPTS, "healthcheck.py")


# --- what every pod shares --------------------------------------------------------------------


def pods() -> list[tuple[str, dict[str, Any]]]:
    return [
        (d["metadata"]["name"], d["spec"]["template"]["spec"])
        for d in documents() if d["kind"] in ("Job", "Deployment")
    ]


def test_the_storage_url_comes_from_a_secret_and_nothing_secret_is_literal() -> None:
    for name, spec in pods():
        for each in spec["containers"]:
            env = {e["name"]: e for e in each.get("env", [])}
            storage = env["SWEEP_STORAGE"]
            assert "value" not in storage, f"{name}: a literal storage URL"
            assert storage["valueFrom"]["secretKeyRef"] == {
                "name": "sweep-storage", "key": "SWEEP_STORAGE"
            }
            for key, entry in env.items():
                if _SECRET_NAME.search(key):
                    assert "secretKeyRef" in entry.get("valueFrom", {}), f"{name}.{key}"
    assert not [d for d in documents() if d["kind"] == "Secret"], "no Secret is checked in"
    for path in manifest_files():
        assert not _URL_WITH_LITERAL_PASSWORD.findall(path.read_text()), path


def test_every_pod_runs_the_image_as_its_non_root_user() -> None:
    user = [a for k, a in dockerfile_instructions() if k == "USER"][-1].split(":")[0]
    images = set()
    for name, spec in pods():
        security = spec["securityContext"]
        assert security["runAsNonRoot"] is True and str(security["runAsUser"]) == user, name
        assert spec["automountServiceAccountToken"] is False, name
        # Services named sweep-* would add SWEEP_*_PORT=tcp://... variables to every pod.
        assert spec["enableServiceLinks"] is False, name
        for each in spec["containers"]:
            images.add(each["image"])
            context = each["securityContext"]
            assert context["allowPrivilegeEscalation"] is False, name
            assert context["readOnlyRootFilesystem"] is True, name
            assert context["capabilities"]["drop"] == ["ALL"], name
            writable = {m["mountPath"] for m in each["volumeMounts"]}
            assert {"/tmp", "/home/sweep"} <= writable, f"{name}: TensorFlow writes there"
    assert len(images) == 1, images


def test_the_entry_point_is_the_one_the_image_runs() -> None:
    entrypoint = [a for k, a in dockerfile_instructions() if k == "ENTRYPOINT"][-1]
    assert exec_form(entrypoint) == ["python", IMAGE_SCRIPTS + "entrypoint.py"]
    assert _image_copies(IMAGE_SCRIPTS, "entrypoint.py")


def test_the_artifacts_volume_is_shared_by_workers_and_dashboard() -> None:
    claim = resource("PersistentVolumeClaim", "sweep-artifacts")["spec"]
    assert claim["accessModes"] == ["ReadWriteMany"]
    for kind, name in (("Job", "sweep-workers"), ("Deployment", "sweep-dashboard")):
        volumes = {v["name"]: v for v in pod_spec(kind, name)["volumes"]}
        (mount,) = [m for m in container(kind, name)["volumeMounts"]
                    if m["mountPath"] == "/artifacts"]
        assert volumes[mount["name"]]["persistentVolumeClaim"]["claimName"] == "sweep-artifacts"


def test_the_docs_size_the_database_for_the_job() -> None:
    text = (ROOT / "docs" / "deployment.md").read_text(encoding="utf-8")
    section = text[text.index("## D. Kubernetes"):]
    for needed in ("kubernetes-validate --strict", "parallelism", "max_connections",
                   "PgBouncer", "create secret generic sweep-storage"):
        assert needed in section, needed


def _image_copies(folder: str, name: str) -> bool:
    return any(
        k == "COPY" and a.split()[-1].rstrip("/") + "/" == folder
        and f"compose/{name}" in a.split()
        for k, a in dockerfile_instructions()
    )


def _gibibytes(quantity: str) -> float:
    units = {"Gi": 1.0, "Mi": 1 / 1024, "G": 1e9 / 2**30, "M": 1e6 / 2**30}
    for unit, factor in units.items():
        if quantity.endswith(unit):
            return float(quantity[: -len(unit)]) * factor
    return float(quantity) / 2**30
