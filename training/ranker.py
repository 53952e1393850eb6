"""The ranking stage's fitting side: logged slates -> point-in-time features -> LambdaMART.

Time, with the feature job's cutoffs (``valid``, ``test``, ``end``):

* training slates: impressions of the validation week except its last day; early stopping on
  the slates of that last day; held-out slates: the test week. The two-tower that scores them
  must not have trained on the validation week (``tastemaker train --no-refit``), or its
  retrieval score would be in-sample exactly where the ranker learns how far to trust it;
  a refit run is refused.
* every impression of day D gets the user's features and the artist/trending context as of
  midnight starting D (``user_features_at`` / ``artist_features`` / ``trending`` at that
  time), so nothing of day D or later is seen; impressions of artists the user already had
  (``seen``/``followed`` as of that midnight) are left out, since serving never shows them.

Measuring (held-out slates, temporal protocol) is ``evaluation.ranking``; the job that fits,
measures and writes ``runs/<run>/ranker/`` is ``jobs.ranker.train_ranker``; ``tastemaker
export`` puts the ranker into the bundle when it is there.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from core.constants import DAY_MS
from core.workspace import RunDir, Workspace
from data.features.build import FeatureConfig
from data.features.events import EventLog
from data.features.ranker import (
    RANKER_FEATURES,
    candidate_features,
    check_spec,
    label_impressions,
)
from data.features.user import user_features_at
from data.lake import events_dataset
from evaluation.gate import GateConfig
from evaluation.ranking import context_at
from models.ranker import Ranker, RankerConfig, RankingSet

log = logging.getLogger("tastemaker.training")

RANKER_DIR = RunDir(Path()).ranker.name  # named once, by core.workspace.RunDir
RANKER_MODEL = "ranker.ubj"
RANKER_RECORD = "ranker.json"
RANKER_REPORT = "report.md"
_LAKE_COLS = ["event_type", "user_key", "artist_id", "request_id", "position", "event_ts"]


@dataclass(frozen=True)
class RankerJobConfig:
    model: RankerConfig = field(default_factory=RankerConfig)
    candidates: int = 200  # retrieval depth the ranker re-orders (temporal protocol, serving)
    # unshown top retrieval candidates added to each clicked training slate as non-clicks
    # (their true label is unknown: off by default, measured in docs/ranking.md)
    extra_negatives: int = 0
    ks: tuple[int, ...] = (10, 20)
    n_boot: int = 500
    seed: int = 0
    # the rules "retrieval + ranker" must pass against "retrieval alone" (the daily loop passes
    # its own); None: the gate's defaults with ``n_boot`` resamples (at least 100)
    gate: GateConfig | None = None


@dataclass
class Slates:
    """Candidate rows of many slates, grouped by slate (``qid``), with their provenance."""

    data: RankingSet
    day: np.ndarray  # (n,) epoch day of the impression
    retrieval: np.ndarray  # (n,) retrieval score (the baseline order)
    logged: np.ndarray  # (n,) logged slate position (the incumbent's order)

    def with_position(self, position: int) -> RankingSet:
        x = self.data.x.copy()
        x[:, RANKER_FEATURES.index("position")] = position
        return RankingSet(x, self.data.y, self.data.qid)

    def take(self, mask: np.ndarray) -> Slates:
        d = self.data
        return Slates(
            RankingSet(d.x[mask], d.y[mask], d.qid[mask]),
            self.day[mask],
            self.retrieval[mask],
            self.logged[mask],
        )


def read_labelled(ws: Workspace) -> pa.Table:
    """``LABELLED`` rows of every slate in the lake (impressions joined to their clicks)."""
    events = events_dataset(ws.lake_events).to_table(
        columns=_LAKE_COLS,
        filter=pc.field("event_type").isin(["impression", "click"]),
    )
    return label_impressions(events)


def _ranks(scores: np.ndarray, exclude: list[set[int]]) -> np.ndarray:
    """(U, A) 1-based rank of each artist among the user's non-excluded ones by score."""
    s = scores.copy()
    for u, cols in enumerate(exclude):
        if cols:
            s[u, list(cols)] = -np.inf
    order = np.argsort(-s, axis=1, kind="stable")
    ranks = np.empty_like(order)
    np.put_along_axis(ranks, order, np.arange(1, s.shape[1] + 1)[None, :], axis=1)
    return ranks


def build_slates(
    labelled: pa.Table,
    ev: EventLog,
    scorer: Any,
    start_ms: int,
    end_ms: int,
    config: FeatureConfig,
    extra_negatives: int = 0,
) -> Slates:
    """Features and labels of the slates shown in [start_ms, end_ms), day by day, point in time.

    ``scorer`` answers ``training.inference.TwoTowerScorer``'s ``artist_ids`` and
    ``score_users(users)``. ``extra_negatives`` > 0 adds to every clicked slate that many of
    the user's best retrieval candidates that it did not show (and the user did not have), as
    non-clicks at the position after the slate's last."""
    ts = labelled.column("ts_ms").to_numpy()
    window = labelled.filter(pa.array((ts >= start_ms) & (ts < end_ms)))
    df = window.to_pandas()
    df["day"] = df["ts_ms"] // DAY_MS
    artist_col = pd.Index(scorer.artist_ids)
    xs, ys, qids, days, rets, logged = [], [], [], [], [], []
    req_codes = pd.Index(sorted(df["request_id"].unique()))
    for day, part in df.groupby("day", sort=True):
        at = int(day) * DAY_MS
        users = user_features_at(ev, None, at, config)
        keys = part["user_key"].unique()
        users = users.filter(pc.is_in(users["user_key"], value_set=pa.array(keys, pa.string())))
        rows = users.to_pylist()
        scores = scorer.score_users(users)  # (U, A)
        excluded = [
            {
                int(i)
                for i in artist_col.get_indexer(list(r["seen"] or []) + list(r["followed"] or []))
                if i >= 0
            }
            for r in rows
        ]
        ranks = _ranks(scores, excluded)
        ctx = context_at(ev, at, config)
        of_user = {r["user_key"]: i for i, r in enumerate(rows)}
        for key, imp in part.groupby("user_key", sort=False):
            u = of_user.get(key)
            if u is None:
                continue
            col = artist_col.get_indexer(imp["artist_id"].to_numpy())
            keep = (col >= 0) & ~np.isin(col, list(excluded[u]))
            if not keep.any():
                continue
            imp, col = imp[keep], col[keep]
            x = candidate_features(
                ctx,
                rows[u],
                ctx.rows(imp["artist_id"].tolist()),
                scores[u, col],
                ranks[u, col],
                imp["position"].to_numpy(),
            )
            xs.append(x)
            ys.append(imp["label"].to_numpy(np.float32))
            qids.append(req_codes.get_indexer(imp["request_id"].to_numpy()))
            days.append(np.full(len(imp), int(day)))
            rets.append(scores[u, col])
            logged.append(imp["position"].to_numpy())
            if extra_negatives <= 0:
                continue
            best = np.argsort(ranks[u], kind="stable")  # the user's candidates, best first
            for req, shown in imp.groupby("request_id", sort=False):
                if not shown["label"].any():
                    continue
                taken = set(excluded[u]) | set(artist_col.get_indexer(shown["artist_id"]))
                extra = [int(c) for c in best[: extra_negatives + len(taken)] if c not in taken]
                extra_col = np.asarray(extra[:extra_negatives], np.int64)
                unshown = int(shown["position"].max()) + 1
                xs.append(
                    candidate_features(
                        ctx,
                        rows[u],
                        ctx.rows(list(artist_col[extra_col])),
                        scores[u, extra_col],
                        ranks[u, extra_col],
                        unshown,
                    )
                )
                ys.append(np.zeros(len(extra_col), np.float32))
                qids.append(np.full(len(extra_col), req_codes.get_loc(req)))
                days.append(np.full(len(extra_col), int(day)))
                rets.append(scores[u, extra_col])
                logged.append(np.full(len(extra_col), unshown))
        log.info(
            "ranker slates: day %s, %d impressions of %d users",
            pd.Timestamp(at, unit="ms").date(),
            len(part),
            len(rows),
        )
    if not xs:
        raise ValueError(f"no logged slates in [{start_ms}, {end_ms}); is the lake empty there?")
    qid = np.concatenate(qids)
    order = np.argsort(qid, kind="stable")
    cat = [np.concatenate(v)[order] for v in (ys, days, rets, logged)]
    data = RankingSet(np.concatenate(xs)[order], cat[0], qid[order].astype(np.int64))
    return Slates(data, cat[1], cat[2], cat[3])


# the registry's name of a run's two-tower re-ranked by its ranker (the daily loop's challenger)
RANKED_MODEL = "two-tower+ranker"


def load_ranker(run_dir: Path) -> Ranker:
    """The ranker fitted against ``run_dir`` (``<run>/ranker/``), its spec checked."""
    folder = Path(run_dir) / RANKER_DIR
    record = json.loads((folder / RANKER_RECORD).read_text())
    check_spec(record["features"], f"{folder}")
    return Ranker.from_bytes((folder / RANKER_MODEL).read_bytes(), record["features"])


def bundle_ranker(run_dir: Path) -> tuple[bytes, dict[str, Any]] | None:
    """(booster bytes, manifest ``"ranker"`` section) when ``run_dir`` has a fitted ranker."""
    folder = run_dir / RANKER_DIR
    if not (folder / RANKER_MODEL).is_file():
        return None
    record = json.loads((folder / RANKER_RECORD).read_text())
    section = {
        "features": record["features"],
        "serving_position": record["serving_position"],
        "candidates": record["job"]["candidates"],
        "rounds": record["fit"]["rounds"],
        "held_out_slates": {
            k: record["held_out_slates"][k]["ndcg@10"]["mean"] for k in ("ranker", "retrieval")
        },
    }
    return (folder / RANKER_MODEL).read_bytes(), section
