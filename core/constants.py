"""Constants more than one package relies on; each defined here once."""

from __future__ import annotations

DAY_MS = 86_400_000  # one day in epoch milliseconds

# Every vocabulary (artists, tags, segment values) starts with these two tokens, so a value's
# index is its position in ``vocab.json`` and artist column ``c`` of a model is vocab index
# ``c + N_SPECIAL``. Index 0 pads histories; index 1 stands for anything unknown.
PAD, UNK = "<pad>", "<unk>"
PAD_INDEX, UNK_INDEX = 0, 1
N_SPECIAL = 2
