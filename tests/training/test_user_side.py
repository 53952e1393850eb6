"""The user tower's friends and own-tags inputs (HetRec): what they may read, and that the
benchmark's path reads only that.

The leak tests build a HetRec-shaped folder whose tag file is written *after* the split is
known, so a tag can be put exactly on held-out artists; then they run the benchmark's own
file writer (``benchmarks.bench_hetrec_inputs.hetrec_files``) and its training call and look
at what the fitted user tower is fed."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import scipy.sparse as sp
import torch

from benchmarks.bench_hetrec_inputs import hetrec_files, train_run
from core.constants import N_SPECIAL
from data.features.vocab import Vocab
from data.importers import holdout_split, import_hetrec, read_side_table
from data.schemas import FRIENDS, USER_TAGS
from evaluation.runs import load_fitted
from models.two_tower import TwoTower
from training.pairs import MaskedPairs
from training.train_config import TrainConfig, default_model
from training.two_tower_recommender import TwoTowerRecommender
from training.user_side import build_user_side, friend_bags, training_tag_assignments

SEED = 0
N_USERS, N_ARTISTS = 6, 10

SMALL = TrainConfig(
    model=dataclasses.replace(default_model(), history_len=8, dim=8, embed_dim=8),
    epochs=2,
    batch_size=16,
    accelerator="cpu",
)


def _write(path: Path, text: str) -> None:
    path.write_bytes(text.replace("\n", "\r\n").encode("latin-1"))


@pytest.fixture
def leaky_hetrec(tmp_path: Path) -> tuple[Path, dict]:
    """Six users who each played artists 1..10 but one; friends in a ring. Tags: "leaky" only
    on held-out (user, artist) pairs of split ``SEED`` (twice, so it would pass the vocab's
    min-count), "kept" on a training artist of the same users; "elsewhere" on an artist the
    user never played."""
    d = tmp_path / "hetrec"
    d.mkdir()
    _write(
        d / "artists.dat",
        "id\tname\turl\tpictureURL\n" + "".join(f"{a}\tA{a}\tu\tp\n" for a in range(1, 12)),
    )
    _write(d / "tags.dat", "tagID\ttagValue\n1\tleaky\n2\tkept\n3\telsewhere\n")
    plays = [(u, a) for u in range(1, N_USERS + 1) for a in range(1, N_ARTISTS + 1) if a != u]
    _write(
        d / "user_artists.dat",
        "userID\tartistID\tweight\n" + "".join(f"{u}\t{a}\t{10 + a}\n" for u, a in plays),
    )
    ring = [(u, u % N_USERS + 1) for u in range(1, N_USERS + 1)]
    ring += [(b, a) for a, b in ring]
    _write(d / "user_friends.dat", "userID\tfriendID\n" + "".join(f"{u}\t{f}\n" for u, f in ring))
    header = "userID\tartistID\ttagID\tday\tmonth\tyear\n"
    _write(d / "user_taggedartists.dat", header)  # the split reads only user_artists.dat
    inter, _ = import_hetrec(d)
    train, test = holdout_split(inter, 0.2, SEED)  # what the benchmark's files will hold
    held = sorted(zip(test["user_id"].to_pylist(), test["artist_id"].to_pylist(), strict=True))
    kept: dict[str, str] = {}
    for u, a in zip(train["user_id"].to_pylist(), train["artist_id"].to_pylist(), strict=True):
        kept.setdefault(u, a)
    victims = [held[0], next(p for p in held if p[0] != held[0][0])]
    rows = [(u, a, 1) for u, a in victims]  # "leaky": on two held-out pairs only
    rows += [(u, kept[u], 2) for u, _ in victims]  # "kept": on a training artist of each
    rows += [(u, "11", 3) for u, _ in victims]  # "elsewhere": artist 11 nobody played
    _write(
        d / "user_taggedartists.dat",
        header + "".join(f"{u}\t{a}\t{t}\t1\t1\t2010\n" for u, a, t in rows),
    )
    return d, {"victims": victims, "kept": kept, "train": train, "test": test}


def test_a_tag_on_a_held_out_artist_never_reaches_the_user_tower(leaky_hetrec, tmp_path):
    folder, case = leaky_hetrec
    paths = hetrec_files(tmp_path / "files", SEED, folder)
    # the importer writes every assignment (the control: the leak is there to be filtered) ...
    raw = read_side_table(paths["user_tags"], USER_TAGS).to_pydict()
    assert raw["tag"].count("leaky") == 2
    # ... and the feature builder the benchmark trains with keeps none of them
    run = train_run(paths, tmp_path / "run", "both", SMALL)
    rec, inter, _ = load_fitted(run)
    assert isinstance(rec, TwoTowerRecommender) and rec.vocabs is not None
    assert "leaky" not in rec.vocabs.tags.tokens and "elsewhere" not in rec.vocabs.tags.tokens
    kept = rec.vocabs.tags.encode(["kept"])[0]
    assert kept >= N_SPECIAL
    fed = rec._side_inputs["user_tags"]  # (U, T) what the tower reads per user
    rows = {u: i for i, u in enumerate(inter.user_ids)}
    for user, _ in case["victims"]:
        assert sorted(set(fed[rows[user]]) - {0}) == [kept]
    assert set(np.unique(fed)) == {0, kept}
    # the filter itself, on the benchmark's training matrix and the raw table
    table = read_side_table(paths["user_tags"], USER_TAGS)
    m = inter.matrix.tocsr()
    m.sort_indices()
    kept_rows = training_tag_assignments(m, inter.user_ids, inter.artist_ids, table)
    assert set(kept_rows["tag"]) == {"kept"}
    # a held-out (user, artist) pair is not an entry of the matrix the filter joined against
    for user, artist in case["victims"]:
        col = list(inter.artist_ids).index(artist)
        assert m[rows[user], col] == 0


def test_friends_read_only_their_training_artists(leaky_hetrec, tmp_path):
    folder, case = leaky_hetrec
    paths = hetrec_files(tmp_path / "files", SEED, folder)
    run = train_run(paths, tmp_path / "run", "friends", SMALL)
    rec, inter, _ = load_fitted(run)
    fed = rec._side_inputs["friends"]  # (U, F) artist vocab indices
    weights = rec._side_inputs["friend_weights"]
    friends = read_side_table(paths["friends"], FRIENDS).to_pydict()
    train_pairs = set(
        zip(
            case["train"]["user_id"].to_pylist(),
            case["train"]["artist_id"].to_pylist(),
            strict=True,
        )
    )
    for i, user in enumerate(inter.user_ids):
        mine = [
            f for u, f in zip(friends["user_id"], friends["friend_id"], strict=True) if u == user
        ]
        allowed = {a for f in mine for (u, a) in train_pairs if u == f}
        got = {str(inter.artist_ids[a - N_SPECIAL]) for a in fed[i] if a > 0}
        assert got == allowed  # every friends' training artist (F >= 10), nothing held out
        for a, w in zip(fed[i], weights[i], strict=True):
            if a > 0:  # weight = how many friends have it in training
                name = str(inter.artist_ids[a - N_SPECIAL])
                assert w == sum((f, name) in train_pairs for f in mine)


def test_friend_bags_rank_by_friends_then_listeners():
    # users 0..3; user 0's friends are 1 and 2; artist 2 is shared by both friends
    m = sp.csr_matrix(
        np.array(
            [[1, 0, 0, 0], [0, 1, 1, 0], [0, 0, 1, 1], [1, 1, 0, 1]],
            dtype=np.float32,
        )
    )
    users = np.array(["a", "b", "c", "d"])
    friends = pa.table(
        {"user_id": ["a", "a", "a", "a", "z"], "friend_id": ["b", "c", "c", "a", "a"]},
        schema=FRIENDS,
    )
    ids, w = friend_bags(m, users, friends, 2)
    # artist 2: two friends; artists 1 and 3: one friend each, 1 and 3 both have 2 listeners
    assert ids[0, 0] == 2 + N_SPECIAL and w[0, 0] == 2.0
    assert ids[0, 1] in (1 + N_SPECIAL, 3 + N_SPECIAL) and w[0, 1] == 1.0
    assert (ids[1:] == 0).all() and (w[1:] == 0).all()  # no friends listed for b, c, d


def test_masked_batches_feed_only_the_tags_of_the_fed_half():
    """In training each row's own tags are those on its history half: a tag on one of its
    positives would name it."""
    rng = np.random.default_rng(0)
    dense = (rng.random((12, 20)) < 0.5).astype(np.float32)
    dense[:, 0] = 1
    m = sp.csr_matrix(dense)
    m.sort_indices()
    users = np.array([f"u{i}" for i in range(12)])
    artists = np.array([f"a{i}" for i in range(20)])
    rows = np.repeat(np.arange(12), np.diff(m.indptr))
    table = pa.table(  # tag "t<j>" on artist j for every pair: a tag names its artist
        {
            "user_id": users[rows].tolist(),
            "artist_id": artists[m.indices].tolist(),
            "tag": [f"t{j}" for j in m.indices],
        },
        schema=USER_TAGS,
    )
    assignments = training_tag_assignments(m, users, artists, table)
    vocab = Vocab.build(assignments["tag"].tolist(), min_count=1)
    side = build_user_side(m, users, None, 0, assignments, vocab, 64)
    pairs = MaskedPairs(m, np.zeros((12, 0), np.int64), 20, 8, 0.5, True, 0, side=side)
    n = 0
    for batch in pairs:
        for hist, tags, artist in zip(
            batch["history"], batch["user_tags"], batch["artist"], strict=True
        ):
            fed_artists = {int(a) - N_SPECIAL for a in hist if a > 0}
            fed_tags = {vocab.tokens[int(t)] for t in tags if t > 0}
            assert fed_tags == {f"t{a}" for a in fed_artists}
            assert f"t{int(artist) - N_SPECIAL}" not in fed_tags  # never the positive's tag
            n += 1
    assert n > 0


def test_side_inputs_off_leave_the_tower_as_it_was():
    cfg = dataclasses.replace(default_model(), n_artists=12, n_tags=6, dim=8, embed_dim=8)
    tags, pop = torch.zeros((12, 8), dtype=torch.long), torch.zeros(12)
    torch.manual_seed(0)
    plain = TwoTower(cfg, tags, pop)
    torch.manual_seed(0)
    side = TwoTower(dataclasses.replace(cfg, friends_len=3, user_tags_len=4), tags, pop)
    extra = {"friends_gate", "user_tags_gate", "user_tag_embedding.weight"}
    assert not {k.split("user_tower.")[-1] for k in plain.state_dict()} & extra
    hist = torch.tensor([[3, 4, 0], [5, 0, 0]])
    empty, dense = torch.zeros((2, 0), dtype=torch.long), torch.zeros((2, 0))
    friends, fw = torch.tensor([[6, 7, 0], [0, 0, 0]]), torch.ones((2, 3))
    user_tags = torch.tensor([[2, 3, 0, 0], [0, 0, 0, 0]])
    with torch.no_grad():
        # the gates start at 0: before training, the side inputs change nothing
        torch.testing.assert_close(
            side.user_tower(hist, empty, dense, None, friends, fw, user_tags),
            plain.user_tower(hist, empty, dense),
        )
        side.user_tower.friends_gate.fill_(1.0)
        assert not torch.allclose(
            side.user_tower(hist, empty, dense, None, friends, fw, user_tags)[0],
            plain.user_tower(hist, empty, dense)[0],
        )
    with pytest.raises(ValueError, match="friends_len=3 needs"):
        side.user_tower(hist, empty, dense)


@pytest.mark.slow
def test_cli_trains_recommends_and_refuses_to_export_with_side_inputs(
    leaky_hetrec, tmp_path, capsys
):
    """``tastemaker import hetrec`` -> ``train --friends --user-tags`` -> ``recommend``; the
    serving bundle has no such inputs, so ``export`` says so instead of writing one."""
    import pyarrow.parquet as pq

    from tastemaker.cli import main

    folder, _ = leaky_hetrec
    files, run, ws = tmp_path / "files", tmp_path / "run", ["--workspace", str(tmp_path / "ws")]
    imported = ["import", "hetrec", "--path", str(folder), "--out", str(files), "--format", "tsv"]
    assert main([*ws, *imported, "--split-seed", "0"]) == 0
    train = ["train", "--interactions", str(files / "train.tsv"), "--out", str(run)]
    side = ["--friends", str(files / "friends.tsv"), "--user-tags", str(files / "user_tags.tsv")]
    small = ["--epochs", "1", "--dim", "8", "--batch-size", "16", "--accelerator", "cpu"]
    assert main([*ws, *train, *side, *small, "--friends-len", "3"]) == 0
    rec, _, cfg = load_fitted(run)
    assert rec.model.config.friends_len == 3 and rec.model.config.user_tags_len == 64
    assert cfg["friends"].endswith("friends.tsv") and cfg["user_tags"].endswith("user_tags.tsv")
    out = tmp_path / "recs.parquet"
    assert (
        main([*ws, "recommend", "--run", str(run), "--all-users", "--k", "2", "--out", str(out)])
        == 0
    )
    assert pq.read_table(out).num_rows == N_USERS * 2  # every user has 3 artists left
    assert main([*ws, "export", "--run", str(run)]) != 0
    assert "the serving bundle has no such inputs" in capsys.readouterr().err
