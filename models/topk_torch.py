"""The torch variants of :mod:`models.topk`, for the two-tower and for evaluation.

Same contract as :func:`models.topk.top_k`: best-first column indices, excluded entries never
returned. Kept apart so that the non-neural baselines never import torch.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch


def partition_torch(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """A :data:`models.topk.Partition` by ``torch.topk`` (multi-threaded, ~15x argpartition)."""
    values, indices = torch.topk(torch.from_numpy(scores), k, dim=1)  # (U, k) each
    return indices.numpy(), values.numpy()


def top_k_vectors(
    user_vecs: torch.Tensor,  # (U, d)
    artist_vecs: torch.Tensor,  # (A, d), row = vocab index
    seen: Sequence[np.ndarray] | None,
    k: int,
    never: Sequence[int] = (),
    chunk: int = 2048,
) -> np.ndarray:
    """(U, k) artist rows by dot product, best first, on the vectors' device (validation on a
    GPU never copies a (U, A) score matrix to the host); ``never`` and each user's ``seen``
    (negative entries ignored) are never returned."""
    out = []
    for s in range(0, len(user_vecs), chunk):
        scores = user_vecs[s : s + chunk].float() @ artist_vecs.float().T  # (u, A)
        if never:
            scores[:, list(never)] = -torch.inf
        if seen is not None:
            for i, idx in enumerate(seen[s : s + chunk]):
                idx = idx[idx >= 0]
                if len(idx):
                    scores[i, torch.from_numpy(idx)] = -torch.inf
        out.append(torch.topk(scores, k, dim=1).indices.cpu().numpy())  # (u, k)
    return np.concatenate(out) if out else np.zeros((0, k), dtype=np.int64)
