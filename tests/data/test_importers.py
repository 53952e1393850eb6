"""Dataset importers: HetRec 2K (real and a tiny hand-made copy) and interactions files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from data.importers import (
    holdout_split,
    import_hetrec,
    read_artists,
    read_interactions,
    read_side_table,
    write_artists,
    write_interactions,
)
from data.schemas import ARTISTS, FRIENDS, INTERACTIONS, USER_TAGS


def _write(path: Path, text: str, encoding: str = "utf-8", crlf: bool = True) -> None:
    path.write_bytes(text.replace("\n", "\r\n" if crlf else "\n").encode(encoding))


@pytest.fixture
def mini_hetrec(tmp_path: Path) -> Path:
    """A HetRec-shaped folder with every quirk: CRLF, latin-1 tags, sparse ids, an artist
    that is tagged but not in artists.dat (99), and a corrupt tag year (1956)."""
    d = tmp_path / "hetrec"
    d.mkdir()
    _write(
        d / "artists.dat",
        "id\tname\turl\tpictureURL\n3\tBjörk\thttp://x\thttp://y\n"
        '7\tThe "Quoted" Band\thttp://x\t\n18745\tLast\thttp://x\thttp://y\n',
        crlf=False,
    )
    _write(d / "tags.dat", "tagID\ttagValue\n1\trock français\n2\tpop\n3\tdüsseldorf\n", "latin-1")
    _write(
        d / "user_artists.dat",
        "userID\tartistID\tweight\n2\t3\t100\n2\t7\t5\n4\t3\t1\n4\t18745\t352698\n",
    )
    _write(
        d / "user_taggedartists.dat",
        "userID\tartistID\ttagID\tday\tmonth\tyear\n"
        "2\t3\t1\t1\t4\t2009\n4\t3\t1\t1\t5\t2008\n4\t3\t3\t1\t1\t1956\n2\t3\t2\t1\t1\t2010\n"
        "2\t99\t2\t1\t1\t2010\n2\t7\t2\t1\t3\t2007\n",
    )
    _write(d / "user_friends.dat", "userID\tfriendID\n2\t4\n4\t2\n")
    return d


def test_hetrec_quirks_on_a_known_folder(mini_hetrec):
    inter, artists = import_hetrec(mini_hetrec)
    assert inter.schema.equals(INTERACTIONS) and artists.schema.equals(ARTISTS)
    assert inter.to_pydict()["weight"] == [100.0, 5.0, 1.0, 352698.0]
    assert inter["timestamp"].null_count == 4
    by_id = {r["artist_id"]: r for r in artists.to_pylist()}
    assert list(by_id) == ["3", "7", "18745"]  # the tagged-only artist 99 is not invented
    assert by_id["3"]["name"] == "Björk" and by_id["7"]["name"] == 'The "Quoted" Band'
    assert by_id["3"]["tags"] == ["rock français", "pop", "düsseldorf"]  # by count, then tag id
    assert by_id["3"]["created_ts"].year == 2008  # 1956 is corrupt, not the first date
    assert by_id["18745"]["tags"] == [] and by_id["18745"]["created_ts"] is None


@pytest.mark.hetrec
@pytest.mark.slow
def test_hetrec_reproduces_the_published_counts(hetrec_path):
    inter, artists = import_hetrec(hetrec_path)
    assert pc.count_distinct(inter["user_id"]).as_py() == 1_892
    assert artists.num_rows == 17_632
    assert inter.num_rows == 92_834
    assert pc.min(inter["weight"]).as_py() == 1 and pc.max(inter["weight"]).as_py() == 352_698
    assert max(int(a) for a in artists["artist_id"].to_pylist()) == 18_745
    tags = {t for ts in artists["tags"].to_pylist() for t in ts}
    assert "rock français" in tags and len(tags) > 4_000
    assert pc.min(artists["created_ts"]).as_py().year == 2005


def test_interactions_reader_names_missing_and_misnamed_columns(tmp_path):
    bad = tmp_path / "plays.csv"
    bad.write_text("user,item,plays\n1,2,3\n")
    with pytest.raises(ValueError) as err:
        read_interactions(bad)
    msg = str(err.value)
    assert (
        "no 'user_id' column" in msg
        and "found: user, item, plays" in msg
        and "rename 'user'" in msg
    )
    bad.write_text("user_id,item,plays\n1,2,3\n")
    with pytest.raises(
        ValueError, match=r"no 'artist_id' column \(rename 'item' to 'artist_id'\?\)"
    ):
        read_interactions(bad)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        (
            "user_id,artist_id,weight\n1,2,lots\n",
            "'weight' has a non-numeric value 'lots' on row 1",
        ),
        ("user_id,artist_id\n1,\n", "'artist_id' is empty on row 1"),
        ("user_id,artist_id,timestamp\n1,2,yesterday\n", "neither epoch seconds nor ISO-8601"),
    ],
)
def test_interactions_reader_rejects_bad_values(tmp_path, text, match):
    path = tmp_path / "x.csv"
    path.write_text(text)
    with pytest.raises(ValueError, match=match):
        read_interactions(path)


def test_interactions_reader_formats_and_timestamps(tmp_path):
    (tmp_path / "a.tsv").write_text("user_id\tartist_id\ttimestamp\n007\tx\t1700000000\nu2\ty\t\n")
    t = read_interactions(tmp_path / "a.tsv")
    assert t.schema.equals(INTERACTIONS)
    assert t["user_id"].to_pylist() == ["007", "u2"]  # ids stay strings, leading zeros kept
    assert t["weight"].to_pylist() == [1.0, 1.0]
    assert (
        t["timestamp"][0].as_py().timestamp() == 1_700_000_000 and t["timestamp"][1].as_py() is None
    )
    (tmp_path / "b.csv").write_text(
        "artist_id,user_id,timestamp,weight\nx,1,2024-03-01T01:00:00+01:00,2.5\n"
    )
    t = read_interactions(tmp_path / "b.csv")
    assert t["timestamp"][0].as_py().isoformat() == "2024-03-01T00:00:00+00:00"
    assert t["weight"].to_pylist() == [2.5]
    pq.write_table(
        pa.table({"user_id": [1, 2], "artist_id": [10, 20], "extra": ["a", "b"]}),
        tmp_path / "c.parquet",
    )
    t = read_interactions(tmp_path / "c.parquet")
    assert t.to_pydict()["artist_id"] == ["10", "20"]
    with pytest.raises(ValueError, match="must be .csv, .tsv or .parquet"):
        read_interactions(tmp_path / "a.json") if (tmp_path / "a.json").write_text("{}") else None
    with pytest.raises(FileNotFoundError):
        read_interactions(tmp_path / "missing.csv")


def test_holdout_split_is_per_user_disjoint_and_seeded():
    users = np.repeat(["a", "b", "c"], [10, 5, 1])
    table = pa.table(
        {
            "user_id": users,
            "artist_id": [str(i) for i in range(16)],
            "weight": np.ones(16, np.float32),
            "timestamp": pa.nulls(16, pa.timestamp("ms", tz="UTC")),
        },
        schema=INTERACTIONS,
    )
    train, test = holdout_split(table, 0.2, seed=1)
    assert sorted(train["artist_id"].to_pylist() + test["artist_id"].to_pylist()) == sorted(
        map(str, range(16))
    )
    counts = {u: test["user_id"].to_pylist().count(u) for u in "abc"}
    assert counts == {"a": 2, "b": 1, "c": 0}
    again, _ = holdout_split(table, 0.2, seed=1)
    other, _ = holdout_split(table, 0.2, seed=2)
    assert again.equals(train) and not other.equals(train)


@pytest.mark.parametrize("suffix", ["tsv", "parquet"])
def test_written_files_read_back_identically(mini_hetrec, tmp_path, suffix):
    inter, artists = import_hetrec(mini_hetrec)
    write_interactions(inter, tmp_path / f"i.{suffix}")
    write_artists(artists, tmp_path / f"a.{suffix}")
    assert read_interactions(tmp_path / f"i.{suffix}").equals(inter)
    assert read_artists(tmp_path / f"a.{suffix}").to_pylist() == artists.to_pylist()


def test_import_cli_writes_split_files(mini_hetrec, tmp_path):
    from tastemaker.cli import parse_args

    out = tmp_path / "out"
    args = parse_args(
        [
            "--workspace",
            str(tmp_path / "ws"),
            "import",
            "hetrec",
            "--path",
            str(mini_hetrec),
            "--out",
            str(out),
            "--format",
            "tsv",
            "--split-seed",
            "0",
        ]
    )
    assert args.func(args) == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "artists.tsv",
        "friends.tsv",
        "interactions.tsv",
        "test.tsv",
        "train.tsv",
        "user_tags.tsv",
    ]
    friends = read_side_table(out / "friends.tsv", FRIENDS).to_pydict()
    assert friends == {"user_id": ["2", "4"], "friend_id": ["4", "2"]}
    tags = read_side_table(out / "user_tags.tsv", USER_TAGS).to_pylist()
    # every assignment but the one on artist 99 (not in artists.dat), tags by their name
    assert len(tags) == 5 and {"user_id": "4", "artist_id": "3", "tag": "düsseldorf"} in tags
    assert (
        read_interactions(out / "train.tsv").num_rows + read_interactions(out / "test.tsv").num_rows
        == 4
    )
