"""Canary and shadow routing: a pure function of a key, the share and the aliases.

A record goes to the challenger when the hash of its routing key (entity id,
else request id) falls below the canary share, so the same key always sees the
same model while the share is unchanged, and raising the share only moves keys
from the champion to the challenger. Share 0 is shadow mode: the champion
answers every record and the challenger predicts the same records for the log.

The hash is keyed with a server-side secret (`routing_secret`): without it, anyone
who knows the public model name could compute which ids reach the challenger and
steer traffic (and so its live metrics) at will.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from config.names import CHALLENGER, CHAMPION, Role


@dataclass(frozen=True)
class Route:
    """Who answers a record, and whether the challenger also predicts it in the shadow."""

    answer: Role
    shadow: bool = False


SALT_FILE = "routing_salt"
SALT_BYTES = 32


def bucket(key: str, salt: str = "") -> float:
    """A stable number in [0, 1) for a key: the first 8 bytes of its HMAC-SHA256 by `salt`."""
    digest = hmac.new(salt.encode(), key.encode(), hashlib.sha256).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def routing_secret(configured: str | None, state_dir: Path) -> str:
    """The secret that keys canary assignment: `configured`, else one kept in `state_dir`.

    The first call creates a random secret in ``state_dir/routing_salt`` (owner-only
    permissions; written whole, then linked into place, so concurrent starts agree on
    one); later calls and restarts read it back, so assignment stays sticky. Never
    derived from public data.
    """
    if configured:
        return configured
    path = state_dir / SALT_FILE
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{SALT_FILE}.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w", encoding="ascii") as out:
                out.write(secrets.token_hex(SALT_BYTES) + "\n")
                out.flush()
                os.fsync(out.fileno())
            with contextlib.suppress(FileExistsError):  # another process won: use theirs
                os.link(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
    text = path.read_text(encoding="ascii").strip()
    if len(text) < 2 * SALT_BYTES:
        raise ValueError(
            f"routing salt file {path} is truncated: delete it (a new one is created and "
            "canary assignment reshuffles once) or set DRIFTLOOP_ROUTING_SALT"
        )
    return text


def model_salt(secret: str, model_name: str) -> str:
    """One salt per model from the service secret (two models split traffic independently)."""
    return f"{secret}:{model_name}"


def route(key: str, canary_share: float, has_challenger: bool, salt: str = "") -> Route:
    """Champion, challenger (canary share) or champion + shadow challenger (share 0)."""
    if not has_challenger:
        return Route(CHAMPION)
    if canary_share <= 0.0:
        return Route(CHAMPION, shadow=True)
    if bucket(key, salt) < canary_share:
        return Route(CHALLENGER)
    return Route(CHAMPION)
