"""The kustomize base and its KEDA overlay: they render (``kubectl kustomize``), every core
object passes ``kubernetes-validate --strict`` (unknown fields are errors), the ScaledObject
passes the KEDA CRD's schema (deploy/schemas/, transcribed from the CRD), and the properties
the service relies on hold: probes, limits, non-root, read-only root, secrets only from a
Secret, capacity added from 05:30 before the 6 a.m. peak."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml

from tests.conftest import skip_unless_required

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
KEDA_SCHEMA = ROOT / "deploy" / "schemas" / "keda-scaledobject-v1alpha1.schema.json"
VALIDATE = Path(sys.executable).parent / "kubernetes-validate"


def _kubectl() -> str:
    path = shutil.which("kubectl")
    if path is None:
        skip_unless_required("kubectl", "kubectl not installed (apt-get install kubectl)")
    return str(path)


def _render(overlay: Path) -> list[dict]:
    out = subprocess.run(
        [_kubectl(), "kustomize", str(overlay)], capture_output=True, text=True, check=True
    )
    return [d for d in yaml.safe_load_all(out.stdout) if d]


@pytest.fixture(scope="module")
def base() -> list[dict]:
    return _render(K8S)


@pytest.fixture(scope="module")
def keda() -> list[dict]:
    return _render(K8S / "keda")


def _one(docs: list[dict], kind: str, name: str | None = None) -> dict:
    hits = [d for d in docs if d["kind"] == kind and name in (None, d["metadata"]["name"])]
    assert len(hits) == 1, [(d["kind"], d["metadata"]["name"]) for d in docs]
    return hits[0]


def _validate(docs: list[dict], tmp_path: Path) -> subprocess.CompletedProcess:
    path = tmp_path / "rendered.yaml"
    path.write_text(yaml.safe_dump_all(docs))
    return subprocess.run(
        [str(VALIDATE), "--strict", "--quiet", str(path)], capture_output=True, text=True
    )


def test_base_renders_the_kinds_and_passes_strict_validation(base, tmp_path) -> None:
    kinds = sorted(d["kind"] for d in base)
    assert kinds == sorted(
        [
            "ConfigMap",
            "CronJob",
            "CronJob",
            "Deployment",
            "HorizontalPodAutoscaler",
            "PersistentVolumeClaim",
            "PodDisruptionBudget",
            "Secret",
            "Service",
        ]
    )
    done = _validate(base, tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr


def test_strict_validation_rejects_a_misspelt_field(base, tmp_path) -> None:
    """The check above can fail: one unknown field in the Deployment is refused."""
    docs = json.loads(json.dumps(base))
    _one(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]["readinessProbes"] = {}
    done = _validate(docs, tmp_path)
    assert done.returncode != 0 and "readinessProbes" in done.stdout + done.stderr


def test_deployment_probes_limits_and_security(base) -> None:
    deployment = _one(base, "Deployment", "tastemaker-api")
    pod = deployment["spec"]["template"]["spec"]
    (api,) = pod["containers"]
    assert api["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert api["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert api["resources"]["requests"]["cpu"] == api["resources"]["limits"]["cpu"] == "1"
    assert "memory" in api["resources"]["limits"]
    assert "--workers" in api["args"] and api["args"][api["args"].index("--workers") + 1] == "1"
    assert api["securityContext"]["readOnlyRootFilesystem"] is True
    assert api["securityContext"]["allowPrivilegeEscalation"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"]
    service = _one(base, "Service", "tastemaker-api")
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    pdb = _one(base, "PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]
    hpa = _one(base, "HorizontalPodAutoscaler")
    assert {m["type"] for m in hpa["spec"]["metrics"]} == {"Resource", "Pods"}
    assert hpa["spec"]["minReplicas"] >= pdb["spec"]["minAvailable"] + 1


def test_secrets_come_only_from_the_secret(base) -> None:
    """The pseudonymisation key and admin token reach every container from the Secret; no
    manifest (and so no ConfigMap) carries a value for them."""
    secret = _one(base, "Secret", "tastemaker-secrets")
    assert not secret.get("data") and not secret.get("stringData")
    config = _one(base, "ConfigMap")["data"]
    assert not {"TASTEMAKER_PSEUDONYM_KEY", "TASTEMAKER_ADMIN_TOKEN"} & set(config)
    pods = [_one(base, "Deployment")["spec"]["template"]["spec"]] + [
        c["spec"]["jobTemplate"]["spec"]["template"]["spec"] for c in base if c["kind"] == "CronJob"
    ]
    for pod in pods:
        for container in pod["containers"]:
            env = {e["name"]: e for e in container.get("env", [])}
            key = env["TASTEMAKER_PSEUDONYM_KEY"]
            assert "value" not in key
            assert key["valueFrom"]["secretKeyRef"]["name"] == "tastemaker-secrets"
            assert container["securityContext"]["readOnlyRootFilesystem"] is True


def test_cronjobs_run_daily_and_precompute_before_the_peak(base) -> None:
    jobs = {c["metadata"]["name"]: c for c in base if c["kind"] == "CronJob"}
    assert set(jobs) == {"tastemaker-daily", "tastemaker-precompute"}
    for name, job in jobs.items():
        (container,) = job["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
        assert container["image"].split("/")[-1].startswith("tastemaker-jobs")
        verb = name.removeprefix("tastemaker-")
        assert f"tastemaker {verb}" in " ".join(container["args"])
        assert job["spec"]["concurrencyPolicy"] == "Forbid"
    minute, hour = jobs["tastemaker-precompute"]["spec"]["schedule"].split()[:2]
    assert int(hour) * 60 + int(minute) <= 5 * 60 + 30  # fresh slates before 05:30


def test_keda_overlay_swaps_the_hpa_for_a_scaled_object_that_passes_its_schema(
    keda, tmp_path
) -> None:
    assert not [d for d in keda if d["kind"] == "HorizontalPodAutoscaler"]  # KEDA owns it
    scaled = _one(keda, "ScaledObject", "tastemaker-api")
    schema = json.loads(KEDA_SCHEMA.read_text())
    jsonschema.validate(scaled, schema)
    assert scaled["spec"]["scaleTargetRef"]["name"] == _one(keda, "Deployment")["metadata"]["name"]
    triggers = {t["type"]: t for t in scaled["spec"]["triggers"]}
    assert {"cron", "prometheus", "cpu"} <= set(triggers)
    cron = triggers["cron"]["metadata"]
    minute, hour = cron["start"].split()[:2]
    assert (int(hour), int(minute)) == (5, 30)  # capacity before the 6 a.m. peak
    assert int(cron["desiredReplicas"]) > scaled["spec"]["minReplicaCount"]
    assert "tastemaker_request_seconds_count" in triggers["prometheus"]["metadata"]["query"]
    core = [d for d in keda if d["kind"] != "ScaledObject"]
    done = _validate(core, tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    # and the schema check can fail: a misspelt field, a non-string metadata value
    for broken in (
        {**scaled, "spec": {**scaled["spec"], "minReplicas": 2}},
        {
            **scaled,
            "spec": {
                **scaled["spec"],
                "triggers": [{"type": "cron", "metadata": {"desiredReplicas": 6}}],
            },
        },
    ):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(broken, schema)
