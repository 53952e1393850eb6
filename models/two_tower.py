"""Two-tower retrieval model: a user tower and an artist tower meeting in one vector space.

The user tower reads what the user streamed (a history of artist vocabulary indices, most
recent first), their segment (categorical fields) and a few dense engagement features; the
artist tower reads the artist's id, tags and popularity. Each tower either ends in an MLP or
sums its parts (``user_mlp`` / ``artist_mlp`` off: the measured HetRec default), then an L2
normalisation, so a dot product is a cosine similarity and retrieval is an inner-product search.
An artist whose id was never trained (a new catalogue entry) has a zero id embedding, so its
vector is its tag bag: ``id_dropout`` trains the tag bag to stand on its own.

Ideas from:
- Covington, Adams, Sargin (2016), "Deep Neural Networks for YouTube Recommendations": the user
  is a pooled bag of watched-item embeddings concatenated with demographic features, fed to an
  MLP; retrieval is a nearest-neighbour search on the output vector.
- Yi et al. (2019), "Sampling-Bias-Corrected Neural Modeling for Large Corpus Item
  Recommendations": two L2-normalised towers trained with in-batch softmax, temperature and a
  logQ correction (see ``models.losses``).

The artist id embedding table is shared between the user's history and the artist tower, so
an artist a user streamed and the same artist as a candidate start from the same vector.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from core.constants import N_SPECIAL

POOLINGS = ("mean", "attention", "self-attention")
_NEG = -1e9  # finite "minus infinity": keeps ONNX graphs free of inf/NaN on empty histories


@dataclass(frozen=True)
class TwoTowerConfig:
    n_artists: int  # artist vocabulary size, index 0 = <pad>, 1 = <unk>
    n_tags: int = 2  # tag vocabulary size, same specials
    segment_cardinalities: tuple[int, ...] = ()  # vocab size per segment field (order matters)
    n_dense: int = 0
    history_len: int = 100
    tags_per_artist: int = 8
    dim: int = 64  # output vector size
    embed_dim: int = 64  # artist / tag embedding size
    segment_dim: int = 8
    hidden: int = 128
    # "mean" | "attention" (mean + recency-aware attention) | "self-attention" (one
    # single-head self-attention layer over the ordered history with position embeddings,
    # residual, then the mean: an order-aware set encoder)
    pooling: str = "attention"
    item_dropout: float = 0.0  # training only: drop history items (denoising)
    dropout: float = 0.0  # MLP dropout
    use_dense: bool = True  # False: the dense input keeps its (B, n_dense) shape but is ignored
    artist_mlp: bool = (
        True  # False: artist vector = id embedding + tag bag (needs embed_dim == dim)
    )
    # False: user vector = pooled history + segment embeddings + a linear map of the dense
    # features, summed (needs embed_dim == dim); HetRec: an MLP on the pooled history is worse
    user_mlp: bool = True
    use_tags: bool = True  # False: the artist tower ignores tags (ablation)
    # training only: the id embedding of a random share of candidate artists is zeroed, so the
    # tag bag alone must place an artist (what a catalogue artist never trained on gets)
    id_dropout: float = 0.0
    # each distinct artist of a history counts once (a bag, like the masked training halves)
    # rather than once per stream: serving histories repeat a favourite artist many times
    dedupe_history: bool = True
    # an ensemble in one model: the vectors are ``members`` independent blocks of
    # ``dim // members`` entries, each L2-normalised and trained by its own loss, concatenated
    # and scaled by 1/sqrt(members), so a dot product is the members' mean cosine (one ONNX
    # tower and one index serve the average of K models); needs pooling "mean" and no MLPs
    members: int = 1
    # the user tower reads each history artist as the artist tower does (id embedding + the
    # mean of its tag embeddings), not by its id alone
    history_tags: bool = False
    # > 0: the user tower also reads up to this many followed artists (most recent follow
    # first), mean-pooled from the shared artist id table and added (no MLP) or concatenated
    # (MLP) through a learned gate; 0 (default): no follows input
    follows_len: int = 0
    # > 0: the user tower also reads a weighted bag of up to this many artists of the user's
    # friends (their training artists only), pooled from the shared artist id table through a
    # learned gate starting at 0 (an interactions file with a friends file; 0: no such input)
    friends_len: int = 0
    # > 0: the user tower also reads up to this many of the user's own tag assignments (tags
    # the user put on their own training artists, repeats weighting a tag), pooled from the
    # artist tower's tag table through a learned gate starting at 0 (0: no such input)
    user_tags_len: int = 0

    def __post_init__(self) -> None:
        if self.members > 1 and (self.friends_len > 0 or self.user_tags_len > 0):
            raise ValueError("members > 1 does not support friends_len / user_tags_len inputs")
        if self.members < 1:
            raise ValueError(f"members must be >= 1, got {self.members}")
        if self.members > 1:
            if self.dim % self.members:
                raise ValueError(f"dim {self.dim} is not divisible by members {self.members}")
            if self.pooling != "mean" or self.user_mlp or self.artist_mlp:
                raise ValueError(
                    "members > 1 needs pooling='mean', user_mlp=False and artist_mlp=False "
                    "(every operation must act on each member's block alone)"
                )


def normalize_members(x: torch.Tensor, members: int) -> torch.Tensor:
    """(B, d) -> (B, d): each of the ``members`` blocks L2-normalised, all scaled by
    1/sqrt(members) (one block: a plain L2 normalisation)."""
    if members == 1:
        return F.normalize(x, dim=-1)
    blocks = F.normalize(x.reshape(x.shape[0], members, -1), dim=-1)  # (B, K, d/K)
    return blocks.reshape(x.shape[0], -1) / math.sqrt(members)  # (B, d)


def _mlp(n_in: int, hidden: int, n_out: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(n_in, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, n_out)
    )


def _weighted_sum(ids: torch.Tensor, table: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """(B, K) indices, (A, e) table, (B, K) weights -> (B, e) sum of weighted rows, without
    materialising (B, K, e) outside an ONNX export."""
    if torch.onnx.is_in_onnx_export():
        return (F.embedding(ids, table) * w.unsqueeze(-1)).sum(1)
    return F.embedding_bag(ids, table, per_sample_weights=w, mode="sum")


class UserTower(nn.Module):
    """``forward(history (B, L) int64, segments (B, S) int64, dense (B, D) float32) -> (B, d)``.

    History pooling ("attention"): the mean of the valid items, concatenated with a pool whose
    logits are a learned per-position bias (recency) plus a learned per-item relevance score.
    """

    tag_table: torch.Tensor  # (A, T) buffer, only with ``history_tags``
    tag_embedding: nn.Embedding  # the artist tower's, only with ``history_tags``
    user_tag_embedding: nn.Embedding  # the artist tower's tag table, only with user_tags_len

    def __init__(self, config: TwoTowerConfig, artist_embedding: nn.Embedding) -> None:
        super().__init__()
        self.with_tags = bool(config.history_tags and config.use_tags)
        if config.pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {config.pooling!r}")
        self.config = config
        self.artist_embedding = artist_embedding
        n_pool = 2 if config.pooling == "attention" else 1
        if not config.user_mlp and n_pool * config.embed_dim != config.dim:
            raise ValueError(
                f"user_mlp=False needs the pooled history ({n_pool} x embed_dim "
                f"{config.embed_dim}) to have dim {config.dim} entries; use pooling='mean' and "
                "embed_dim == dim"
            )
        seg_dim = config.segment_dim if config.user_mlp else config.dim
        tables = [nn.Embedding(n, seg_dim) for n in config.segment_cardinalities]
        for table in tables:
            if not config.user_mlp:
                nn.init.zeros_(table.weight)  # start as the history alone; learn what helps
        self.segment_embeddings = nn.ModuleList(tables)
        if config.pooling == "attention":
            self.position_bias = nn.Parameter(torch.zeros(config.history_len))
            self.item_score = nn.Linear(config.embed_dim, 1)
        if config.pooling == "self-attention":
            e = config.embed_dim
            self.position = nn.Parameter(torch.zeros(config.history_len, e))
            self.norm = nn.LayerNorm(e)
            self.qkv = nn.Linear(e, 3 * e)
            self.attn_out = nn.Linear(e, e)
            nn.init.zeros_(self.attn_out.weight)  # starts as the plain mean; learns the rest
            nn.init.zeros_(self.attn_out.bias)
        n_dense = config.n_dense if config.use_dense else 0
        if config.follows_len > 0:
            # starts at 0: the model begins as the history alone and learns what follows add
            self.follows_gate = nn.Parameter(torch.zeros(config.embed_dim))
        n_follow = config.embed_dim if config.follows_len > 0 else 0
        if config.friends_len > 0:
            self.friends_gate = nn.Parameter(torch.zeros(config.embed_dim))  # history alone first
        if config.user_tags_len > 0:
            self.user_tags_gate = nn.Parameter(torch.zeros(config.embed_dim))
        n_side = config.embed_dim * ((config.friends_len > 0) + (config.user_tags_len > 0))
        if config.user_mlp:
            n_in = (
                n_pool * config.embed_dim
                + len(config.segment_cardinalities) * seg_dim
                + n_dense
                + n_follow
                + n_side
            )
            self.mlp = _mlp(n_in, config.hidden, config.dim, config.dropout)
        elif n_dense:
            self.dense_proj = nn.Linear(n_dense, config.dim, bias=False)
            nn.init.zeros_(self.dense_proj.weight)

    def pool_history(self, history: torch.Tensor) -> torch.Tensor:
        valid = history > 0  # (B, L)
        if self.training and self.config.item_dropout > 0:
            keep = torch.rand(history.shape, device=history.device) >= self.config.item_dropout
            valid = valid & keep  # (B, L)
        weight = self.artist_embedding.weight  # (A, e)
        w = valid.to(weight.dtype)  # (B, L)
        if self.config.dedupe_history:
            same = (history.unsqueeze(2) == history.unsqueeze(1)) & valid.unsqueeze(1)  # (B, L, L)
            w = w / same.sum(2).clamp(min=1).to(w.dtype)  # (B, L): 1 / copies of that artist
        count = w.sum(1, keepdim=True).clamp(min=1.0)  # (B, 1)
        if self.with_tags:
            tags = self.tag_table[history]  # (B, L, T)
            tag_w = (tags > 0).to(weight.dtype)  # (B, L, T)
            tag_w = tag_w / tag_w.sum(2, keepdim=True).clamp(min=1.0)  # each artist's tag mean
        if self.config.pooling == "mean" and not torch.onnx.is_in_onnx_export():
            # the same mean without materialising (B, L, e): 2x faster forward and backward
            pooled = F.embedding_bag(history, weight, per_sample_weights=w / count, mode="sum")
            if self.with_tags:
                tw = (tag_w * (w / count).unsqueeze(-1)).flatten(1)  # (B, L T)
                pooled = pooled + F.embedding_bag(
                    tags.flatten(1), self.tag_embedding.weight, per_sample_weights=tw, mode="sum"
                )  # (B, e)
            return pooled
        emb = self.artist_embedding(history)  # (B, L, e)
        if self.with_tags:
            emb = emb + (self.tag_embedding(tags) * tag_w.unsqueeze(-1)).sum(2)  # (B, L, e)
        mean = (emb * w.unsqueeze(-1)).sum(1) / count  # (B, e)
        if self.config.pooling == "mean":
            return mean
        length = history.shape[1]
        if self.config.pooling == "self-attention":
            x = emb + self.position[:length]  # (B, L, e)
            q, k, v = self.qkv(self.norm(x)).chunk(3, dim=-1)  # (B, L, e) each
            scores = q @ k.transpose(1, 2) / math.sqrt(q.shape[-1])  # (B, L, L)
            scores = scores.masked_fill(~valid.unsqueeze(1), _NEG)  # keys: valid items only
            mixed = self.attn_out(torch.softmax(scores, dim=-1) @ v)  # (B, L, e)
            return ((emb + mixed) * w.unsqueeze(-1)).sum(1) / count  # (B, e)
        logits = self.item_score(emb).squeeze(-1) + self.position_bias[:length]  # (B, L)
        logits = logits.masked_fill(~valid, _NEG)  # (B, L)
        attn = torch.softmax(logits, dim=1) * w  # (B, L), zero everywhere for empty history
        attended = (emb * attn.unsqueeze(-1)).sum(1)  # (B, e)
        return torch.cat([mean, attended], dim=1)  # (B, 2e)

    def pool_follows(self, follows: torch.Tensor) -> torch.Tensor:
        """(B, F) followed artist indices (0 = pad) -> (B, e) gated masked mean of their id
        embeddings (zero for a user who follows nobody)."""
        weight = self.artist_embedding.weight  # (A, e)
        w = (follows > 0).to(weight.dtype)  # (B, F)
        count = w.sum(1, keepdim=True).clamp(min=1.0)  # (B, 1)
        mean = (self.artist_embedding(follows) * w.unsqueeze(-1)).sum(1) / count  # (B, e)
        return mean * self.follows_gate  # (B, e)

    def pool_friends(self, friends: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """(B, F) friends' artist indices (0 = pad), (B, F) weights -> (B, e) gated weighted
        mean of their id embeddings (zero for a user without friends)."""
        weight = self.artist_embedding.weight  # (A, e)
        w = weights.to(weight.dtype) * (friends > 0).to(weight.dtype)  # (B, F)
        w = w / w.sum(1, keepdim=True).clamp(min=1e-6)  # (B, F) sums to 1 (or 0)
        return _weighted_sum(friends, weight, w) * self.friends_gate  # (B, e)

    def pool_user_tags(self, tags: torch.Tensor) -> torch.Tensor:
        """(B, T) the user's tag assignments as tag indices (0 = pad; a tag repeats once per
        artist it was put on) -> (B, e) gated mean of the shared tag embeddings."""
        table = self.user_tag_embedding.weight  # (G, e)
        w = (tags > 0).to(table.dtype)  # (B, T)
        w = w / w.sum(1, keepdim=True).clamp(min=1.0)  # (B, T)
        return _weighted_sum(tags, table, w) * self.user_tags_gate  # (B, e)

    def _side(
        self,
        friends: torch.Tensor | None,
        friend_weights: torch.Tensor | None,
        user_tags: torch.Tensor | None,
    ) -> list[torch.Tensor]:
        """The optional friends / own-tags parts, each (B, e), in that order."""
        out = []
        if self.config.friends_len > 0:
            if friends is None or friend_weights is None:
                raise ValueError(
                    f"friends_len={self.config.friends_len} needs friends and friend_weights"
                )
            out.append(self.pool_friends(friends, friend_weights))
        if self.config.user_tags_len > 0:
            if user_tags is None:
                raise ValueError(f"user_tags_len={self.config.user_tags_len} needs user_tags")
            out.append(self.pool_user_tags(user_tags))
        return out

    def forward(
        self,
        history: torch.Tensor,
        segments: torch.Tensor,
        dense: torch.Tensor,
        follows: torch.Tensor | None = None,
        friends: torch.Tensor | None = None,
        friend_weights: torch.Tensor | None = None,
        user_tags: torch.Tensor | None = None,
    ) -> torch.Tensor:
        pooled = self.pool_history(history)  # (B, e) or (B, 2e)
        use_dense = bool(self.config.n_dense and self.config.use_dense)
        followed = None
        if self.config.follows_len > 0:
            if follows is None:
                raise ValueError(f"follows_len={self.config.follows_len} needs a follows input")
            followed = self.pool_follows(follows)  # (B, e)
        side = self._side(friends, friend_weights, user_tags)  # [(B, e)]
        if not self.config.user_mlp:
            x = pooled if followed is None else pooled + followed  # (B, d)
            for part in side:
                x = x + part  # (B, d)
            for i, table in enumerate(self.segment_embeddings):
                x = x + table(segments[:, i])  # (B, d)
            if use_dense:
                x = x + self.dense_proj(dense.to(x.dtype))  # (B, d)
            return normalize_members(x, self.config.members)  # (B, d)
        parts = [pooled]
        for i, table in enumerate(self.segment_embeddings):
            parts.append(table(segments[:, i]))  # (B, s)
        if use_dense:
            parts.append(dense.to(pooled.dtype))  # (B, D)
        if followed is not None:
            parts.append(followed)  # (B, e)
        parts.extend(side)  # (B, e) each
        x = torch.cat(parts, dim=1)  # (B, n_in)
        return F.normalize(self.mlp(x), dim=-1)  # (B, d)


class ArtistTower(nn.Module):
    """``forward(artists (B,) int64) -> (B, d)``; the catalogue's tags and popularity are
    buffers indexed by vocabulary index, so the tower alone can embed the whole catalogue."""

    tag_table: torch.Tensor  # (A, T) buffer
    popularity: torch.Tensor  # (A,) buffer

    def __init__(
        self,
        config: TwoTowerConfig,
        artist_embedding: nn.Embedding,
        tag_table: torch.Tensor,  # (A, T) int64 tag indices per artist, 0 = pad
        popularity: torch.Tensor,  # (A,) float32 in [0, 1]
    ) -> None:
        super().__init__()
        if tag_table.shape[0] != config.n_artists or popularity.shape[0] != config.n_artists:
            raise ValueError(
                f"tag_table {tuple(tag_table.shape)} / popularity {tuple(popularity.shape)} "
                f"must have one row per artist (n_artists={config.n_artists})"
            )
        self.config = config
        self.artist_embedding = artist_embedding
        self.tag_embedding = nn.Embedding(config.n_tags, config.embed_dim, padding_idx=0)
        self.register_buffer("tag_table", tag_table.long())
        self.register_buffer("popularity", popularity.float())
        if not config.artist_mlp and config.embed_dim != config.dim:
            raise ValueError(
                f"artist_mlp=False needs embed_dim == dim, got {config.embed_dim} != {config.dim}"
            )
        if config.artist_mlp:
            self.mlp = _mlp(2 * config.embed_dim + 1, config.hidden, config.dim, config.dropout)

    def forward(self, artists: torch.Tensor) -> torch.Tensor:
        ids = self.artist_embedding(artists)  # (B, e)
        if self.training and self.config.id_dropout > 0:
            keep = torch.rand(artists.shape, device=ids.device) >= self.config.id_dropout  # (B,)
            ids = ids * keep.unsqueeze(-1).to(ids.dtype)  # (B, e)
        tags = self.tag_table[artists]  # (B, T)
        tag_w = ((tags > 0) & self.config.use_tags).to(ids.dtype)  # (B, T)
        tag_emb = self.tag_embedding(tags)  # (B, T, e)
        tag_bag = (tag_emb * tag_w.unsqueeze(-1)).sum(1) / tag_w.sum(1, keepdim=True).clamp(
            min=1.0
        )  # (B, e)
        if not self.config.artist_mlp:
            return normalize_members(ids + tag_bag, self.config.members)  # (B, d)
        pop = self.popularity[artists].unsqueeze(-1).to(ids.dtype)  # (B, 1)
        x = torch.cat([ids, tag_bag, pop], dim=1)  # (B, 2e + 1)
        return F.normalize(self.mlp(x), dim=-1)  # (B, d)

    def all_vectors(self, batch_size: int = 8192) -> torch.Tensor:
        """Vectors for every vocabulary index (rows 0/1 are <pad>/<unk>)."""
        device = self.tag_table.device
        out = [
            self(torch.arange(s, min(s + batch_size, self.config.n_artists), device=device))
            for s in range(0, self.config.n_artists, batch_size)
        ]
        return torch.cat(out)  # (A, d)


class TwoTower(nn.Module):
    """Both towers over one shared artist embedding table."""

    def __init__(
        self, config: TwoTowerConfig, tag_table: torch.Tensor, popularity: torch.Tensor
    ) -> None:
        super().__init__()
        self.config = config
        self.artist_embedding = nn.Embedding(config.n_artists, config.embed_dim, padding_idx=0)
        nn.init.normal_(self.artist_embedding.weight, std=0.05)
        with torch.no_grad():
            self.artist_embedding.weight[0].zero_()
        self.user_tower = UserTower(config, self.artist_embedding)
        self.artist_tower = ArtistTower(config, self.artist_embedding, tag_table, popularity)
        if self.user_tower.with_tags:  # one tag table and embedding, read by both towers
            self.user_tower.tag_embedding = self.artist_tower.tag_embedding
            self.user_tower.register_buffer("tag_table", tag_table.long())
        if config.user_tags_len > 0:  # the user's own tags live in the artists' tag space
            self.user_tower.user_tag_embedding = self.artist_tower.tag_embedding

    @torch.no_grad()
    def zero_untrained_ids(self, trained: torch.Tensor | np.ndarray) -> None:
        """An artist no training pair touched keeps its random initial id embedding: noise.
        Zero it, so the artist tower places that artist by its tag bag alone, as it does a
        catalogue artist added after training (``training.export.with_catalogue``)."""
        untrained = ~torch.as_tensor(trained, dtype=torch.bool)  # (A,)
        untrained[:N_SPECIAL] = (
            False  # <pad> stays zero by construction; <unk> keeps what it learnt
        )
        self.artist_embedding.weight[untrained] = 0.0
