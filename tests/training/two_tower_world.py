"""A tiny feature workspace with block structure, built directly in the data/schemas tables.

``N_GROUPS`` user groups each stream only their own group's artists; every user has streamed
``SEEN`` of the group's ``PER_GROUP`` artists and the validation targets are the rest, so a model
that learned anything ranks its own group's unseen artists first.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from core.workspace import Workspace
from data.schemas import (
    ARTIST_FEATURES,
    EVAL_USERS,
    EXAMPLES,
    TRENDING,
    USER_DENSE_FIELDS,
    USER_SEGMENT_FIELDS,
    USER_SEQUENCES,
    conform,
)

N_GROUPS, USERS_PER_GROUP, PER_GROUP, SEEN, STREAMS = 4, 12, 20, 8, 30
T0 = datetime(2024, 1, 1, tzinfo=timezone.utc)


def artist(g: int, j: int) -> str:
    return f"a{g}_{j:02d}"


def group_of(artist_id: str) -> int:
    return int(artist_id[1 : artist_id.index("_")])


def _user_fields(rng: np.random.Generator, n: int) -> dict[str, list]:
    # segments and dense fields carry no group signal: the history must do the work
    seg = {
        f: [str(rng.choice(["x", "y", None])) if f != "country" else "DE" for _ in range(n)]
        for f in USER_SEGMENT_FIELDS
    }
    dense = {f: rng.random(n).astype(np.float32).tolist() for f in USER_DENSE_FIELDS}
    return seg | dense


def build_world(ws: Workspace, seed: int = 0) -> Workspace:
    rng = np.random.default_rng(seed)
    ws.features.mkdir(parents=True, exist_ok=True)
    users, seqs, seen_sets = [], [], []
    for g in range(N_GROUPS):
        for i in range(USERS_PER_GROUP):
            seen = [artist(g, j) for j in rng.choice(PER_GROUP, SEEN, replace=False)]
            users.append(f"u{g}_{i:02d}")
            seqs.append([seen[k] for k in rng.integers(0, SEEN, STREAMS)])
            seen_sets.append(seen)
    ts = [[T0 + timedelta(hours=h) for h in range(STREAMS)] for _ in users]
    pq.write_table(
        conform(pa.table({"user_key": users, "artists": seqs, "event_ts": ts}), USER_SEQUENCES),
        ws.features / "sequences.parquet",
    )

    ex_rows = [(u, s[h], h) for u, s in zip(users, seqs, strict=True) for h in range(3, STREAMS)]
    n = len(ex_rows)
    examples = {
        "split": ["train"] * n,
        "user_key": [r[0] for r in ex_rows],
        "artist_id": [r[1] for r in ex_rows],
        "event_type": ["stream"] * n,
        "event_ts": [T0 + timedelta(hours=r[2]) for r in ex_rows],
        "weight": [1.0] * n,
        "hist_end": [r[2] for r in ex_rows],
        # one follow: the artist of the stream two before the example (strictly before it)
        "followed": [[seqs[users.index(r[0])][r[2] - 2]] for r in ex_rows],
        **_user_fields(rng, n),
    }
    pq.write_table(conform(pa.table(examples), EXAMPLES), ws.features / "examples.parquet")

    ids = [artist(g, j) for g in range(N_GROUPS) for j in range(PER_GROUP)]
    counts = {a: sum(s.count(a) for s in seqs) for a in ids}
    top = max(counts.values())
    af = {
        "artist_id": ids,
        "as_of": [T0] * len(ids),
        "name": [f"Artist {a}" for a in ids],
        "tags": [[f"genre{group_of(a)}", "music"] for a in ids],
        "followers": [0] * len(ids),
        "days_active": [30] * len(ids),
        "streams_7d": [counts[a] for a in ids],
        "streams_28d": [counts[a] for a in ids],
        "listeners_7d": [1] * len(ids),
        "listeners_28d": [1] * len(ids),
        "trending_rank": list(range(1, len(ids) + 1)),
        "popularity": [float(np.log1p(counts[a]) / np.log1p(top)) for a in ids],
        "top_tracks": [[] for _ in ids],
        "completion_rate": [0.5] * len(ids),
    }
    pq.write_table(conform(pa.table(af), ARTIST_FEATURES), ws.features / "artist_features.parquet")

    by_pop = sorted(ids, key=lambda a: -counts[a])
    trending = {
        "segment": ["global"] * 5 + ["country=DE"] * 3,
        "artist_id": by_pop[:5] + by_pop[:3],
        "rank": [1, 2, 3, 4, 5, 1, 2, 3],
        "score": [1.0] * 8,
    }
    pq.write_table(conform(pa.table(trending), TRENDING), ws.features / "trending.parquet")

    nu = len(users)
    eval_users = {
        "split": ["valid"] * nu,
        "user_key": users,
        "as_of": [T0 + timedelta(days=10)] * nu,
        "history": [list(reversed(s))[:50] for s in seqs],
        "followed": [list(reversed(s))[1:2] for s in seqs],
        "seen": seen_sets,
        "targets": [
            [
                artist(group_of(s[0]), j)
                for j in range(PER_GROUP)
                if artist(group_of(s[0]), j) not in s
            ]
            for s in seen_sets
        ],
        **_user_fields(rng, nu),
    }
    pq.write_table(conform(pa.table(eval_users), EVAL_USERS), ws.features / "eval.parquet")
    (ws.features / "meta.json").write_text(json.dumps({"world": "two-tower block test"}))
    return ws


def eval_users(ws: Workspace) -> pa.Table:
    return pq.read_table(ws.features / "eval.parquet")
