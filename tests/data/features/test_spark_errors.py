"""The Spark engine's refusals: one line that names what to do (no Spark session needed)."""

from __future__ import annotations

import pyarrow as pa
import pytest
from deltalake import DeltaTable

from data.features.spark import SparkUnavailable, check_java, check_spark
from data.lake import EVENTS_SCHEMA, LAKE_PARTITION, open_events


@pytest.mark.parametrize("version", ["3.4.1", "5.0.0", "2.4.8"])
def test_an_unsupported_spark_is_refused(version: str) -> None:
    with pytest.raises(SparkUnavailable, match=rf"pyspark {version} is not supported.*spark\]"):
        check_spark(version)


@pytest.mark.parametrize("version", ["3.5.0", "4.0.1", "4.3.0"])
def test_a_supported_spark_passes(version: str) -> None:
    check_spark(version)


def test_missing_java_names_the_package(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty folder: no `java` anywhere
    with pytest.raises(SparkUnavailable, match="apt-get install openjdk-17-jre-headless"):
        check_java()


def test_a_lake_of_a_newer_schema_is_refused(tmp_path) -> None:
    path = tmp_path / "events"
    newer = EVENTS_SCHEMA.append(pa.field("listening_context", pa.string()))
    DeltaTable.create(str(path), schema=newer, partition_by=[LAKE_PARTITION])
    with pytest.raises(ValueError, match=r"\['listening_context'\].*newer tastemaker"):
        open_events(path)
    current = tmp_path / "current"
    DeltaTable.create(str(current), schema=EVENTS_SCHEMA, partition_by=[LAKE_PARTITION])
    assert open_events(current).version() == 0
