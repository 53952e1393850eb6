"""The serving image's dependency set (deploy/requirements-serve.txt) runs the serving path
without torch: in a fresh interpreter where only those distributions (and their own
requirements) and the image's packages (core, data, index, serving, tastemaker) can be
imported, the CLI builds its parser, the app starts on a bundle and answers, and precompute
scores slates. Also: the Containerfile's serving stage installs exactly that file and copies no
training code."""

from __future__ import annotations

import importlib.metadata as md
import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[2]
REQUIREMENTS = ROOT / "deploy" / "requirements-serve.txt"
CONTAINERFILE = ROOT / "deploy" / "Containerfile"
IMAGE_PACKAGES = {"core", "data", "index", "serving", "tastemaker"}
NOT_IN_IMAGE = {"training", "models", "world", "jobs", "evaluation", "benchmarks", "tests"}


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def serving_distributions() -> set[str]:
    """The requirements file's distributions and everything they require, as installed."""
    lines = [ln.split("#")[0].strip() for ln in REQUIREMENTS.read_text().splitlines()]
    todo = [(Requirement(ln).name, set(Requirement(ln).extras)) for ln in lines if ln]
    seen: set[str] = set()
    while todo:
        name, extras = todo.pop()
        if _norm(name) in seen:
            continue
        try:
            dist = md.distribution(name)
        except md.PackageNotFoundError:
            continue  # a platform-conditional requirement not installed here
        seen.add(_norm(name))
        for spec in dist.requires or []:
            req = Requirement(spec)
            envs = [{"extra": e} for e in (extras or {""})]
            if req.marker is None or any(req.marker.evaluate(env) for env in envs):
                todo.append((req.name, set(req.extras)))
    return seen


def test_the_serving_set_leaves_out_torch_and_the_training_stack() -> None:
    allowed = serving_distributions()
    assert {"fastapi", "onnxruntime", "faiss-cpu", "redis", "xgboost"} <= allowed
    assert not {"torch", "pytorch-lightning", "lightning", "onnx", "onnxscript"} & allowed
    declared = {_norm(Requirement(d).name) for d in md.requires("tastemaker") or []}
    lines = [ln.split("#")[0].strip() for ln in REQUIREMENTS.read_text().splitlines()]
    assert {_norm(Requirement(ln).name) for ln in lines if ln} <= declared


SCRIPT = """
import importlib.abc, importlib.metadata as md, json, re, sys
from fastapi.testclient import TestClient  # the test's own client, imported before the guard

ALLOWED, IMAGE, NOT_IN_IMAGE = set({{ALLOWED_J}}), set({{IMAGE_J}}), set({{NOT_IN_IMAGE_J}})
DISTS = md.packages_distributions()
blocked = []

class Guard(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        top = name.split(".")[0]
        if top in IMAGE:
            return None
        norm = {re.sub(r"[-_.]+", "-", d).lower() for d in DISTS.get(top, [])}
        if top in NOT_IN_IMAGE or (norm and not norm & ALLOWED):
            blocked.append(name)
            raise ImportError(f"{name} is not in the serving image")
        return None

sys.meta_path.insert(0, Guard())
from core.settings import Settings
from tastemaker.cli import build_parser
from serving.app import create_app
from serving.precompute import precompute_bundle

build_parser()  # every command registers (their heavy imports stay inside the commands)
settings = Settings(workspace={{WS}}, bundle_dir={{BUNDLES}}, online_store_url={{STORE}}, reload_interval_s=0, public_recommendations=True)
done = precompute_bundle({{BUNDLES}}, {{USERS}}, {{SLATES}})
settings = settings.model_copy(update={"slate_store_url": {{SLATES}}})
with TestClient(create_app(settings)) as c:
    ready = c.get("/readyz").json()
    answer = c.get("/v1/users/alice/recommendations?k=3").json()
print(json.dumps({
    "ready": ready["ready"], "source": answer["source"], "slates": done.slates,
    "torch": "torch" in sys.modules, "blocked": blocked,
}))
"""


def test_serving_starts_and_answers_with_only_the_serving_set(tmp_path, monkeypatch) -> None:
    import pyarrow.parquet as pq

    from data.features.online_store import open_online_store, table_from_rows
    from data.pii import KEY_ENV
    from tests.fixtures.synthetic_bundle import publish_synthetic
    from tests.serving.conftest import SPEC, TEST_KEY, TRENDING, USERS

    monkeypatch.setenv(KEY_ENV, TEST_KEY)  # the child builds its Settings from the environment
    monkeypatch.delenv("TASTEMAKER_DEMO", raising=False)
    bundles_dir = tmp_path / "bundles"
    publish_synthetic(bundles_dir, SPEC, trending=TRENDING, version="20240101T000000Z-first")
    store_path = tmp_path / "online" / "users.sqlite"
    store = open_online_store(store_path)
    store.put_many(USERS.values())
    store.close()

    users = tmp_path / "user_features.parquet"
    pq.write_table(table_from_rows(USERS.values()), users)
    values = {
        "ALLOWED_J": sorted(serving_distributions() | {"tastemaker"}),
        "IMAGE_J": sorted(IMAGE_PACKAGES),
        "NOT_IN_IMAGE_J": sorted(NOT_IN_IMAGE),
        "WS": str(tmp_path),
        "BUNDLES": str(bundles_dir),
        "STORE": str(store_path),
        "USERS": str(users),
        "SLATES": str(tmp_path / "online" / "slates.sqlite"),
    }
    script = SCRIPT
    for key, value in values.items():
        script = script.replace(f"{{{{{key}}}}}", json.dumps(value))
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    # optional imports that their importers guard (redis: cryptography; an HTTP client:
    # charset_normalizer) are refused too, as they would be in the image, and nothing breaks
    assert set(result.pop("blocked")) <= {"cryptography", "charset_normalizer"}, result
    assert result == {"ready": True, "source": "precomputed", "slates": 2, "torch": False}


def test_the_guard_refuses_what_is_not_in_the_image(tmp_path) -> None:
    """The check above can fail: importing torch (or the training code) under it fails."""
    probe = SCRIPT.split("sys.meta_path.insert(0, Guard())")[0] + (
        "sys.meta_path.insert(0, Guard())\n"
        "for name in ('torch', 'training.train'):\n"
        "    try:\n        __import__(name)\n    except ImportError:\n        pass\n"
        "print(json.dumps(blocked))\n"
    )
    for key, value in {
        "ALLOWED_J": sorted(serving_distributions()),
        "IMAGE_J": sorted(IMAGE_PACKAGES),
        "NOT_IN_IMAGE_J": sorted(NOT_IN_IMAGE),
    }.items():
        probe = probe.replace(f"{{{{{key}}}}}", json.dumps(value))
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, timeout=60
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == ["torch", "training"]


def test_containerfile_serving_stage_installs_the_set_and_no_training_code() -> None:
    text = re.sub(r"(?m)^#.*\n", "", CONTAINERFILE.read_text())
    stages = re.split(r"(?m)^FROM ", text)
    serve = next(s for s in stages if re.match(r"\S+ AS serve\s", s))
    deps = next(s for s in stages if re.match(r"\S+ AS serve-deps\s", s))
    assert "pip install --no-cache-dir -r /tmp/requirements-serve.txt" in deps
    assert "COPY --from=serve-deps /opt/venv/ /opt/venv/" in serve
    assert "pip install" not in serve  # nothing else reaches the serving venv
    assert "torch" not in (serve + deps).lower()
    copied = set(re.findall(r"(?m)^COPY (?:--\S+ )*(\S+)/ ", serve))
    assert copied and copied <= IMAGE_PACKAGES | {"/opt/venv", "/wheels"}, copied
    assert re.search(r"(?m)^USER \d+", serve) and "HEALTHCHECK" in serve and "/readyz" in serve
