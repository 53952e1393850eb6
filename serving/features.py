"""What serving needs from the online feature store.

The encoding of feature rows into user-tower inputs is shared with training:
:class:`data.features.encoding.FeatureEncoder`.
"""

from __future__ import annotations

from typing import Any, Protocol


class OnlineStore(Protocol):
    """What serving needs from ``data.features.online_store`` (docs/CONTRACTS.md "Online store")."""

    def get(self, user_key: str) -> dict[str, Any] | None: ...

    def sample(self, timeout_s: float = 1.0) -> dict[str, Any] | None:
        """One stored row read fresh, None when empty; raises when the store is unreadable."""
        ...

    def close(self) -> None: ...
