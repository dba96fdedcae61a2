"""Canary and shadow routing: a pure function of a key, the share and the aliases.

A record goes to the challenger when the hash of its routing key (entity id,
else request id) falls below the canary share, so the same key always sees the
same model while the share is unchanged, and raising the share only moves keys
from the champion to the challenger. Share 0 is shadow mode: the champion
answers every record and the challenger predicts the same records for the log.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Literal

Role = Literal["champion", "challenger", "shadow"]
CHAMPION: Role = "champion"
CHALLENGER: Role = "challenger"
SHADOW: Role = "shadow"


@dataclass(frozen=True)
class Route:
    """Who answers a record, and whether the challenger also predicts it in the shadow."""

    answer: Role
    shadow: bool = False


def bucket(key: str, salt: str = "") -> float:
    """A stable number in [0, 1) for a key: the first 8 bytes of its SHA-256 digest."""
    digest = hashlib.sha256(f"{salt}\x00{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def route(key: str, canary_share: float, has_challenger: bool, salt: str = "") -> Route:
    """Champion, challenger (canary share) or champion + shadow challenger (share 0)."""
    if not has_challenger:
        return Route(CHAMPION)
    if canary_share <= 0.0:
        return Route(CHAMPION, shadow=True)
    if bucket(key, salt) < canary_share:
        return Route(CHALLENGER)
    return Route(CHAMPION)
