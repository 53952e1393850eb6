"""A listener's side inputs next to an interactions matrix: their friends' artists and the tags
they put on their own artists (HetRec's ``user_friends.dat`` and ``user_taggedartists.dat``,
imported by ``tastemaker import hetrec`` as ``friends`` and ``user_tags`` files).

Both are built from the **training matrix only**, the one rule that keeps them leak-free:

* friends' artists: a friend's row of the training matrix, never anything else. A friend's
  held-out artists are that friend's test targets; feeding them to their friends' towers puts
  held-out pairs into training (the model learns, from the friend's side, which artists go
  with whom), so a friend counts with their *training* artists, like every user;
* the listener's own tags: an assignment counts only when its (user, artist) pair is an entry
  of the training matrix. A tag on a held-out artist names that artist (a tag used on one
  artist points straight at it); a tag on an artist the listener never played cannot be told
  apart from one on a held-out artist by anything that sees only the training file, so it is
  dropped too. During training, the masked batches go one step further: a row's tags are
  those on its *history half* only (:meth:`UserSide.tag_bags`), since the other half are its
  positives, exactly as at test time the tags come from the artists the model was fed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import scipy.sparse as sp

from core.constants import N_SPECIAL
from data.features.vocab import Vocab
from training.pairs import bag_histories


def friend_bags(
    matrix: sp.csr_matrix,  # (U, A) training interactions, columns = artist vocab - 2
    user_ids: np.ndarray,  # (U,) the matrix's user ids
    friends: pa.Table,  # FRIENDS rows (user_id, friend_id)
    length: int,
) -> tuple[np.ndarray, np.ndarray]:
    """(U, F) artist vocab indices (0 = pad) and (U, F) float32 weights: per user, the
    ``length`` artists most of their friends have in the training matrix (weight = the number
    of such friends; ties to the artist with more training listeners). Friends outside the
    matrix, and a user's row for themself, are dropped."""
    index = pd.Index(np.asarray(user_ids, dtype=str))
    src = index.get_indexer(np.asarray(friends["user_id"].to_pylist(), dtype=str))
    dst = index.get_indexer(np.asarray(friends["friend_id"].to_pylist(), dtype=str))
    ok = (src >= 0) & (dst >= 0) & (src != dst)
    n_users = matrix.shape[0]
    graph = sp.csr_matrix(
        (np.ones(int(ok.sum()), np.float32), (src[ok], dst[ok])), shape=(n_users, n_users)
    )
    graph.data[:] = 1.0  # a pair listed twice counts once
    graph.sum_duplicates()
    graph.data[:] = 1.0
    binary = matrix.tocsr().copy()
    binary.data = np.ones_like(binary.data, dtype=np.float32)
    counts = (graph @ binary).tocsr()  # (U, A) how many friends have each artist
    counts.sort_indices()
    listeners = np.diff(binary.tocsc().indptr).astype(np.float64)  # (A,)
    row = np.repeat(np.arange(n_users), np.diff(counts.indptr))  # (N,)
    order = np.lexsort((-listeners[counts.indices], -counts.data, row))  # by row, best first
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order)) - counts.indptr[row[order]]
    keep = rank < length
    ids = np.zeros((n_users, length), np.int64)
    weights = np.zeros((n_users, length), np.float32)
    ids[row[keep], rank[keep]] = counts.indices[keep].astype(np.int64) + N_SPECIAL
    weights[row[keep], rank[keep]] = counts.data[keep]
    return ids, weights


def training_tag_assignments(
    matrix: sp.csr_matrix,  # (U, A) training interactions
    user_ids: np.ndarray,  # (U,)
    artist_ids: np.ndarray,  # (A,)
    user_tags: pa.Table,  # USER_TAGS rows (user_id, artist_id, tag)
) -> pd.DataFrame:
    """The leak filter: the assignments whose (user, artist) pair is an entry of the training
    matrix, as ``entry`` (its position among the matrix's CSR entries) and ``tag`` (the name),
    sorted by entry. Every other assignment (on a held-out artist, or on an artist the user
    has no training row for) is dropped here and nowhere read again."""
    m = matrix.tocsr()
    if not m.has_sorted_indices:
        raise ValueError("training_tag_assignments needs a matrix with sorted indices")
    rows = np.repeat(np.arange(m.shape[0]), np.diff(m.indptr))
    entries = pd.DataFrame(
        {
            "user_id": np.asarray(user_ids, dtype=str)[rows],
            "artist_id": np.asarray(artist_ids, dtype=str)[m.indices],
            "entry": np.arange(m.nnz, dtype=np.int64),
        }
    )
    tags = pd.DataFrame(
        {
            "user_id": np.asarray(user_tags["user_id"].to_pylist(), dtype=str),
            "artist_id": np.asarray(user_tags["artist_id"].to_pylist(), dtype=str),
            "tag": np.asarray(user_tags["tag"].to_pylist(), dtype=object),
        }
    )
    joined = tags.merge(entries, on=["user_id", "artist_id"], how="inner")
    return (
        joined[["entry", "tag"]].sort_values(["entry", "tag"], kind="stable").reset_index(drop=True)
    )


@dataclass(frozen=True)
class UserSide:
    """The side inputs of one training matrix's users (row order = the matrix's)."""

    n_users: int
    friends: np.ndarray | None  # (U, F) artist vocab indices, 0 = pad
    friend_weights: np.ndarray | None  # (U, F) float32
    tag_entry: np.ndarray | None  # (M,) the matrix entry each kept assignment is on
    tag_index: np.ndarray | None  # (M,) its tag vocab index (>= N_SPECIAL)
    tag_key: np.ndarray | None  # (M,) order within a user: most-used tag first
    entry_user: np.ndarray  # (N,) the user row of each matrix entry
    user_tags_len: int = 0

    def tag_bags(self, in_history: np.ndarray | None = None) -> np.ndarray:
        """(U, T) every user's tag assignments on the entries ``in_history`` (N,) marks (all
        entries when None: inference), most-used tag first, 0-padded."""
        if self.tag_entry is None or self.tag_index is None or self.tag_key is None:
            raise ValueError("this UserSide has no user tags")
        n_users = self.n_users
        user = self.entry_user[self.tag_entry]  # (M,) sorted (entries are user-major)
        indptr = np.zeros(n_users + 1, dtype=np.int64)
        indptr[1:] = np.cumsum(np.bincount(user, minlength=n_users))
        keep = (
            np.ones(len(self.tag_entry), bool) if in_history is None else in_history[self.tag_entry]
        )
        return bag_histories(indptr, self.tag_index, keep, self.tag_key, self.user_tags_len)

    def rows(self, rows: np.ndarray, tag_bags: np.ndarray | None) -> dict[str, np.ndarray]:
        """The side arrays of user ``rows`` under the batch keys the user tower reads."""
        out: dict[str, np.ndarray] = {}
        if self.friends is not None and self.friend_weights is not None:
            out["friends"] = self.friends[rows]
            out["friend_weights"] = self.friend_weights[rows]
        if tag_bags is not None:
            out["user_tags"] = tag_bags[rows]
        return out


def tag_vocab(artist_tags: list[str], assignments: pd.DataFrame) -> Vocab:
    """The tag vocabulary when user tags are read: artist tags and the kept assignments'
    tags (every name seen at least twice), so a user's tag and an artist's share a vector."""
    return Vocab.build([*artist_tags, *assignments["tag"].tolist()], min_count=2)


def build_user_side(
    matrix: sp.csr_matrix,  # (U, A) the training matrix, sorted indices
    user_ids: np.ndarray,
    friends: pa.Table | None,
    friends_len: int,
    assignments: pd.DataFrame | None,  # training_tag_assignments(matrix, ...)
    tags: Vocab | None,
    user_tags_len: int,
) -> UserSide:
    """The side inputs for ``matrix``'s users; ``friends_len`` / ``user_tags_len`` 0: off."""
    m = matrix.tocsr()
    entry_user = np.repeat(np.arange(m.shape[0]), np.diff(m.indptr))
    f_ids = f_w = None
    if friends_len > 0:
        if friends is None:
            raise ValueError(f"friends_len={friends_len} needs a friends table")
        f_ids, f_w = friend_bags(m, user_ids, friends, friends_len)
    t_entry = t_index = t_key = None
    if user_tags_len > 0:
        if assignments is None or tags is None:
            raise ValueError(f"user_tags_len={user_tags_len} needs user tags")
        idx = tags.encode(assignments["tag"].tolist())  # (M,)
        ok = idx >= N_SPECIAL  # unknown tags (seen once) are dropped
        t_entry = assignments["entry"].to_numpy(np.int64)[ok]
        t_index = idx[ok].astype(np.int64)
        user = entry_user[t_entry]
        pair = pd.DataFrame({"user": user, "tag": t_index})
        uses = pair.groupby(["user", "tag"])["tag"].transform("size").to_numpy()  # (M,)
        t_key = -uses.astype(np.float64) + t_index / (t_index.max() + 1.0)  # most used first
    return UserSide(
        n_users=m.shape[0],
        friends=f_ids,
        friend_weights=f_w,
        tag_entry=t_entry,
        tag_index=t_index,
        tag_key=t_key,
        entry_user=entry_user,
        user_tags_len=user_tags_len,
    )
