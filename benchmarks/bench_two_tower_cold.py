"""New artists on HetRec Last.fm 2K: 10 % of all artists are held out of training entirely
(split seed 0, artist draw seed 0); the two-tower, trained with ``--artist-meta`` tags, places
them by their tags alone (zero id embedding). Each user's targets are their held-out artists
(from their training and test parts); only held-out artists are ranked, and Recall@20 is
hits / |targets|. Baseline: tag-profile match — a user's tag shares over their training
artists summed over a cold artist's tags (ties: the artist with more tags first).
"""

from __future__ import annotations

import logging
import sys
import tempfile
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch

from data.datasets import hetrec_dir
from data.importers import import_hetrec, write_artists
from evaluation.metrics import ranking_metrics
from evaluation.runs import interactions_from_table
from models.base import Interactions
from training.byod import read_artist_tags
from training.train_config import TrainConfig
from training.two_tower_recommender import TwoTowerRecommender

COMMAND = "python -m benchmarks.run --only two_tower_cold"
log = logging.getLogger("tastemaker.benchmarks")


def _split() -> tuple[Interactions, np.ndarray, list[np.ndarray], dict[str, list[str]]]:
    folder = hetrec_dir()
    if folder is None:
        raise FileNotFoundError("HetRec 2K not found under ../shared/data/lastfm-hetrec-2k")
    table, artists = import_hetrec(folder)
    with tempfile.TemporaryDirectory() as tmp:
        write_artists(artists, Path(tmp) / "artists.tsv")
        tags = read_artist_tags(Path(tmp) / "artists.tsv")
    inter = interactions_from_table(table)
    m = inter.matrix.tocsr()
    rng = np.random.default_rng(0)
    cold = np.sort(rng.choice(m.shape[1], m.shape[1] // 10, replace=False))
    is_cold = np.zeros(m.shape[1], dtype=bool)
    is_cold[cold] = True
    coo = m.tocoo()
    keep = ~is_cold[coo.col]
    train = sp.csr_matrix((coo.data[keep], (coo.row[keep], coo.col[keep])), shape=m.shape)
    targets = [
        np.flatnonzero(is_cold[m.indices[m.indptr[u] : m.indptr[u + 1]]]) for u in range(m.shape[0])
    ]
    targets = [m.indices[m.indptr[u] : m.indptr[u + 1]][t] for u, t in enumerate(targets)]
    return Interactions(train, inter.user_ids, inter.artist_ids), cold, targets, tags


def _tag_profile_scores(
    train: sp.csr_matrix, artist_ids: np.ndarray, tags: dict[str, list[str]], cold: np.ndarray
) -> np.ndarray:
    vocab = {t: i for i, t in enumerate(sorted({t for ts in tags.values() for t in ts}))}
    at = sp.lil_matrix((len(artist_ids), len(vocab)), dtype=np.float32)
    for c, a in enumerate(artist_ids):
        for t in tags.get(str(a), []):
            at[c, vocab[t]] = 1.0
    at = at.tocsr()  # (A, T)
    profile = (train > 0).astype(np.float32) @ at  # (U, T)
    profile = sp.diags(1.0 / np.maximum(profile.sum(1).A.ravel(), 1.0)) @ profile
    scores = (profile @ at[cold].T).toarray()  # (U, C)
    return scores + 1e-6 * np.asarray(at[cold].sum(1)).ravel()[None, :]


def main(quick: bool = False) -> str:
    inter, cold, targets, tags = _split()
    users = np.flatnonzero([len(t) for t in targets])
    col_of = {c: i for i, c in enumerate(cold)}
    cold_targets = [np.array([col_of[c] for c in targets[u]]) for u in users]
    cfg = TrainConfig(epochs=2) if quick else TrainConfig()
    rec = TwoTowerRecommender(cfg, tags).fit(inter)
    assert rec.model is not None
    with torch.no_grad():
        u = rec.user_vectors(users).numpy()  # (U, d)
        a = rec.model.artist_tower.all_vectors()[torch.from_numpy(cold + 2)].numpy()  # (C, d)
    rows = {
        "two-tower (tags only for these artists)": u @ a.T,
        "tag-profile match": _tag_profile_scores(
            inter.matrix.tocsr()[users], inter.artist_ids, tags, cold
        ),
        "random": np.random.default_rng(0).random((len(users), len(cold))),
    }
    lines = [
        "## New artists on HetRec: 10 % of artists never seen in training",
        "",
        f"Command: `{COMMAND}{' --quick' if quick else ''}` ({len(cold):,} held-out artists, "
        f"{len(users):,} users with at least one; ranked among the held-out artists only). "
        "Tags come from the importer's artist file, which counts every user's tag assignments "
        "(held-out pairs included).",
        "",
        "| model | Recall@20 | NDCG@20 |",
        "|---|---|---|",
    ]
    for name, scores in rows.items():
        top = np.argsort(-scores, axis=1)[:, :20]
        m = ranking_metrics(top, cold_targets, ks=(20,))
        lines.append(f"| {name} | {m['recall@20']:.4f} | {m['ndcg@20']:.4f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    print(main(quick="--quick" in sys.argv[1:]))
