"""When a peer dispatcher counts as dead: its heartbeat count stood still while we watched for long enough.

A watcher compares each peer's count with its own earlier readings, timed by its own clock, so clock skew
between machines plays no part. Only readings taken without a break count: after the watcher itself lost
the database, every peer gets the full time again (they were most likely cut off too, and are alive).
"""

from __future__ import annotations

from collections.abc import Mapping

__all__ = ("PeerWatch",)


class PeerWatch:
    """The peers' heartbeat counts as last seen changing, and when (on the watcher's monotonic clock)."""

    def __init__(self, timeout: float) -> None:
        self._timeout = timeout
        self._seen: dict[str, tuple[int, float]] = {}

    def observe(self, beats: Mapping[str, int], now: float) -> dict[str, int]:
        """Record a reading; the peers silent for ``timeout`` seconds since, with the count they stopped at."""
        seen = {}
        for owner, count in beats.items():
            last = self._seen.get(owner)
            seen[owner] = last if last is not None and last[0] == count else (count, now)
        self._seen = seen  # peers gone from the table are forgotten
        return {owner: count for owner, (count, since) in seen.items() if now - since >= self._timeout}

    def forget(self) -> None:
        """The watcher missed a reading: what it saw before no longer proves anything."""
        self._seen = {}
