"""Configuration: one Settings, the only reader of the environment; the registry's own URL."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from core.settings import Settings
from core.workspace import Workspace
from evaluation.model_registry import default_registry_url

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = sorted(p.parent.name for p in ROOT.glob("*/__init__.py")) + ["benchmarks", "tests"]
OUR_PACKAGES = [p for p in PACKAGES if p not in ("benchmarks", "tests")]
THE_READER = Path("core") / "settings.py"


def _environment_uses(path: Path) -> list[tuple[int, str]]:
    """Each ``os.environ``, ``os.getenv``, ``os.putenv``, ``os.unsetenv`` and each import of
    ``environ``/``getenv`` from os in ``path``, as ``(line, what)``."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        name = None
        if isinstance(node, ast.Attribute) and node.attr in (
            "environ",
            "environb",
            "getenv",
            "putenv",
            "unsetenv",
        ):
            name = node.attr
        elif isinstance(node, ast.ImportFrom) and node.module == "os":
            hits = [a.name for a in node.names if a.name in ("environ", "environb", "getenv")]
            name = ",".join(hits) or None
        if name:
            found.append((node.lineno, name))
    return found


def _package_modules() -> list[Path]:
    return [path for package in OUR_PACKAGES for path in sorted((ROOT / package).rglob("*.py"))]


def test_only_core_settings_reads_the_environment() -> None:
    uses = {
        path.relative_to(ROOT): found
        for path in _package_modules()
        if (found := _environment_uses(path))
    }
    outside = [f"{p}:{line} {what}" for p, f in uses.items() if p != THE_READER for line, what in f]
    assert not outside, "read the environment through core.settings.Settings:\n" + "\n".join(
        outside
    )
    # the walker can fail: it finds the one module that is allowed to touch the environment
    assert THE_READER in uses


def test_the_walker_sees_every_spelling(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text(
        "import os\nfrom os import environ\n\n"
        "def f():\n    return os.environ.get('A'), os.getenv('B'), environ['C']\n"
    )
    assert sorted(_environment_uses(module)) == [(2, "environ"), (5, "environ"), (5, "getenv")]


def test_settings_come_from_the_environment(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("TASTEMAKER_WORKSPACE", str(tmp_path))
    monkeypatch.setenv("TASTEMAKER_REGISTRY_URL", "postgresql://reg@db/registry")
    monkeypatch.setenv("TASTEMAKER_DATA_DIR", str(tmp_path / "data"))
    settings = Settings()
    assert settings.workspace == tmp_path
    assert settings.registry_url == "postgresql://reg@db/registry"
    assert settings.data_dir == tmp_path / "data"


def test_child_env_rebuilds_the_same_settings(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("TASTEMAKER_PSEUDONYM_KEY", "s3cret-of-sixteen+")
    settings = Settings(workspace=tmp_path, bundle_dir=tmp_path / "b", default_k=7)
    settings = settings.model_copy(update={"admin_token": "tok"})
    env = settings.child_env()
    assert env["TASTEMAKER_PSEUDONYM_KEY"] == "s3cret-of-sixteen+"
    assert env["TASTEMAKER_ADMIN_TOKEN"] == "tok"
    for name in list(Settings.model_fields):
        monkeypatch.delenv(f"TASTEMAKER_{name.upper()}", raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert Settings() == settings


def test_the_registry_never_defaults_into_the_account_database(monkeypatch, tmp_path) -> None:
    ws = Workspace(tmp_path)
    assert ws.registry_db == tmp_path / "registry.sqlite"
    assert default_registry_url(ws) == f"sqlite:///{tmp_path / 'registry.sqlite'}"
    monkeypatch.setenv("TASTEMAKER_ACCOUNTS_URL", "postgresql://postgres@127.0.0.1:5432/pii")
    monkeypatch.delenv("TASTEMAKER_REGISTRY_URL", raising=False)
    settings = Settings(workspace=tmp_path)
    assert settings.registry_url is None  # so every job falls back to default_registry_url(ws)


@pytest.mark.parametrize("field", ["registry_url", "data_dir", "accounts_url"])
def test_new_fields_default_to_none(monkeypatch, field) -> None:
    monkeypatch.delenv(f"TASTEMAKER_{field.upper()}", raising=False)
    assert getattr(Settings(), field) is None


@pytest.mark.parametrize("field", ["pseudonym_key", "token_key", "token_key_previous"])
def test_secrets_shorter_than_16_characters_are_refused(field, tmp_path) -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="at least 16 characters"):
        Settings(workspace=tmp_path, **{field: "x" * 15})
    assert Settings(workspace=tmp_path, **{field: "x" * 16})
