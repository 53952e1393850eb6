"""The account table on SQLite and on a real PostgreSQL: one code path, same answers."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.workspace import Workspace
from data.accounts import MIGRATIONS, open_accounts, publish_user_view, redact_url
from data.lake import read_users
from data.schemas import USERS
from world.generate import WorldConfig, generate_world

ROWS = [
    # Berlin; dirty gender; 30 on 2024-06-01
    {
        "user_id": "1001",
        "email": "a@example.com",
        "birth_date": "1994-01-15",
        "gender": "Male ",
        "latitude": 52.52,
        "longitude": 13.405,
        "country": "DE",
        "signup_ts": "2020-01-01T10:00:00+00:00",
    },
    # no coordinates, entered "UK"; impossible age 0
    {
        "user_id": "1002",
        "email": "b@example.com",
        "birth_date": "2024-01-01",
        "gender": "f",
        "latitude": None,
        "longitude": None,
        "country": "UK",
        "signup_ts": "2021-05-05T05:05:05+02:00",
    },
    # nothing known; deleted before the view date
    {
        "user_id": "1003",
        "email": "c@example.com",
        "birth_date": None,
        "gender": None,
        "latitude": None,
        "longitude": None,
        "country": "",
        "signup_ts": "2022-01-01T00:00:00Z",
        "deleted_at": "2024-05-01T00:00:00Z",
    },
    # Paris, age 17 on the view date (birthday the day after)
    {
        "user_id": "1004",
        "email": "d@example.com",
        "birth_date": "2006-06-02",
        "gender": "x",
        "latitude": 48.8566,
        "longitude": 2.3522,
        "country": "",
        "signup_ts": "2023-03-03T00:00:00Z",
    },
]
KEY = b"test-key-0123456789"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'pii' / 'accounts.sqlite'}"
    return request.getfixturevalue("postgres_url")


def test_migrations_apply_once_and_are_recorded(url):
    with open_accounts(url) as table:
        assert table.migrate() == [v for v, _ in MIGRATIONS]
        assert table.migrate() == []
    with open_accounts(url) as table:  # a new connection sees the recorded versions
        assert table.migrate() == []


def test_upsert_inserts_updates_and_tracks_deletion(url):
    with open_accounts(url) as table:
        table.migrate()
        assert table.upsert(ROWS) == 4
        assert table.user_ids() == {"1001", "1002", "1004"}
        assert table.deleted_user_ids() == {"1003"}
        table.upsert([{**ROWS[0], "deleted_at": "2024-05-20T00:00:00Z"}])
        assert table.deleted_user_ids() == {"1001", "1003"}
        with pytest.raises(ValueError, match=r"account row 0 has no \['email'\]"):
            table.upsert([{"user_id": "9", "signup_ts": "2020-01-01T00:00:00Z"}])


def test_erase_removes_the_row_for_good(url):
    with open_accounts(url) as table:
        table.migrate()
        table.upsert(ROWS)
        email = table.email_of("1001")
        assert email and table.erase("1001") == {"email": email}
        assert "1001" not in table.user_ids() | table.deleted_user_ids()
        assert table.email_of("1001") is None
        assert table.erase("1001") is None, "idempotent"
        assert table.user_ids() == {"1002", "1004"}
    if url.startswith("sqlite"):  # vacuumed: no freed page of the file holds the email
        assert email.encode() not in Path(url.removeprefix("sqlite:///")).read_bytes()


def test_pii_safe_view_buckets_geocodes_and_drops_deleted(url):
    from datetime import datetime, timezone

    from data.pii import pseudonymise

    with open_accounts(url) as table:
        table.migrate()
        table.upsert(ROWS)
        view = table.pii_safe_view(KEY, as_of=datetime(2024, 6, 1, tzinfo=timezone.utc))
    assert view.schema.equals(USERS)
    rows = {r["user_key"]: r for r in view.to_pylist()}
    assert set(rows) == {pseudonymise(u, KEY) for u in ("1001", "1002", "1004")}
    berlin, uk, paris = (rows[pseudonymise(u, KEY)] for u in ("1001", "1002", "1004"))
    assert (berlin["age_group"], berlin["gender"], berlin["country"], berlin["region"]) == (
        "25-34",
        "m",
        "DE",
        "Berlin",
    )
    assert (uk["age_group"], uk["gender"], uk["country"], uk["city"]) == (
        "unknown",
        "f",
        "GB",
        "unknown",
    )
    assert (paris["age_group"], paris["gender"], paris["country"], paris["city"]) == (
        "<18",
        "n",
        "FR",
        "Paris",
    )
    assert uk["signup_ts"] == datetime(2021, 5, 5, 3, 5, 5, tzinfo=timezone.utc)
    text = str(view.to_pylist())
    for row in ROWS:  # no raw id, email, birth date or coordinate leaves the module
        for value in (row["user_id"], row["email"], row["birth_date"], row["latitude"]):
            if value is not None:
                assert str(value) not in text


@pytest.mark.postgres
def test_world_loads_into_postgres_and_publishes_the_view(tmp_path, postgres_url, demo_mode):
    ws = Workspace(tmp_path / "ws").ensure()
    cfg = WorldConfig.tiny(seed=1)
    summary = generate_world(ws, cfg, accounts_url=postgres_url)
    assert not ws.accounts_db.exists()
    with open_accounts(postgres_url) as table:
        assert len(table.user_ids()) + len(table.deleted_user_ids()) == cfg.n_users
        assert len(table.deleted_user_ids()) == summary["deleted_users"]
    n = publish_user_view(ws, accounts_url=postgres_url)
    assert n == cfg.n_users - summary["deleted_users"]
    assert read_users(ws.lake_users).schema.equals(USERS)


def test_sqlite_world_publishes_the_same_view_as_postgres_would(tiny_world, demo_mode):
    n = publish_user_view(tiny_world)
    users = read_users(tiny_world.lake_users)
    assert (
        users.num_rows
        == n
        == WorldConfig.tiny().n_users
        - len(open_accounts(f"sqlite:///{tiny_world.accounts_db}").deleted_user_ids())
    )
    groups = set(users["age_group"].to_pylist())
    assert "unknown" in groups and len(groups) >= 3


def test_unreachable_postgres_names_the_url_without_the_password():
    with pytest.raises(ConnectionError) as err:
        open_accounts("postgresql://bob:s3cr3t-pw@127.0.0.1:1/accounts")
    message = str(err.value)
    assert "postgresql://bob:***@127.0.0.1:1/accounts" in message
    assert "s3cr3t-pw" not in message


def test_cli_exits_non_zero_when_postgres_is_unreachable(tmp_path, capsys):
    from tastemaker.cli import main

    code = main(
        [
            "--workspace",
            str(tmp_path / "ws"),
            "world",
            "--preset",
            "tiny",
            "--accounts-url",
            "postgresql://bob:s3cr3t-pw@127.0.0.1:1/accounts",
        ]
    )
    err = capsys.readouterr().err
    assert code != 0
    assert "127.0.0.1:1" in err and "s3cr3t-pw" not in err


def test_bad_urls_and_missing_tables_are_clear_errors(tmp_path):
    with pytest.raises(
        ValueError, match="unsupported account table URL 'mysql://u:\\*\\*\\*@h/db'"
    ):
        open_accounts("mysql://u:pw@h/db")
    with pytest.raises(FileNotFoundError, match="run `tastemaker world` first"):
        publish_user_view(Workspace(tmp_path), key=KEY)
    assert redact_url("postgresql://h/db?password=x&sslmode=require") == (
        "postgresql://h/db?password=***&sslmode=require"
    )
