"""How a version's tags are stored: a short, fixed set a person reads, one for the code.

The MLflow UI shows every version tag in one box. driftloop writes this fixed set
(the first six on every version, the rest when they apply):

========== ===========================================================================
``family``  ``sklearn`` / ``torch``
``task``    ``regression`` / ``classification``
``data``    what it was trained on: file, time range, digest, validation
``holdout`` its holdout figures, and the version it was compared with
``gate``    the gate's decision at training (``challenger: rmse 30.1 vs 32.9 …``)
``bento``   the Bento that serves it (``<model>-service:v<N>``)
``status``  its last alias move: ``champion since 2026-12-01 15:04 UTC — promote: …``
``monitor`` the last monitor decision about it while champion
``retired`` / ``rolled_back``  why it was taken off challenger / off champion
``driftloop``  everything else, for the code: one JSON object (data source argument,
            time range, contract revision, decision threshold, registration key,
            alias times, …)
========== ===========================================================================

Callers keep one flat vocabulary (`gate_decision`, `bento_tag`, `champion_since`,
`data_digest`, …): `stored_tags` turns a flat dict into the tags to write, and
`flat_tags` turns stored tags back into the flat view `VersionInfo.tags` offers.
Versions registered before this layout carry one tag per key; `flat_tags` reads them
the same way, and a later write adds the new tags beside them.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from datetime import UTC, datetime

DETAILS_TAG = "driftloop"
"""The one machine-readable tag: a JSON object of the keys without a readable tag."""

ROLLED_BACK_TAG = "rolled_back"
"""Version tag set on a champion that a rollback replaced: ``<time>: <reason>``."""

RETIRED_TAG = "retired"

# Readable tags stored under the same name as the flat key.
_OWN = ("family", "task", RETIRED_TAG, ROLLED_BACK_TAG)
# Readable tag → the flat key callers use for it.
_RENAMED = {
    "gate": "gate_decision",
    "bento": "bento_tag",
    "status": "last_decision",
    "monitor": "last_monitor_decision",
}
_READABLE_OF = {flat: readable for readable, flat in _RENAMED.items()}
# Readable tags made from other keys (written at registration, never read back).
_DERIVED = ("data", "holdout")

TAG_VALUE_LIMIT = 4900
"""MLflow refuses version tag values over 5,000 characters."""
_DETAIL_LIMIT = 600  # one value inside the JSON tag (a widened contract's summary can be long)


def flat_tags(stored: Mapping[str, str]) -> dict[str, str]:
    """The flat view of a version's stored tags (old one-tag-per-key versions included)."""
    flat = {k: v for k, v in stored.items() if k != DETAILS_TAG and k not in _DERIVED}
    raw = stored.get(DETAILS_TAG)
    if raw:
        try:
            details = json.loads(raw)
        except ValueError:
            details = {}
        if isinstance(details, dict):
            flat.update({str(k): str(v) for k, v in details.items()})
    for readable, key in _RENAMED.items():
        if readable in stored:
            flat[key] = stored[readable]
            flat.pop(readable, None)
    return flat


def stored_tags(
    updates: Mapping[str, object], current: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The tags to write for `updates` (flat keys) on a version whose stored tags are
    `current` (None: a new version, which also gets the readable `data` and `holdout`)."""
    out: dict[str, str] = {}
    details: dict[str, str] = {}
    for key, value in updates.items():
        text = str(value)
        if key in _OWN:
            out[key] = text[:TAG_VALUE_LIMIT]
        elif key in _READABLE_OF:
            out[_READABLE_OF[key]] = text[:TAG_VALUE_LIMIT]
        else:
            details[key] = text if len(text) <= _DETAIL_LIMIT else text[: _DETAIL_LIMIT - 1] + "…"
    if details:
        merged = _details(current) if current is not None else {}
        merged.update(details)
        out[DETAILS_TAG] = _json(merged)
    if current is None:
        out["data"] = data_line(updates)
        out["holdout"] = holdout_line(updates)
    return out


def all_readable(keys: object) -> bool:
    """True when every key has its own readable tag (no JSON details to merge)."""
    return all(key in _OWN or key in _READABLE_OF for key in keys)  # type: ignore[attr-defined]


def lookup_filter(key: str, value: str) -> str:
    """A `search_model_versions` filter for versions whose JSON details hold key=value
    (a LIKE on the JSON text; callers confirm the match on the flat view)."""
    return f"tags.`{DETAILS_TAG}` LIKE '%{_json({key: value})[1:-1]}%'"


def data_line(tags: Mapping[str, object]) -> str:
    """``Bikeshare.csv 2011-01-01 → 2011-03-31 · digest 1a2b3c4d · validation passed
    (41 checks) · + live rows of check 5f…`` — what the version was trained on."""
    get = {k: str(v) for k, v in tags.items()}.get
    source = get("data_source_arg") or get("data_source") or ""
    parts = [os.path.basename(source.rstrip("/")) or source or "data"]
    start, end = _day(get("time_from")), _day(get("time_until"))
    if start or end:
        parts[0] += f" {start or '…'} → {end or '…'}"
    if get("data_digest"):
        parts.append(f"digest {get('data_digest', '')[:12]}")
    if get("validation"):
        checks = get("validation_checks")
        parts.append(f"validation {get('validation')}" + (f" ({checks} checks)" if checks else ""))
    if get("recent_rows_added"):
        parts.append("+ recent live rows")
    if get("shuffled_labels") == "true":
        parts.append("LABELS SHUFFLED (demo of a bad version)")
    return " · ".join(parts)[:TAG_VALUE_LIMIT]


def holdout_line(tags: Mapping[str, object]) -> str:
    """``rmse 32.93 · mae 21.07 · r2 0.712 · compared with v2`` — holdout figures."""
    shown = []
    for key, value in tags.items():
        if key.startswith("holdout_"):
            try:
                shown.append(f"{key.removeprefix('holdout_')} {float(str(value)):.4g}")
            except ValueError:
                shown.append(f"{key.removeprefix('holdout_')} {value}")
    parent = str(tags.get("parent_version") or "")
    if parent:
        shown.append(f"compared with v{parent} on the same holdout")
    return " · ".join(shown)[:TAG_VALUE_LIMIT]


def _details(current: Mapping[str, str]) -> dict[str, str]:
    raw = current.get(DETAILS_TAG)
    try:
        details = json.loads(raw) if raw else {}
    except ValueError:
        details = {}
    return details if isinstance(details, dict) else {}


def _json(details: Mapping[str, str]) -> str:
    text = json.dumps(dict(details), sort_keys=True, ensure_ascii=False)
    if len(text) > TAG_VALUE_LIMIT:
        longest = max(details, key=lambda k: len(str(details[k])))
        raise ValueError(
            f"the version details are {len(text)} characters, MLflow keeps "
            f"{TAG_VALUE_LIMIT} per tag (longest value: {longest!r})"
        )
    return text


def _day(value: str | None) -> str:
    """An epoch-seconds or ISO time bound as a date (``2011-03-31``); '' when unset."""
    if not value:
        return ""
    try:
        seconds = float(value)
    except ValueError:
        return value[:10]
    if not math.isfinite(seconds):
        return ""
    return datetime.fromtimestamp(seconds, tz=UTC).strftime("%Y-%m-%d")
