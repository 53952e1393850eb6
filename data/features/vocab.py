"""Vocabularies: string id -> dense index, with index 0 = "<pad>" and 1 = "<unk>" everywhere.

Serving reads the same lists from the bundle's ``vocab.json``, so the index of a value is its
position in the list there and here.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from core.constants import PAD, UNK, UNK_INDEX
from data.schemas import USER_SEGMENT_FIELDS


@dataclass(frozen=True)
class Vocab:
    tokens: tuple[str, ...]
    _index: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.tokens[:2] != (PAD, UNK):
            raise ValueError(
                f"a vocabulary must start with {PAD!r}, {UNK!r}; got {self.tokens[:2]}"
            )
        object.__setattr__(self, "_index", {t: i for i, t in enumerate(self.tokens)})

    @classmethod
    def build(cls, values: Iterable[str | None], min_count: int = 1) -> Vocab:
        """Most frequent first (ties by value), so small indices are the common values."""
        counts = Counter(v for v in values if v is not None and v not in (PAD, UNK))
        kept = sorted(
            (v for v, c in counts.items() if c >= min_count), key=lambda v: (-counts[v], v)
        )
        return cls((PAD, UNK, *kept))

    def __len__(self) -> int:
        return len(self.tokens)

    def encode(self, values: Sequence[str | None] | pa.Array | pa.ChunkedArray) -> np.ndarray:
        """Indices as int64; unknown values and nulls map to ``UNK_INDEX``."""
        if isinstance(values, pa.ChunkedArray | pa.Array):
            values = values.to_pylist()
        get = self._index.get
        # a None (null) is never a key, so it maps to UNK_INDEX like any unknown value
        codes = (get(v, UNK_INDEX) for v in values)  # type: ignore[arg-type]
        return np.fromiter(codes, dtype=np.int64, count=len(values))

    def encode_arrow(self, values: pa.Array | pa.ChunkedArray) -> np.ndarray:
        """Vectorised :meth:`encode` for large string arrays (same result)."""
        lookup = pa.array(self.tokens, pa.string())
        idx = pc.index_in(values, value_set=lookup)
        return pc.fill_null(idx, UNK_INDEX).to_numpy(zero_copy_only=False).astype(np.int64)


@dataclass(frozen=True)
class FeatureVocabs:
    artists: Vocab
    tags: Vocab
    segments: Mapping[str, Vocab]  # field -> vocab, in the model's segment order

    @property
    def segment_fields(self) -> tuple[str, ...]:
        return tuple(self.segments)

    def to_json(self) -> dict:
        return {
            "artists": list(self.artists.tokens),
            "tags": list(self.tags.tokens),
            "segments": {f: list(v.tokens) for f, v in self.segments.items()},
            # JSON writers sort keys; the model's segment order is this list
            "segment_fields": list(self.segments),
        }

    @classmethod
    def from_json(cls, obj: Mapping) -> FeatureVocabs:
        for key in ("artists", "segments"):
            if key not in obj:
                raise ValueError(f"vocab.json has no {key!r}; found: {', '.join(obj)}")
        order = obj.get("segment_fields", list(obj["segments"]))
        return cls(
            artists=Vocab(tuple(obj["artists"])),
            tags=Vocab(tuple(obj.get("tags", (PAD, UNK)))),
            segments={f: Vocab(tuple(obj["segments"][f])) for f in order},
        )


def build_vocabs(
    artist_features: pa.Table,
    examples: pa.Table,
    segment_fields: Sequence[str] = USER_SEGMENT_FIELDS,
    min_tag_count: int = 2,
) -> FeatureVocabs:
    """Artists from the catalogue plus any artist seen in training examples; tags from the
    catalogue; one vocabulary per segment field from the training examples."""
    for col in ("artist_id", "tags"):
        if col not in artist_features.column_names:
            raise ValueError(f"artist features have no {col!r} column")
    missing = [f for f in ("artist_id", *segment_fields) if f not in examples.column_names]
    if missing:
        raise ValueError(f"examples have no columns {missing}; found: {examples.column_names}")
    artist_values = [
        *artist_features.column("artist_id").to_pylist(),
        *examples.column("artist_id").to_pylist(),
    ]
    tags = pc.list_flatten(artist_features.column("tags")).to_pylist()
    return FeatureVocabs(
        artists=Vocab.build(artist_values),
        tags=Vocab.build(tags, min_count=min_tag_count),
        segments={f: Vocab.build(examples.column(f).to_pylist()) for f in segment_fields},
    )
