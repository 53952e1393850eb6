"""Warm start: begin a new two-tower from the champion's weights instead of from random ones.

Vocabularies change from one day to the next (new artists, new tags, new segment values), so
embedding tables are copied row by row *by token*: an artist, tag or segment value the champion
knew starts where the champion left it; a new one keeps its fresh initialisation. Every other
weight (pooling, projections, MLPs) is copied when its shape is unchanged. The data-derived
buffers (each artist's tags, popularity) always come from today's data, never the champion's.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from data.features.vocab import FeatureVocabs, Vocab
from models.two_tower import TwoTower
from training.inference import load_run

log = logging.getLogger("tastemaker.training")
DATA_BUFFERS = ("artist_tower.tag_table", "artist_tower.popularity", "user_tower.tag_table")


def _copy_rows(dst: torch.Tensor, src: torch.Tensor, new: Vocab, old: Vocab) -> int:
    """Rows of ``src`` (indexed by ``old``) into ``dst`` (indexed by ``new``) for shared tokens."""
    index = {t: i for i, t in enumerate(old.tokens)}
    pairs = [(i, index[t]) for i, t in enumerate(new.tokens) if t in index]  # <pad>, <unk> too
    if pairs:
        rows_new = torch.tensor([p[0] for p in pairs])
        rows_old = torch.tensor([p[1] for p in pairs])
        dst[rows_new] = src[rows_old]
    return len(pairs)


@torch.no_grad()
def warm_start(model: TwoTower, vocabs: FeatureVocabs, champion_run: str | Path) -> dict[str, int]:
    """Copy the champion's weights into ``model`` (built for ``vocabs``); returns counts of
    copied artist/tag/segment rows and whole tensors, and of tensors left fresh."""
    champion = load_run(champion_run)
    src, dst = champion.model.state_dict(), model.state_dict()
    counts = {"artists": 0, "tags": 0, "segment_values": 0, "tensors": 0, "fresh": 0}
    seg_fields = list(vocabs.segments)
    for name, tensor in dst.items():
        if name in DATA_BUFFERS or name not in src:
            continue
        old = src[name]
        if old.shape[1:] != tensor.shape[1:]:  # another width (dim, members): start fresh
            counts["fresh"] += 1
        elif name.endswith("artist_embedding.weight"):
            n = _copy_rows(tensor, old, vocabs.artists, champion.vocabs.artists)
            counts["artists"] = max(counts["artists"], n)  # one table, shared by both towers
        elif name.endswith("tag_embedding.weight"):
            counts["tags"] = _copy_rows(tensor, old, vocabs.tags, champion.vocabs.tags)
        elif ".segment_embeddings." in name:
            i = int(name.split(".segment_embeddings.")[1].split(".")[0])
            field = seg_fields[i] if i < len(seg_fields) else None
            if field is not None and field in champion.vocabs.segments:
                counts["segment_values"] += _copy_rows(
                    tensor, old, vocabs.segments[field], champion.vocabs.segments[field]
                )
            else:
                counts["fresh"] += 1
        elif old.shape == tensor.shape:
            tensor.copy_(old)
            counts["tensors"] += 1
        else:
            counts["fresh"] += 1
    model.load_state_dict(dst)
    log.info("warm start from %s: %s", Path(champion_run).name, counts)
    return counts
