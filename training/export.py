"""Run dir -> serving bundle: ONNX user tower, FAISS artist index, vocabularies, metadata.

The ONNX graph is checked against the torch tower on the same inputs before anything is
published; a mismatch raises :class:`ExportParityError` and nothing is written.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch

from core.constants import N_SPECIAL
from core.workspace import RunDir, Workspace
from data.features.vocab import FeatureVocabs, Vocab
from data.schemas import ARTIST_FEATURES, TRENDING, USER_DENSE_FIELDS, conform
from index.bundle import FILES, PEER_SLATES_FILE, RANKER_FILE, publish_bundle
from index.choose import RECALL_FLOOR, build_checked_index
from index.faiss_index import IndexSpec
from models.two_tower import TwoTower
from training.inference import LoadedRun, TwoTowerScorer, load_run
from training.ranker import bundle_ranker
from training.two_stage import bundle_two_stage

log = logging.getLogger("tastemaker.training")
# the exporter warns once per optional torchvision op it cannot register: noise for a user
logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)
OPSET = 18
PARITY_TOL = 1e-4


class ExportParityError(RuntimeError):
    """The exported ONNX user tower disagrees with the torch tower on the same inputs."""


def _probe_inputs(run: LoadedRun, batch: int = 7, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """Inputs that exercise every path: full, partial and empty histories, every segment."""
    cfg = run.config
    g = torch.Generator().manual_seed(seed)
    history = torch.randint(1, cfg.n_artists, (batch, cfg.history_len), generator=g)  # (B, L)
    for i in range(batch):
        history[i, (i * cfg.history_len) // max(batch - 1, 1) :] = 0  # row 0 full .. last empty
    history = history.flip(0)
    segments = (
        torch.stack(
            [torch.randint(0, n, (batch,), generator=g) for n in cfg.segment_cardinalities], 1
        )
        if cfg.segment_cardinalities
        else torch.zeros((batch, 0), dtype=torch.long)
    )  # (B, S)
    dense = torch.randn((batch, cfg.n_dense), generator=g)  # (B, D)
    if cfg.follows_len <= 0:
        return history, segments, dense
    follows = torch.randint(1, cfg.n_artists, (batch, cfg.follows_len), generator=g)  # (B, F)
    for i in range(batch):
        follows[i, (i * cfg.follows_len) // max(batch - 1, 1) :] = 0  # row 0 full .. last empty
    return history, segments, dense, follows


def export_user_tower(run: LoadedRun, path: Path) -> float:
    """Write the ONNX user tower to ``path``; return the max abs diff against torch."""
    tower = run.model.user_tower.eval()
    probe = _probe_inputs(run)
    names = ["history", "segments", "dense", "follows"][: len(probe)]
    batch = torch.export.Dim("batch", min=1)
    torch.onnx.export(
        tower,
        probe,
        str(path),
        dynamo=True,
        opset_version=OPSET,
        input_names=names,
        output_names=["user_vec"],
        dynamic_shapes={name: {0: batch} for name in names},
        external_data=False,
        verbose=False,
    )
    with torch.no_grad():
        want = tower(*probe).numpy()  # (B, d)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feeds = {i.name: t.numpy() for i, t in zip(session.get_inputs(), probe, strict=True)}
    got = session.run(["user_vec"], feeds)[0]
    diff = float(np.abs(got - want).max())
    if not diff < PARITY_TOL:
        raise ExportParityError(
            f"ONNX user tower differs from torch by {diff:.2e} (tolerance {PARITY_TOL:.0e}) on "
            f"run {run.run_id}"
        )
    return diff


def _trending_json(ws: Workspace) -> dict:
    path = ws.feature_dir.trending
    if not path.exists():
        raise FileNotFoundError(f"{path} not found; run `tastemaker features` first")
    table = pq.read_table(path, columns=TRENDING.names).sort_by(
        [("segment", "ascending"), ("rank", "ascending")]
    )
    out: dict = {"global": [], "by_segment": {}}
    for seg, artist in zip(
        table.column("segment").to_pylist(), table.column("artist_id").to_pylist(), strict=True
    ):
        (out["global"] if seg == "global" else out["by_segment"].setdefault(seg, [])).append(artist)
    return out


def with_catalogue(run: LoadedRun, catalogue: pa.Table) -> tuple[LoadedRun, int]:
    """The run's model over the current catalogue: artists it never trained on are appended
    to the vocabulary with a zero id embedding, so the artist tower places them by their tags
    alone (tags outside the run's tag vocabulary are dropped). Returns (run, new artists)."""
    known = set(run.vocabs.artists.tokens)
    ids = [str(a) for a in catalogue.column("artist_id").to_pylist()]
    new = [a for a in dict.fromkeys(ids) if a not in known]
    if not new:
        return run, 0
    tags_of = dict(zip(ids, catalogue.column("tags").to_pylist(), strict=True))
    artists = Vocab((*run.vocabs.artists.tokens, *new))
    old = run.model
    n_old = old.config.n_artists
    config = dataclasses.replace(old.config, n_artists=len(artists))
    tag_table = torch.zeros((len(artists), config.tags_per_artist), dtype=torch.long)  # (A', T)
    tag_table[:n_old] = old.artist_tower.tag_table
    for i, a in enumerate(new, start=n_old):
        enc = [t for t in run.vocabs.tags.encode(list(tags_of.get(a) or [])) if t >= N_SPECIAL]
        tag_table[i, : min(len(enc), config.tags_per_artist)] = torch.tensor(
            enc[: config.tags_per_artist], dtype=torch.long
        )
    popularity = torch.zeros(len(artists))  # (A',) never trained: no popularity yet
    popularity[:n_old] = old.artist_tower.popularity
    model = TwoTower(config, tag_table, popularity)
    state = old.state_dict()
    for key in list(state):
        if key.endswith("artist_embedding.weight"):
            grown = torch.zeros((len(artists), state[key].shape[1]))  # (A', e) new rows zero
            grown[:n_old] = state[key]
            state[key] = grown
    state["artist_tower.tag_table"], state["artist_tower.popularity"] = tag_table, popularity
    if "user_tower.tag_table" in state:
        state["user_tower.tag_table"] = tag_table
    model.load_state_dict(state, strict=True)
    vocabs = FeatureVocabs(artists=artists, tags=run.vocabs.tags, segments=run.vocabs.segments)
    grown_run = dataclasses.replace(run, model=model.eval(), vocabs=vocabs, config=config)
    return grown_run, len(new)


def export_bundle(
    ws: Workspace,
    run_dir: str | Path | None = None,
    spec: IndexSpec | None = None,
    recall_floor: float = RECALL_FLOOR,
    rebuild: bool = False,
    ranker: bool = True,
    make_current: bool = True,
    two_stage: bool = True,
    peer: tuple[bytes, dict[str, Any]] | None = None,
    version: str | None = None,
) -> Path:
    """Export ``run_dir`` (default: the latest run) as a new bundle; return its folder.

    ``ranker``: carry the ranking stage fitted against the run when there is one (the daily
    loop passes False when its gate kept "retrieval + ranker" out).

    ``two_stage``: carry the two-stage system fitted for the run (``runs/<run>/two_stage/``:
    discovery ranker + neighbour table) when there is one; it then takes the ranker's place
    (the daily loop passes False when its gate kept the two-stage system out).

    ``rebuild``: re-embed the workspace's *current* catalogue with the run's model (new
    artists by their tags, see :func:`with_catalogue`) and publish it, without training.

    ``make_current=False``: publish without moving ``CURRENT`` (the caller warms, then moves).

    ``peer``: (the ``PEER_SLATES_FILE`` bytes, the manifest's "peer" section) of a benchmark
    peer served through precomputed slates (``jobs.peer``, scored for ``version``, the name
    this bundle is then published under); it takes the place of the two-stage system and the
    ranker, the run's files naming and explaining its picks.

    The manifest's ``system`` names what answers: ``two-tower``, ``two-tower+ranker``,
    ``two-stage`` or ``<peer> (precomputed slates)``."""
    run_dir = Path(run_dir) if run_dir else ws.latest_run()
    run = load_run(run_dir)
    if run.config.friends_len > 0 or run.config.user_tags_len > 0:
        # the serving contract (history, segments, dense[, follows]) has no friends or own
        # tags; a bundle whose tower needs them could not be answered in real time
        raise ValueError(
            f"run {run_dir} reads friends / user tags (friends_len={run.config.friends_len}, "
            f"user_tags_len={run.config.user_tags_len}): the serving bundle has no such inputs; "
            "train without --friends / --user-tags to export"
        )
    n_new = 0
    if rebuild:
        current = ws.feature_dir.artist_features
        if not current.exists():
            raise FileNotFoundError(f"{current} not found; run `tastemaker features` first")
        run, n_new = with_catalogue(run, pq.read_table(current, columns=["artist_id", "tags"]))
        log.info("rebuild: %d catalogue artists embedded from their tags alone", n_new)
    metrics_path = RunDir(run_dir).metrics
    metrics = json.loads(metrics_path.read_text()) if metrics_path.exists() else {}
    with torch.no_grad():
        vectors = run.model.artist_tower.all_vectors().numpy().astype(np.float32)  # (A, d)
    ids = np.arange(N_SPECIAL, len(vectors), dtype=np.int64)  # FAISS id = vocab index; no specials
    # index kind by catalogue size; an approximate one must keep recall@100 on real users
    index, index_record = build_checked_index(
        vectors[N_SPECIAL:], ids, lambda: _user_vector_sample(ws, run), spec, recall_floor
    )
    if run.kind == "interactions":
        catalogue, trending = _interactions_catalogue(run, run_dir)
    else:
        artist_features = ws.feature_dir.artist_features
        if not artist_features.exists():
            raise FileNotFoundError(f"{artist_features} not found; run `tastemaker features` first")
        catalogue = pq.read_table(artist_features).select(ARTIST_FEATURES.names)
        trending = _trending_json(ws)
    in_vocab = pc.is_in(catalogue.column("artist_id"), value_set=_vocab_array(run))
    catalogue = catalogue.filter(in_vocab)
    with tempfile.TemporaryDirectory(prefix="tastemaker-export-") as tmp:
        tmp_dir = Path(tmp)
        diff = export_user_tower(run, tmp_dir / FILES.user_tower)
        index.save(tmp_dir / FILES.artist_index)
        pq.write_table(catalogue, tmp_dir / FILES.artists, compression="zstd")
        files: dict[str, Path | bytes] = {
            FILES.user_tower: tmp_dir / FILES.user_tower,
            FILES.artist_index: tmp_dir / FILES.artist_index,
            FILES.artists: tmp_dir / FILES.artists,
            FILES.vocab: json.dumps(run.vocabs.to_json(), sort_keys=True).encode(),
            FILES.trending: json.dumps(trending, sort_keys=True).encode(),
        }
        manifest = {
            "run_id": run.run_id,
            "metrics": metrics.get("validation", {})
            | {k: v for k, v in metrics.items() if k not in ("validation", "history")},
            "onnx_parity_max_abs_diff": diff,
            "index": index_record,
            "rebuild": {"new_artists": n_new} if rebuild else None,
            "model": {
                "dim": run.config.dim,
                "history_len": run.config.history_len,
                "follows_len": run.config.follows_len,
                "segment_fields": list(run.vocabs.segment_fields),
                "dense_fields": list(USER_DENSE_FIELDS[: run.config.n_dense]),
                "opset": OPSET,
            },
        }
        manifest["system"] = "two-tower"
        if peer is not None:  # the peer answers: no ranking stage of the run's
            files[PEER_SLATES_FILE], manifest["peer"] = peer
            manifest["system"] = f"{peer[1]['model']} (precomputed slates)"
            two_stage = ranker = False
        staged = bundle_two_stage(run_dir) if two_stage else None  # fitted for this run, if any
        if staged is not None:
            files.update(staged[0])
            manifest["two_stage"], manifest["system"] = staged[1], "two-stage"
        ranked = bundle_ranker(run_dir) if ranker and staged is None else None
        if ranked is not None:
            files[RANKER_FILE], manifest["ranker"] = ranked
            manifest["system"] = "two-tower+ranker"
        version = publish_bundle(
            ws.bundles, files, manifest, version=version, make_current=make_current
        )
    log.info("exported run %s as bundle %s (onnx parity %.1e)", run.run_id, version, diff)
    return ws.bundles / version


def _user_vector_sample(ws: Workspace, run: LoadedRun, n: int = 1000) -> np.ndarray:
    """(Q, d) user vectors of up to ``n`` users of the features stage (the recall gate's
    queries; only needed for an approximate index)."""
    users = pq.read_table(ws.feature_dir.user_features)
    sample = np.random.default_rng(0).permutation(users.num_rows)[:n]
    return TwoTowerScorer(run).user_vectors(users.take(sample))


def _interactions_catalogue(run: LoadedRun, run_dir: Path) -> tuple[pa.Table, dict]:
    """An interactions run has no lake: its catalogue is the run's artists (names and tags
    from the ``--artist-meta`` file when one was given, popularity from training) and its
    trending list the most popular artists."""
    ids = list(run.vocabs.artists.tokens[N_SPECIAL:])
    meta_path = json.loads(RunDir(run_dir).config.read_text()).get("artist_meta")
    names: dict[str, str] = {}
    tags: dict[str, list[str]] = {}
    if meta_path and Path(meta_path).exists():
        from data.importers import read_artists

        meta = read_artists(meta_path)
        keys = [str(a) for a in meta.column("artist_id").to_pylist()]
        names = dict(zip(keys, meta.column("name").to_pylist(), strict=True))
        tags = dict(zip(keys, meta.column("tags").to_pylist(), strict=True))
    popularity = run.model.artist_tower.popularity[N_SPECIAL:].numpy()  # (A,)
    n = len(ids)
    table = pa.table(
        {
            "artist_id": ids,
            "as_of": pa.nulls(n, ARTIST_FEATURES.field("as_of").type),
            "name": [names.get(a) or a for a in ids],
            "tags": [list(tags.get(a) or []) for a in ids],
            "followers": pa.nulls(n, pa.int64()),
            "days_active": pa.nulls(n, pa.int32()),
            "streams_7d": pa.nulls(n, pa.int64()),
            "streams_28d": pa.nulls(n, pa.int64()),
            "listeners_7d": pa.nulls(n, pa.int64()),
            "listeners_28d": pa.nulls(n, pa.int64()),
            "trending_rank": pa.nulls(n, pa.int32()),
            "popularity": pa.array(popularity, pa.float32()),
            "top_tracks": [[] for _ in ids],
            "completion_rate": pa.nulls(n, pa.float32()),
        }
    )
    top = [ids[i] for i in np.argsort(-popularity, kind="stable")[:100]]
    return conform(table, ARTIST_FEATURES), {"global": top, "by_segment": {}}


def _vocab_array(run: LoadedRun) -> pa.Array:
    return pa.array(run.vocabs.artists.tokens[N_SPECIAL:], pa.string())
