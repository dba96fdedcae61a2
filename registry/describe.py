"""What the MLflow UI shows about the lifecycle: version and model descriptions.

Every alias move rewrites the description of each version it touched and of the
registered model, so a person opening the registry sees which version serves, since
when and why (with the figures) without opening a tag box. Pure functions of a move
and the aliases after it; `Registry` writes them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from config.names import CHALLENGER, CHAMPION, PREVIOUS
from registry.history import AliasMove

_ROLES = {
    CHAMPION: "serves every request (but the challenger's share)",
    CHALLENGER: "judged live on its share of traffic before it can be promoted",
    PREVIOUS: "the rollback target: `driftloop rollback` makes it champion again",
}


def when(iso: str) -> str:
    """``2026-12-01T15:04:05+00:00`` → ``2026-12-01 15:04 UTC``."""
    date, _, clock = iso.partition("T")
    return f"{date} {clock[:5]} UTC" if clock else iso


def figures_line(figures: Mapping[str, Any], limit: int = 12) -> str:
    """``rmse 28.41 · drift_share 0.36 …`` — the move's figures, rounded, at most `limit`."""
    shown = []
    for key, value in list(figures.items())[:limit]:
        if isinstance(value, float):
            shown.append(f"{key} {value:.4g}")
        elif value is not None and not isinstance(value, dict | list):
            shown.append(f"{key} {value}")
    return " · ".join(shown)


def version_description(
    version: str, aliases_now: Mapping[str, str], move: AliasMove, rolled_back: str | None
) -> str:
    """The description of `version` right after `move`: its role now, since when and why,
    the move's figures, and a warning when a rollback took it off champion."""
    mine = sorted(alias for alias, v in aliases_now.items() if v == version)
    gained = sorted(a for a, (_, new) in move.moves.items() if new == version)
    lines = []
    if mine:
        lines.append(
            f"**v{version} is {' and '.join(mine)}** — " + "; ".join(_ROLES[a] for a in mine)
        )
    else:
        lines.append(f"**v{version} has no alias**: it is not served.")
    if gained:
        lines.append(
            f"{', '.join(gained).capitalize()} since {when(move.at)}, by `{move.action}` "
            f"({move.actor}): {move.reason}"
        )
    else:
        lost = sorted(a for a, (old, _) in move.moves.items() if old == version)
        lines.append(
            f"Lost {', '.join(lost)} at {when(move.at)} by `{move.action}` "
            f"({move.actor}): {move.reason}"
        )
    figures = figures_line(move.figures)
    if figures:
        lines.append(f"Figures of that decision: {figures}")
    if rolled_back:
        lines.append(
            f"⚠ Rolled back ({rolled_back}). "
            + (
                "It is `previous`: a `driftloop rollback` would make this version champion again."
                if aliases_now.get(PREVIOUS) == version
                else "Promote it again only on new evidence."
            )
        )
    if move.decision_id:
        lines.append(f"Decision `{move.decision_id}`; all decisions: `driftloop history`.")
    return "\n\n".join(lines)


def model_description(
    aliases_now: Mapping[str, str], move: AliasMove, rolled_back: Mapping[str, str]
) -> str:
    """The registered model's description: who holds which alias and the last decision."""
    lines = ["Managed by driftloop: aliases champion / challenger / previous."]
    for alias in (CHAMPION, CHALLENGER, PREVIOUS):
        version = aliases_now.get(alias)
        if version is None:
            continue
        note = f" (⚠ rolled back {rolled_back[version]})" if version in rolled_back else ""
        lines.append(f"- **{alias}: v{version}**{note}")
    lines.append(f"Last decision {when(move.at)}: `{move.action}` by {move.actor} — {move.reason}")
    return "\n\n".join(lines)
