"""The deployment files: Kubernetes manifests, the Containerfile and the container entrypoint.

* every manifest in ``deploy/kubernetes`` validates (strictly: unknown fields are errors) against
  the current Kubernetes API schemas, alone and as rendered by kustomize (``kubectl kustomize``);
* the manifests agree with each other, with the image and with the service (selectors, ports,
  probe paths, security context, one worker per pod, settings that the service accepts);
* hadolint reports nothing above "info" on the Containerfile;
* ``app.entrypoint`` sizes the worker count (``WORKERS``) from the CPUs the container may use, and
  the image's command is ``churn-api serve``.

``nox -s container`` builds and runs the image itself (it needs a container engine).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from app import entrypoint
from app.errors import StartupError
from app.settings import Settings, declared

ROOT = Path(__file__).resolve().parents[1]
KUSTOMIZE_DIR = ROOT / "deploy" / "kubernetes"
CONTAINERFILE = ROOT / "Containerfile"
KUBERNETES_VERSION = "1.37.0"  # the newest the validator ships schemas for (kubectl 1.37 too)
LABELS = {"app.kubernetes.io/name": "churn-api", "app.kubernetes.io/component": "api"}


def tool(name: str) -> str:
    """A command-line tool installed by the test dependency group (in this venv's scripts)."""
    candidate = Path(sysconfig.get_path("scripts")) / name
    found = str(candidate) if candidate.exists() else shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed: run the tests with the test group (nox -s tests)")
    return found


def manifest_files() -> list[Path]:
    return sorted(p for p in KUSTOMIZE_DIR.glob("*.yaml") if p.name != "kustomization.yaml")


def load_all(text: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(text) if doc]


@pytest.fixture(scope="module")
def rendered() -> dict[str, dict[str, Any]]:
    """``kubectl kustomize deploy/kubernetes``, by kind."""
    out = subprocess.run(
        [tool("kubectl"), "kustomize", str(KUSTOMIZE_DIR)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    docs = load_all(out)
    by_kind = {doc["kind"]: doc for doc in docs}
    assert len(by_kind) == len(docs), "one object per kind expected"
    return by_kind


@pytest.fixture(scope="module")
def deployment(rendered: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return rendered["Deployment"]


@pytest.fixture(scope="module")
def container(deployment: dict[str, Any]) -> dict[str, Any]:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return dict(containers[0])


# --- schema validation --------------------------------------------------------------------------


@pytest.mark.parametrize("path", manifest_files(), ids=lambda p: p.name)
def test_each_manifest_validates_strictly(path: Path) -> None:
    docs = load_all(path.read_text())
    assert docs, f"{path.name} is empty"
    for doc in docs:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_the_rendered_kustomization_validates_strictly(rendered: dict[str, dict[str, Any]]) -> None:
    assert set(rendered) == {
        "ConfigMap",
        "Deployment",
        "Service",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
    }
    for doc in rendered.values():
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_the_validator_does_reject_a_misspelt_field() -> None:
    doc = load_all((KUSTOMIZE_DIR / "deployment.yaml").read_text())[0]
    doc["spec"]["template"]["spec"]["containers"][0]["securityContext"][
        "readOnlyRootFileSystem"
    ] = True
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_kustomization_lists_every_manifest_and_only_those() -> None:
    kustomization = yaml.safe_load((KUSTOMIZE_DIR / "kustomization.yaml").read_text())
    assert sorted(kustomization["resources"]) == [p.name for p in manifest_files()]


# --- the manifests agree with each other and with the image -------------------------------------


def test_one_worker_per_pod(rendered: dict[str, dict[str, Any]], container: dict[str, Any]) -> None:
    assert rendered["ConfigMap"]["data"]["WORKERS"] == "1"
    assert Settings.from_environ(rendered["ConfigMap"]["data"]).workers == 1
    assert {"configMapRef": {"name": rendered["ConfigMap"]["metadata"]["name"]}} in container[
        "envFrom"
    ]


def test_configmap_settings_are_accepted_by_the_service(
    rendered: dict[str, dict[str, Any]],
) -> None:
    data = rendered["ConfigMap"]["data"]
    settings = Settings.from_environ(data)  # a bad value raises StartupError naming it
    assert settings.tracking_uri.startswith("http")
    known = {setting.env for setting in declared()}
    unknown = {k for k in data if k not in known}
    assert not unknown, f"ConfigMap keys the service does not read: {unknown}"


def test_settings_check_catches_a_bad_configmap_value() -> None:
    with pytest.raises(StartupError, match="DECISION_THRESHOLD"):
        Settings.from_environ({"DECISION_THRESHOLD": "2"})


def test_selectors_match_the_pods(rendered: dict[str, dict[str, Any]]) -> None:
    pod_labels = rendered["Deployment"]["spec"]["template"]["metadata"]["labels"]
    assert LABELS.items() <= pod_labels.items()
    assert rendered["Deployment"]["spec"]["selector"]["matchLabels"] == LABELS
    assert rendered["Service"]["spec"]["selector"] == LABELS
    assert rendered["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"] == LABELS
    target = rendered["HorizontalPodAutoscaler"]["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == (
        "Deployment",
        rendered["Deployment"]["metadata"]["name"],
    )


def test_ports_match_the_image(
    rendered: dict[str, dict[str, Any]], container: dict[str, Any]
) -> None:
    exposed = re.search(r"^EXPOSE (\d+)$", CONTAINERFILE.read_text(), re.MULTILINE)
    assert exposed is not None
    assert container["ports"] == [
        {"name": "http", "containerPort": int(exposed[1]), "protocol": "TCP"}
    ]
    assert rendered["Service"]["spec"]["ports"][0]["targetPort"] == "http"


def test_probes(container: dict[str, Any]) -> None:
    def path(probe: str) -> str:
        return str(container[probe]["httpGet"]["path"])

    assert path("livenessProbe") == "/livez"  # cheap: never the model or the registry
    assert path("readinessProbe") == "/health"  # 200 only with a model loaded
    assert path("startupProbe") == "/health"
    startup = container["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 60  # time to load the model
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        assert container[probe]["httpGet"]["port"] == "http"


def test_the_probed_paths_exist() -> None:
    from app.routes import ROUTES

    paths = {p for handler in ROUTES for p in handler.paths}
    assert {"/health", "/livez"} <= paths


def test_graceful_drain(deployment: dict[str, Any], container: dict[str, Any]) -> None:
    pod = deployment["spec"]["template"]["spec"]
    pre_stop = container["lifecycle"]["preStop"]["sleep"]["seconds"]
    request_timeout = float(Settings().request_timeout_seconds)
    assert pre_stop >= 3
    assert pod["terminationGracePeriodSeconds"] >= pre_stop + request_timeout + 5
    assert "STOPSIGNAL SIGTERM" in CONTAINERFILE.read_text()  # what the kubelet sends


def test_security_context(deployment: dict[str, Any], container: dict[str, Any]) -> None:
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert pod["automountServiceAccountToken"] is False
    sc = container["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert "add" not in sc["capabilities"]
    # The image's user is the one the pod runs as.
    user = re.search(r"^USER (\d+):(\d+)$", CONTAINERFILE.read_text(), re.MULTILINE)
    assert user is not None
    assert (pod["securityContext"]["runAsUser"], pod["securityContext"]["runAsGroup"]) == (
        int(user[1]),
        int(user[2]),
    )


def test_only_tmp_is_writable(deployment: dict[str, Any], container: dict[str, Any]) -> None:
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert mounts == {"/tmp": "tmp"}
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    assert "emptyDir" in volumes["tmp"]


def test_resources_requests_and_limits(container: dict[str, Any]) -> None:
    resources = container["resources"]
    for kind in ("requests", "limits"):
        assert {"cpu", "memory"} <= resources[kind].keys()
    assert _mebibytes(resources["limits"]["memory"]) >= _mebibytes(resources["requests"]["memory"])
    # one worker measured at ~240 MiB RSS plus an ~18 MiB main process (deploy/README.md)
    assert _mebibytes(resources["requests"]["memory"]) >= 280


def test_scaling_and_disruption(rendered: dict[str, dict[str, Any]]) -> None:
    hpa = rendered["HorizontalPodAutoscaler"]["spec"]
    assert 2 <= hpa["minReplicas"] < hpa["maxReplicas"]
    assert "replicas" not in rendered["Deployment"]["spec"]  # the HPA owns the count
    pdb = rendered["PodDisruptionBudget"]["spec"]
    assert pdb.get("maxUnavailable", 0) < hpa["minReplicas"]
    strategy = rendered["Deployment"]["spec"]["strategy"]["rollingUpdate"]
    assert strategy["maxUnavailable"] == 0


def _mebibytes(quantity: str) -> float:
    units = {"Mi": 1.0, "Gi": 1024.0, "M": 1e6 / 2**20, "G": 1e9 / 2**20}
    for suffix, factor in units.items():
        if quantity.endswith(suffix):
            return float(quantity[: -len(suffix)]) * factor
    return float(quantity) / 2**20


# --- Containerfile ------------------------------------------------------------------------------


def test_hadolint_reports_nothing_above_info() -> None:
    result = subprocess.run(
        [tool("hadolint"), "--no-color", "--format", "json", str(CONTAINERFILE)],
        capture_output=True,
        text=True,
    )
    findings = json.loads(result.stdout or "[]")
    above_info = [f for f in findings if f["level"] not in ("info", "style")]
    assert not above_info, json.dumps(above_info, indent=1)


def test_containerfile_shape() -> None:
    text = CONTAINERFILE.read_text()
    assert re.search(r"^ARG BASE_IMAGE=\S*python:3\.11-slim", text, re.MULTILINE)
    assert "uv sync --locked --no-dev --no-install-project" in text
    assert re.search(r"^HEALTHCHECK .*\n?.*/health", text, re.MULTILINE)
    cmd = re.search(r"^CMD (\[.*\])$", text, re.MULTILINE)
    entry = re.search(r"^ENTRYPOINT (\[.*\])$", text, re.MULTILINE)
    assert cmd is not None
    assert entry is not None
    command = [*json.loads(entry[1]), *json.loads(cmd[1])]  # exec form: no shell in between
    assert "sh" not in {Path(part).name for part in command}
    assert "train" not in command
    assert json.loads(cmd[1]) == ["churn-api", "serve"]  # the one way to start, as on a laptop
    for label in ("source", "version", "licenses"):
        assert f"org.opencontainers.image.{label}=" in text


def test_containerignore_keeps_registries_venvs_and_git_out() -> None:
    ignored = set((ROOT / ".containerignore").read_text().split())
    assert {".git", ".venv", ".nox", "mlflow.db", "mlruns", "mlartifacts", "tests"} <= ignored


# --- app.entrypoint -----------------------------------------------------------------------------


@pytest.fixture
def cgroup(tmp_path: Path) -> Path:
    return tmp_path


def test_cpus_without_a_quota(cgroup: Path) -> None:
    (cgroup / "cpu.max").write_text("max 100000\n")
    assert entrypoint.available_cpus(cgroup) == len(os.sched_getaffinity(0))


def test_cpus_capped_by_a_cgroup_v2_quota(cgroup: Path) -> None:
    (cgroup / "cpu.max").write_text("50000 100000\n")  # half a CPU: still one worker
    assert entrypoint.available_cpus(cgroup) == 1


def test_cpus_rounds_a_fractional_quota_up_but_never_past_the_affinity(cgroup: Path) -> None:
    (cgroup / "cpu.max").write_text("150000 100000\n")
    assert entrypoint.available_cpus(cgroup) == min(2, len(os.sched_getaffinity(0)))
    (cgroup / "cpu.max").write_text("6400000 100000\n")
    assert entrypoint.available_cpus(cgroup) == len(os.sched_getaffinity(0))


def test_cpus_with_cgroup_v1(cgroup: Path) -> None:
    (cgroup / "cpu").mkdir()
    (cgroup / "cpu" / "cpu.cfs_quota_us").write_text("100000\n")
    (cgroup / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert entrypoint.available_cpus(cgroup) == 1
    (cgroup / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")  # no quota
    assert entrypoint.available_cpus(cgroup) == len(os.sched_getaffinity(0))


def test_cpus_without_any_cgroup_files(cgroup: Path) -> None:
    assert entrypoint.available_cpus(cgroup / "missing") == len(os.sched_getaffinity(0))


@pytest.fixture
def exec_calls(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    calls: list[list[str]] = []
    monkeypatch.setattr(os, "execvp", lambda file, args: calls.append(list(args)))
    monkeypatch.delenv("WORKERS", raising=False)
    return calls


def test_entrypoint_fills_in_the_worker_count_and_execs(
    exec_calls: list[list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(entrypoint, "available_cpus", lambda: 3)
    entrypoint.main(["churn-api", "serve"])
    assert os.environ["WORKERS"] == "3"
    assert exec_calls == [["churn-api", "serve"]]


def test_entrypoint_keeps_an_explicit_worker_count(
    exec_calls: list[list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WORKERS", "1")
    entrypoint.main(["churn-api"])
    assert os.environ["WORKERS"] == "1"
    assert exec_calls == [["churn-api"]]


def test_entrypoint_fills_in_the_worker_setting() -> None:
    workers = next(s for s in declared() if s.name == "workers")
    assert workers.env == entrypoint.WORKERS


def test_entrypoint_without_a_command_is_a_usage_error() -> None:
    with pytest.raises(SystemExit) as exc:
        entrypoint.main([])
    assert exc.value.code == 2


def test_entrypoint_runs_as_a_module() -> None:
    """``python -m app.entrypoint CMD`` really replaces itself with CMD."""
    result = subprocess.run(
        [sys.executable, "-m", "app.entrypoint", sys.executable, "-c",
         "import os; print(os.environ['WORKERS'])"],
        env={**os.environ, "WORKERS": "", "PYTHONPATH": str(ROOT)},
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    lines = result.stdout.split()
    assert lines[-1] == str(entrypoint.available_cpus())
