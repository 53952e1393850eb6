"""Versioned bundles: atomic publish, CURRENT, checksums, pruning."""

from __future__ import annotations

import json

import pytest

from index import Bundle, BundleNotFoundError, CorruptBundleError, load_bundle, publish_bundle
from index.bundle import CURRENT, MANIFEST, current_version, list_versions


def publish(root, n: int, **kw) -> str:
    return publish_bundle(
        root,
        {"a.bin": f"payload {n}".encode(), "vocab.json": b'{"artists": []}'},
        {"run_id": f"run-{n}", "metrics": {"recall@20": 0.1 * n}},
        **kw,
    )


def test_publish_then_load_follows_current(tmp_path) -> None:
    src = tmp_path / "source.bin"
    src.write_bytes(b"from a path")
    version = publish_bundle(tmp_path / "bundles", {"x.bin": src}, {"run_id": "r1"})
    assert (tmp_path / "bundles" / CURRENT).read_text().strip() == version
    bundle = load_bundle(tmp_path / "bundles")
    assert isinstance(bundle, Bundle) and bundle.version == version
    assert bundle.file("x.bin").read_bytes() == b"from a path"
    assert bundle.manifest["run_id"] == "r1" and "created_at" in bundle.manifest
    entry = bundle.manifest["files"]["x.bin"]
    assert len(entry["sha256"]) == 64 and entry["size"] == 11
    assert load_bundle(bundle.path).version == version, "a version folder loads directly"
    assert [p.name for p in (tmp_path / "bundles").iterdir() if p.name.startswith(".")] == []


def test_newer_publish_moves_current_and_versions_sort(tmp_path) -> None:
    v1 = publish(tmp_path, 1, version="20240101T000000Z-aaaaaa")
    v2 = publish(tmp_path, 2, version="20240102T000000Z-bbbbbb")
    assert list_versions(tmp_path) == [v1, v2]
    assert load_bundle(tmp_path).manifest["run_id"] == "run-2"
    assert current_version(tmp_path) == v2


def test_keeps_only_n_newest(tmp_path) -> None:
    versions = [publish(tmp_path, i, version=f"2024010{i}T000000Z-x", keep=2) for i in range(1, 5)]
    assert list_versions(tmp_path) == versions[-2:]
    assert current_version(tmp_path) == versions[-1]


def test_tampered_file_names_the_file(tmp_path) -> None:
    publish(tmp_path, 1)
    bundle = load_bundle(tmp_path)
    (bundle.path / "a.bin").write_bytes(b"payload 9")
    with pytest.raises(CorruptBundleError, match=r"a\.bin fails its checksum"):
        load_bundle(tmp_path)


def test_wrong_manifest_checksum_is_corrupt(tmp_path) -> None:
    publish(tmp_path, 1)
    path = load_bundle(tmp_path).path / MANIFEST
    manifest = json.loads(path.read_text())
    manifest["files"]["vocab.json"]["sha256"] = "0" * 64
    path.write_text(json.dumps(manifest))
    with pytest.raises(CorruptBundleError, match="vocab.json"):
        load_bundle(tmp_path)


def test_missing_listed_file_and_bad_manifest(tmp_path) -> None:
    publish(tmp_path, 1)
    folder = load_bundle(tmp_path).path
    (folder / "a.bin").unlink()
    with pytest.raises(CorruptBundleError, match="a.bin.*missing"):
        load_bundle(tmp_path)
    (folder / MANIFEST).write_text("{not json")
    with pytest.raises(CorruptBundleError, match="manifest.json"):
        load_bundle(tmp_path)


def test_current_pointing_nowhere(tmp_path) -> None:
    publish(tmp_path, 1)
    (tmp_path / CURRENT).write_text("20990101T000000Z-gone\n")
    with pytest.raises(CorruptBundleError, match="gone"):
        load_bundle(tmp_path)


def test_no_bundle_tells_user_to_export(tmp_path) -> None:
    with pytest.raises(BundleNotFoundError, match="tastemaker export"):
        load_bundle(tmp_path / "bundles")


def test_failed_publish_leaves_no_trace_and_keeps_current(tmp_path) -> None:
    v1 = publish(tmp_path, 1)
    with pytest.raises(FileNotFoundError, match="missing.bin"):
        publish_bundle(tmp_path, {"ok.bin": b"x", "m.bin": tmp_path / "missing.bin"}, {})
    assert current_version(tmp_path) == v1
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([v1, CURRENT])


@pytest.mark.parametrize("name", ["manifest.json", "CURRENT", "../x", ".hidden", ""])
def test_reserved_or_unsafe_names_rejected(tmp_path, name) -> None:
    with pytest.raises(ValueError, match="not allowed"):
        publish_bundle(tmp_path, {name: b"x"}, {})
