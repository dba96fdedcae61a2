"""The evaluation gate: which alias a newly registered version gets.

A pure function of the figures, so every branch is tested with plain data. The
new version and the champion are scored on the *same* holdout before this runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from config.names import CHALLENGER, CHAMPION
from monitoring.metrics import relative_gain

GateAlias = Literal["champion", "challenger"] | None


@dataclass(frozen=True)
class GateDecision:
    """The alias for the new version (None: registered, no alias) and why, with numbers."""

    alias: GateAlias
    reason: str
    improvement: float | None  # relative, positive = new is better; None without a champion


def gate(
    metric: str,
    new_score: float,
    champion_score: float | None,
    higher_is_better: bool,
    margin: float,
    policy: Literal["challenger", "auto"],
    champion_version: str | None = None,
    champion_error: str | None = None,
    losers_as_challenger: bool = False,
    compared_on: str = "the same holdout",
) -> GateDecision:
    """Decide the new version's alias.

    - no champion yet → champion;
    - the champion could not be scored on this holdout (schema changed) → challenger;
    - beats the champion by ≥ `margin` and policy is 'auto' → champion;
    - beats it by ≥ `margin` under policy 'challenger' → challenger, judged on live traffic;
    - does not beat it by the margin → registered without an alias (it would only take
      canary traffic and block drift retrains), unless `losers_as_challenger`.
    """
    if champion_version is None:
        return GateDecision(
            CHAMPION,
            f"first version: no champion to compare ({metric} {new_score:.4g} on the holdout)",
            None,
        )
    if champion_score is None:
        return GateDecision(
            CHALLENGER,
            f"champion v{champion_version} could not be scored on this holdout "
            f"({champion_error or 'unknown error'}); new version waits as challenger",
            None,
        )
    gain = relative_gain(new_score, champion_score, higher_is_better)
    comparison = (
        f"{metric} {new_score:.4g} vs champion v{champion_version} {champion_score:.4g} "
        f"on {compared_on} ({gain:+.1%}, margin {margin:.1%})"
    )
    return _by_margin(gain, comparison, margin, policy, losers_as_challenger)


def _by_margin(
    gain: float,
    comparison: str,
    margin: float,
    policy: Literal["challenger", "auto"],
    losers_as_challenger: bool,
) -> GateDecision:
    """The alias of a new version compared with the champion: `gain` against `margin`."""
    meets_margin = gain >= margin - 1e-9  # "at least the margin", robust to float error
    if meets_margin and policy == "auto":
        return GateDecision(CHAMPION, f"beats the champion: {comparison}; policy 'auto'", gain)
    if meets_margin:
        return GateDecision(
            CHALLENGER,
            f"beats the champion: {comparison}; policy 'challenger' waits for live traffic",
            gain,
        )
    if losers_as_challenger:
        return GateDecision(
            CHALLENGER,
            f"does not beat the champion by the margin: {comparison}; challenger anyway "
            "(gate_losers_as_challenger)",
            gain,
        )
    return GateDecision(
        None,
        f"does not beat the champion by the margin: {comparison}; registered without an "
        "alias (promote it by hand, or set gate_losers_as_challenger to judge it live)",
        gain,
    )
