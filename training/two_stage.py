"""The two-stage system's fitting side: multi-source candidates -> point-in-time features ->
a ranker trained for discovery.

Label: the listener engaged with the candidate (a first positive event: stream, click or
follow) in the week after the cutoff: what the daily gate measures (``EVAL_USERS.targets``,
``data.features.examples.build_eval``). Time, with the feature job's cutoffs:

* **fit** — listeners as of the ``valid`` cutoff (state, artist context and trending lists
  from events before it), labels from the validation week; the candidates come from a
  two-tower that never saw the validation week (``tastemaker train --no-refit``) and from
  item-to-item neighbours of the ``train`` weeks only, so every source is out of sample
  exactly where the ranker learns how far to trust it. A fixed share of those listeners
  (by a hash of their key) is held out for early stopping;
* **report** — listeners as of the ``test`` cutoff, with the served (refit) two-tower and
  neighbours of the train + valid weeks; the test week is read only there
  (``evaluation.two_stage``).

``jobs.two_stage.train_two_stage`` runs both and writes ``runs/<run>/two_stage/``;
``tastemaker export`` carries it into the bundle (``two_stage.ubj`` + ``neighbours.parquet``).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import scipy.sparse as sp

from data.features.build import FeatureConfig
from data.features.candidates import (
    SOURCES,
    TWO_STAGE_FEATURES,
    CandidateConfig,
    Candidates,
    NeighbourTable,
    RetrievalBlend,
    blend_scores,
    check_two_stage_spec,
    gather,
    two_stage_features,
)
from data.features.events import EventLog
from data.features.examples import build_eval
from data.features.ranker import RankerContext
from evaluation.ranking import context_at
from evaluation.temporal import index_lists
from index import NEIGHBOURS_FILE, TWO_STAGE_FILE
from models.base import Interactions
from models.itemknn import ItemKNNConfig, ItemKNNRecommender
from models.ranker import Ranker, RankerConfig, RankingSet

log = logging.getLogger("tastemaker.training")

TWO_STAGE_DIR = "two_stage"
TWO_STAGE_MODEL = TWO_STAGE_FILE  # the run folder's names are the bundle's
TWO_STAGE_RECORD = "two_stage.json"
TWO_STAGE_REPORT = "report.md"
# the registry's name of a run's two-stage system (multi-source candidates + discovery ranker)
TWO_STAGE_MODEL_NAME = "two-stage"


@dataclass(frozen=True)
class TwoStageConfig:
    candidates: CandidateConfig = field(default_factory=CandidateConfig)
    neighbours: int = 200  # neighbours kept per artist (the bundle's table)
    # ItemKNN's shrink for the neighbour table; None: the tuned ItemKNN's when `tastemaker
    # tune` saved one for the workspace, else ItemKNNConfig's default (plain cosine)
    shrink: float | None = None
    # pointwise, not LambdaMART: on the development split of bench_two_stage (the demo world
    # without its test week; fitted on the week before validation, scored on the validation
    # week) the delta to the tuned ItemKNN's NDCG@20 went from +0.004 [-0.001, +0.009]
    # (rank:ndcg, depth 6, eta 0.05, early stopping on NDCG@20) to +0.013 [+0.009, +0.017],
    # Recall@20 from +0.023 to +0.027: a listener's candidates are scored on one probability
    # scale learned across listeners, and logloss stops early on a steadier signal than a
    # top-20 NDCG of ~400 held-out listeners (docs/ranking.md)
    model: RankerConfig = field(
        default_factory=lambda: RankerConfig(
            objective="binary:logistic",
            stop_metric="logloss",
            max_depth=6,
            eta=0.02,
            min_child_weight=5.0,
            eval_at=20,
            n_rounds=2000,
            early_stopping=80,
        )
    )
    # the order served: the ranker's log-odds blended with the two-tower rank, more for heavy
    # listeners (data.features.candidates.RetrievalBlend: why, and the development folds)
    blend: RetrievalBlend = field(default_factory=RetrievalBlend)
    early_stop_share: float = 0.2  # of the fit listeners, held out for early stopping
    ks: tuple[int, ...] = (10, 20)
    n_boot: int = 1000
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0.0 < self.early_stop_share < 1.0:
            raise ValueError(f"early_stop_share must be in (0, 1); got {self.early_stop_share}")
        if self.neighbours < 1:
            raise ValueError(f"neighbours must be >= 1; got {self.neighbours}")
        if not self.blend.off and self.model.objective != "binary:logistic":
            raise ValueError(
                "a retrieval blend reads the ranker's probabilities: it needs the "
                f"binary:logistic objective, not {self.model.objective!r}"
            )


def blend_of(record: Mapping[str, Any]) -> RetrievalBlend:
    """The order a two-stage record (``two_stage.json``) was measured and serves with."""
    return RetrievalBlend.recorded(record["job"].get("blend"))


def neighbour_table(
    interactions: Interactions, artist_ids: Sequence[str], neighbours: int, shrink: float
) -> NeighbourTable:
    """Top-``neighbours`` ItemKNN neighbours per artist of ``interactions``, in the id space of
    ``artist_ids`` (artists the interactions lack have none)."""
    knn = ItemKNNRecommender(ItemKNNConfig(shrink=shrink, neighbours=neighbours))
    knn.fit(interactions)
    s = knn.similarity.tocoo()
    to = pd.Index(list(artist_ids)).get_indexer(interactions.artist_ids)  # (A_inter,)
    r, c = to[s.row], to[s.col]
    ok = (r >= 0) & (c >= 0)
    n = len(artist_ids)
    m = sp.csr_matrix((s.data[ok].astype(np.float32), (r[ok], c[ok])), shape=(n, n))
    return NeighbourTable(m)


def trending_ids(
    lists: Mapping[str, Sequence[str]], artist_ids: Sequence[str] | np.ndarray
) -> dict[str, np.ndarray]:
    """Trending lists (segment key -> artist ids) as ids of ``artist_ids`` (-1 unknown)."""
    index = pd.Index(list(artist_ids))
    return {k: index.get_indexer(list(v)).astype(np.int64) for k, v in lists.items()}


@dataclass
class Examples:
    """Candidate rows of many listeners, one query group per listener (``qid`` sorted)."""

    data: RankingSet
    user: np.ndarray  # (n,) row of the listener in the users table
    artist: np.ndarray  # (n,) artist id (scorer column)
    sources: np.ndarray  # (n, S) bool
    n_users: int
    n_targets: int  # targets of the listeners, in the candidates or not
    n_found: int  # of those, in the candidates (the candidate stage's recall)

    def take(self, mask: np.ndarray) -> Examples:
        d = self.data
        return Examples(
            RankingSet(d.x[mask], d.y[mask], d.qid[mask]),
            self.user[mask],
            self.artist[mask],
            self.sources[mask],
            len(np.unique(self.user[mask])),
            self.n_targets,
            int(d.y[mask].sum()),
        )


@dataclass(frozen=True)
class Stage:
    """Everything the candidates of one cutoff need, in one artist id space (``artist_ids``,
    the two-tower scorer's columns)."""

    artist_ids: np.ndarray  # (A,)
    neighbours: NeighbourTable
    context: RankerContext
    trending: Mapping[str, np.ndarray]  # segment key -> ids best first (-1 unknown)
    config: CandidateConfig
    ctx_rows: np.ndarray = field(init=False, repr=False)  # (A,) context row of every artist
    index: pd.Index = field(init=False, repr=False)  # artist id -> id

    def __post_init__(self) -> None:
        object.__setattr__(self, "ctx_rows", self.context.rows(list(self.artist_ids)))
        object.__setattr__(self, "index", pd.Index(self.artist_ids))

    def candidates(
        self, row: Mapping[str, Any], tt: np.ndarray, knn: np.ndarray
    ) -> tuple[Candidates, np.ndarray]:
        """(candidates, features) of one listener: ``tt`` (A,) its two-tower scores, ``knn``
        (A,) its item-to-item scores."""
        excluded = self.index.get_indexer(
            list(row.get("seen") or []) + list(row.get("followed") or [])
        )
        excluded = excluded[excluded >= 0]
        masked = tt.copy()
        masked[excluded] = -np.inf
        depth = min(self.config.two_tower, len(masked) - len(np.unique(excluded)))
        top = np.argsort(-masked, kind="stable")[: max(depth, 0)]
        cands = gather((top, tt[top]), knn, row, self.trending, excluded, self.config)
        x = two_stage_features(
            self.context,
            row,
            self.ctx_rows[cands.ids],
            cands,
            tt[cands.ids],
            knn[cands.ids],
            self.config,
        )
        return cands, x

    def features_for(
        self,
        row: Mapping[str, Any],
        tt: np.ndarray,
        knn: np.ndarray,
        ids: np.ndarray,
        cands: Candidates | None = None,
    ) -> np.ndarray:
        """Features of arbitrary artists ``ids`` of one listener (e.g. those a logged slate
        showed): each with the sources, scores and ranks it has in the listener's union
        (``cands``, computed when not given), none when the union lacks it."""
        if cands is None:
            cands, _ = self.candidates(row, tt, knn)
        where = pd.Index(cands.ids).get_indexer(ids)
        found = where >= 0
        s = len(SOURCES)
        sources = np.zeros((len(ids), s), bool)
        scores = np.full((len(ids), s), np.nan, np.float32)
        ranks = np.zeros((len(ids), s), np.int64)
        sources[found] = cands.sources[where[found]]
        scores[found] = cands.scores[where[found]]
        ranks[found] = cands.ranks[where[found]]
        sub = Candidates(np.asarray(ids, np.int64), sources, scores, ranks)
        return two_stage_features(
            self.context, row, self.ctx_rows[ids], sub, tt[ids], knn[ids], self.config
        )


def have_ids(rows: Sequence[Mapping[str, Any]], artist_ids: np.ndarray) -> list[np.ndarray]:
    """Each listener's artists (seen, history, followed) as ids of ``artist_ids``."""
    idx = pd.Index(artist_ids)
    out = []
    for r in rows:
        have = list(r.get("seen") or []) + list(r.get("history") or [])
        have += list(r.get("followed") or [])
        out.append(idx.get_indexer(have).astype(np.int64))
    return out


def build_examples(users: pa.Table, scorer: Any, stage: Stage) -> Examples:
    """Candidates, features and labels (``targets``) of every listener of ``users``
    (``EVAL_USERS`` rows) with a history; ``scorer`` answers ``score_users`` over
    ``stage.artist_ids`` (``training.inference.TwoTowerScorer``)."""
    rows = users.to_pylist()
    tt_all = scorer.score_users(users)  # (U, A)
    knn_all = stage.neighbours.scores_many(have_ids(rows, stage.artist_ids))  # (U, A)
    targets = index_lists(users["targets"], stage.artist_ids)
    xs, ys, qids, us, arts, srcs = [], [], [], [], [], []
    n_targets = n_found = 0
    for u, row in enumerate(rows):
        if not row.get("history"):
            continue
        cands, x = stage.candidates(row, tt_all[u], knn_all[u])
        y = np.isin(cands.ids, targets[u]).astype(np.float32)
        n_targets += len(targets[u])
        n_found += int(y.sum())
        xs.append(x)
        ys.append(y)
        qids.append(np.full(len(y), u, np.int64))
        us.append(np.full(len(y), u, np.int64))
        arts.append(cands.ids)
        srcs.append(cands.sources)
    if not xs:
        raise ValueError("no listener with a history to build two-stage examples from")
    data = RankingSet(np.concatenate(xs), np.concatenate(ys), np.concatenate(qids))
    return Examples(
        data,
        np.concatenate(us),
        np.concatenate(arts),
        np.concatenate(srcs),
        len(xs),
        n_targets,
        n_found,
    )


def examples_at(
    ev: EventLog,
    at_ms: int,
    until_ms: int,
    scorer: Any,
    neighbours: NeighbourTable,
    fconfig: FeatureConfig,
    config: CandidateConfig,
) -> tuple[pa.Table, Examples]:
    """Point in time: listeners' state, artist context and trending lists as of ``at_ms`` (only
    events before it), labels = new engagements in [at_ms, until_ms). ``neighbours`` must come
    from interactions before ``at_ms`` too (the caller's). Returns (the users, the examples)."""
    from data.features.artist import trending
    from data.features.ranker import trending_from_table

    users = build_eval(ev, fconfig, "fit", at_ms, until_ms)
    lists = trending_from_table(trending(ev, at_ms, fconfig))
    artist_ids = np.asarray(scorer.artist_ids)
    stage = Stage(
        artist_ids,
        neighbours,
        context_at(ev, at_ms, fconfig),
        trending_ids(lists, artist_ids),
        config,
    )
    return users, build_examples(users, scorer, stage)


def early_stop_mask(user_keys: Sequence[str], share: float) -> np.ndarray:
    """(U,) True for the listeners held out for early stopping: a stable hash of the key."""
    h = [int(hashlib.sha256(str(k).encode()).hexdigest()[:8], 16) for k in user_keys]
    return np.asarray(h, np.float64) / 0xFFFFFFFF < share


def unions(users: pa.Table, scorer: Any, stage: Stage) -> list[tuple[Candidates, np.ndarray]]:
    """(candidates, features) of every listener of ``users``, as :meth:`Stage.candidates`."""
    rows = users.to_pylist()
    tt_all = scorer.score_users(users)  # (U, A)
    knn_all = stage.neighbours.scores_many(have_ids(rows, stage.artist_ids))
    return [stage.candidates(row, tt_all[u], knn_all[u]) for u, row in enumerate(rows)]


def top_of(
    union: Sequence[tuple[Candidates, np.ndarray]], ranker: Ranker, k: int, blend: RetrievalBlend
) -> np.ndarray:
    """(U, k) each listener's top-``k`` artist ids of its ``union`` (-1 padded), ordered by
    ``ranker``'s scores blended with the two-tower rank (``blend``)."""
    out = np.full((len(union), k), -1, np.int64)
    for u, (cands, x) in enumerate(union):
        if not len(cands):
            continue
        order = np.argsort(-blend_scores(ranker.predict(x), x, blend), kind="stable")[:k]
        out[u, : len(order)] = cands.ids[order]
    return out


def rank_lists(
    ranker: Ranker,
    users: pa.Table,
    scorer: Any,
    stage: Stage,
    k: int,
    blend: RetrievalBlend,
) -> np.ndarray:
    """(U, k) the two-stage system's top-``k`` artist ids per listener (-1 padded): the union of
    candidates re-ordered by ``ranker``'s scores blended with the two-tower rank (``blend``)."""
    return top_of(unions(users, scorer, stage), ranker, k, blend)


def load_two_stage(run_dir: Path) -> tuple[Ranker, dict[str, Any]]:
    """The two-stage ranker fitted for ``run_dir`` and its record, spec checked."""
    import json

    folder = Path(run_dir) / TWO_STAGE_DIR
    path = folder / TWO_STAGE_MODEL
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found; run `tastemaker train-two-stage --run {Path(run_dir).name}`"
        )
    record = json.loads((folder / TWO_STAGE_RECORD).read_text())
    check_two_stage_spec(record["features"], str(folder))
    return Ranker.from_bytes(path.read_bytes(), TWO_STAGE_FEATURES), record


def two_stage_dir(run_dir: Path) -> Path:
    return Path(run_dir) / TWO_STAGE_DIR


def bundle_two_stage(run_dir: Path) -> tuple[dict[str, bytes], dict[str, Any]] | None:
    """(files, manifest section) of the two-stage system fitted for ``run_dir``, or None."""
    import json

    folder = two_stage_dir(run_dir)
    if not (folder / TWO_STAGE_MODEL).is_file():
        return None
    record = json.loads((folder / TWO_STAGE_RECORD).read_text())
    check_two_stage_spec(record["features"], str(folder))
    files = {
        TWO_STAGE_MODEL: (folder / TWO_STAGE_MODEL).read_bytes(),
        NEIGHBOURS_FILE: (folder / NEIGHBOURS_FILE).read_bytes(),
    }
    section = {
        "features": list(TWO_STAGE_FEATURES),
        "candidates": record["job"]["candidates"],
        "blend": asdict(blend_of(record)),
        "rounds": record["fit"]["rounds"],
        "fit_run": record.get("fit_run"),
    }
    return files, section
