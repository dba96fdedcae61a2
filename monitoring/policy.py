"""The decision policy: a pure function of what the monitor measured and named thresholds.

``decide(figures, thresholds)`` returns one ``Decision``. Priority, safety first:

0. ROLLBACK (failing champion): the serving fallback answered at least
   ``fallback_rollback_share`` of the champion's requests (and ``fallback_min_rows``) —
   the champion raised or returned NaN/inf and the loaded previous version answered for
   it. No labels or watch period needed: the champion is broken, not just worse.
1. ROLLBACK: inside the watch period after a promotion, the champion is worse than the
   previous champion by more than ``rollback_margin`` on enough live labels.
2. PROMOTE: the challenger beats the champion by at least ``live_promotion_margin`` on live
   labels, both with enough labelled rows.
3. RETIRE_CHALLENGER: the challenger was judged on live labels and lost, or waited longer
   than ``challenger_patience_s`` without being judged: its alias is cleared, with why.
4. RETRAIN: the window is big enough and drifts (share of drifted features) or is out of
   distribution (OOD rate), retraining is not cooling down, no challenger is still waiting
   to be judged, and the window holds ``min_retrain_labelled_rows`` labelled rows to learn
   the drift from. With fewer: RETRAIN_PENDING ("drift detected — retrain pending: N of M
   labelled rows"), recorded and alerted; it becomes RETRAIN by itself once the labels
   arrive (or at once with ``retrain_without_labels``).
5. NONE, with a reason naming every guard that held the other actions back.

Labels late or partial: when the monitor passes a bootstrap interval of a gain
(``challenger_gain_interval``, ``champion_gain_interval``), promotion needs the whole
interval to clear ``live_promotion_margin`` and rollback needs it wholly beyond
``rollback_margin``; a point estimate alone never moves an alias on a thin sample.

Margins are relative and direction-aware: ``higher_is_better`` says whether a larger metric
is better (F1, accuracy) or worse (RMSE, MAE). Ties count for promotion (``>=`` margin) and
against rollback (needs ``>`` margin), so a borderline figure never moves an alias back.

The challenger guard on retraining: while a challenger is still collecting live labels,
another retrain would replace it under the single ``challenger`` alias before it is judged;
under persistent drift every monitor run would then restart the clock and no challenger
would ever be promoted. The guard lifts once the challenger has been judged (it lost) or has
waited longer than ``challenger_patience_s`` (no labels are arriving, or it predates the
drift), so a starved challenger cannot block retraining forever.

Nothing here imports Evidently, Qdrant or the flows: only the threshold defaults
(`config.thresholds`) and the metric vocabulary (`monitoring.metrics`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Any

import config.thresholds as T
from monitoring.metrics import relative_gain

if TYPE_CHECKING:
    from config.settings import Settings

# Float slack when a relative change is compared with a margin: 0.84 vs 0.80 is a 5 % gain
# on paper but 0.04999999999999993 in binary floating point.
_EPS = 1e-9
_MAX_LISTED_FEATURES = 5
_NO_CHALLENGER = "no challenger waiting"
RETRAIN_PENDING_PREFIX = "drift detected — retrain pending"
"""How a RETRAIN_PENDING decision's reason begins (the monitor alerts once per episode)."""


@dataclass(frozen=True)
class Thresholds:
    """Named thresholds of the policy; shares and margins are fractions (0.05 = 5 %)."""

    drift_share_threshold: float = T.DRIFT_SHARE_THRESHOLD
    """Share of drifted features (0-1) at or above which the window counts as drifted."""
    ood_rate_threshold: float = T.OOD_RATE_THRESHOLD
    """Share of out-of-distribution rows (0-1) at or above which the window counts as OOD."""
    min_window_rows: int = T.MIN_WINDOW_ROWS
    """Fewest rows in the window before drift or OOD is judged."""
    min_labelled_rows: int = T.MIN_LABELLED_ROWS
    """Fewest labelled rows per model before its live metric is compared."""
    live_promotion_margin: float = T.LIVE_PROMOTION_MARGIN
    """Relative improvement of challenger over champion on live labels needed to promote
    (not the training gate's `promotion_margin` on the holdout)."""
    rollback_margin: float = T.ROLLBACK_MARGIN
    """Relative degradation of champion vs the previous champion that triggers a rollback."""
    watch_period_s: float = T.WATCH_PERIOD_S
    """Seconds after a promotion during which a rollback is considered."""
    retrain_cooldown_s: float = T.RETRAIN_COOLDOWN_S
    """Seconds after a retrain before drift may trigger another one."""
    challenger_patience_s: float = T.CHALLENGER_PATIENCE_S
    """Seconds a challenger may wait for labels before it is retired (and stops blocking)."""
    min_retrain_labelled_rows: int = T.MIN_RETRAIN_LABELLED_ROWS
    """Fewest labelled rows in the drifted window before a drift retrain runs."""
    retrain_without_labels: bool = T.RETRAIN_WITHOUT_LABELS
    """Retrain on drift at once, on whatever is labelled, instead of waiting for labels."""
    fallback_rollback_share: float = T.FALLBACK_ROLLBACK_SHARE
    """Share of the champion's requests answered by the fallback (0-1) that rolls back."""
    fallback_min_rows: int = T.FALLBACK_MIN_ROWS
    """Fewest fallback answers before a failing champion is rolled back."""

    def __post_init__(self) -> None:
        for name in ("drift_share_threshold", "ood_rate_threshold", "fallback_rollback_share"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} is a share between 0 and 1, got {value}")
        for name in (
            "min_window_rows",
            "min_labelled_rows",
            "live_promotion_margin",
            "rollback_margin",
            "watch_period_s",
            "retrain_cooldown_s",
            "challenger_patience_s",
            "min_retrain_labelled_rows",
            "fallback_min_rows",
        ):
            value = getattr(self, name)
            if value < 0 or (isinstance(value, float) and math.isnan(value)):
                raise ValueError(f"{name} must be zero or positive, got {value}")


def thresholds_from(settings: Settings) -> Thresholds:
    """The policy's thresholds from the settings (each has a setting of the same name)."""
    return Thresholds(**{f.name: getattr(settings, f.name) for f in fields(Thresholds)})


@dataclass(frozen=True, kw_only=True)
class Figures:
    """What the monitor measured for one window; None means "not measured / not known".

    Datetimes may be naive (taken as UTC) or timezone-aware.
    """

    now: datetime
    window_rows: int = 0
    feature_count: int | None = None
    drift_share: float | None = None
    drifted_features: tuple[str, ...] = ()
    dataset_drift: bool | None = None
    prediction_drift: bool | None = None
    prediction_drift_score: float | None = None
    ood_rate: float | None = None
    metric_name: str = "rmse"
    higher_is_better: bool = False
    champion_version: str | None = None
    champion_metric: float | None = None
    champion_labelled_rows: int = 0
    challenger_version: str | None = None
    challenger_metric: float | None = None
    challenger_labelled_rows: int = 0
    challenger_created_at: datetime | None = None
    """When the challenger was registered; falls back to ``last_retrain_at``."""
    previous_version: str | None = None
    previous_metric: float | None = None
    """The previous champion's figure: its live metric before the promotion, or holdout."""
    last_promotion_at: datetime | None = None
    last_retrain_at: datetime | None = None
    last_rollback_at: datetime | None = None
    """The newest rollback; one after the last promotion ends that promotion's watch."""
    labelled_rows: int | None = None
    """Labelled answered rows in the window (what a drift retrain would learn from)."""
    challenger_gain_interval: tuple[float, float] | None = None
    """Bootstrap interval of the challenger's relative gain over the champion."""
    champion_gain_interval: tuple[float, float] | None = None
    """Bootstrap interval of the champion's relative gain over the previous champion."""
    interval_level: float | None = None
    """Confidence of both intervals (e.g. 0.9)."""
    champion_requests: int = 0
    """The champion's newest requests since it took the alias (its answers + fallbacks)."""
    champion_fallback_rows: int = 0
    """Of those, how many the fallback (the previous version) answered: the champion failed."""
    fallback_error: str | None = None
    """The newest error the serving side logged for the champion's failures."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly copy: datetimes as ISO strings, tuples as lists."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, datetime):
                value = _utc(value).isoformat()
            elif isinstance(value, tuple):
                value = list(value)
            out[f.name] = value
        return out


class Action(StrEnum):
    """What the loop should do next."""

    NONE = "none"
    RETRAIN = "retrain"
    RETRAIN_PENDING = "retrain_pending"
    PROMOTE = "promote"
    ROLLBACK = "rollback"
    RETIRE_CHALLENGER = "retire_challenger"


@dataclass(frozen=True)
class Decision:
    """The action, one human sentence why, the figures behind it and the versions moved."""

    action: Action
    reason: str
    figures: dict[str, Any]
    from_version: str | None = None
    to_version: str | None = None
    notes: tuple[str, ...] = field(default=())
    """Why the actions of lower priority (or all, for NONE) were not taken."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly record for the decision history."""
        return {
            "action": self.action.value,
            "reason": self.reason,
            "from_version": self.from_version,
            "to_version": self.to_version,
            "notes": list(self.notes),
            "figures": self.figures,
        }


@dataclass(frozen=True)
class _Check:
    """Outcome of one rule: whether it fires, a sentence, and derived numbers to record."""

    fires: bool
    sentence: str | None
    derived: dict[str, Any] = field(default_factory=dict)


def decide(figures: Figures, thresholds: Thresholds) -> Decision:
    """Choose rollback > promote > retrain > none from the figures; never raises on None."""
    now = _utc(figures.now)
    failing = _check_failing_champion(figures, thresholds)
    rollback = failing if failing.fires else _check_rollback(figures, thresholds, now)
    promote = _check_promote(figures, thresholds)
    retire = _check_retire(figures, thresholds, now, promote)
    retrain = _check_retrain(figures, thresholds, now)

    used = figures.to_dict()
    used["thresholds"] = asdict(thresholds)
    for check in (rollback, promote, retire, retrain):
        used.update(check.derived)

    used.update(failing.derived)

    def notes_except(chosen: _Check | None) -> tuple[str, ...]:
        checks = (failing, rollback, promote, retire, retrain)
        checks = checks[1:] if failing is rollback else checks
        return tuple(c.sentence for c in checks if c is not chosen and c.sentence)

    pending = retrain.derived.get("retrain_pending", False)
    ranked = (
        (Action.ROLLBACK, rollback, figures.champion_version, figures.previous_version),
        (Action.PROMOTE, promote, figures.champion_version, figures.challenger_version),
        (Action.RETIRE_CHALLENGER, retire, figures.challenger_version, None),
        (
            Action.RETRAIN_PENDING if pending else Action.RETRAIN,
            retrain,
            figures.champion_version,
            None,
        ),
    )
    for action, check, from_version, to_version in ranked:
        if check.fires:
            notes = notes_except(check)
            return Decision(action, _sentence(check), used, from_version, to_version, notes)
    # For NONE the window's own state leads, then what held back the alias moves; a bare
    # "no challenger waiting" is left to the notes unless nothing else is worth saying.
    checks = (failing, rollback, retrain, promote, retire)
    notes = tuple(c.sentence for c in checks if c.sentence)
    telling = [n for n in notes if n != _NO_CHALLENGER]
    reason = "; ".join(telling or notes) or "nothing to act on"
    return Decision(Action.NONE, reason, used, figures.champion_version, None, notes)


# -- the three rules ---------------------------------------------------------------------


def _check_failing_champion(f: Figures, t: Thresholds) -> _Check:
    """Roll back a champion the serving fallback had to answer for (it raised or gave NaN)."""
    failed, requests = f.champion_fallback_rows, f.champion_requests
    if failed <= 0 or requests <= 0:
        return _Check(False, None)
    share = failed / requests
    cv, pv = _v(f.champion_version), _v(f.previous_version)
    error = f" — {f.fallback_error}" if f.fallback_error else ""
    what = (
        f"champion {cv} failed {failed:,} of {requests:,} requests in the window "
        f"({_pct(share, 1)}): answered by {pv}{error}"
    )
    derived = {"champion_fallback_share": share}
    if f.previous_version is None:
        return _Check(False, f"{what}; no previous version to roll back to", derived)
    if share < t.fallback_rollback_share - _EPS or failed < t.fallback_min_rows:
        return _Check(
            False,
            f"{what}; below the {_pct(t.fallback_rollback_share, 1)} / "
            f"{t.fallback_min_rows:,}-request fallback rollback threshold",
            derived,
        )
    return _Check(True, what, derived)


def _check_rollback(f: Figures, t: Thresholds, now: datetime) -> _Check:
    """Roll back when the new champion does worse than the one it replaced, while watched."""
    if f.last_promotion_at is None:
        return _Check(False, None)
    promoted = _utc(f.last_promotion_at)
    watch_end = _plus(promoted, t.watch_period_s)
    inside = now <= watch_end
    derived: dict[str, Any] = {"watch_period_ends_at": watch_end.isoformat()}
    champion, previous = _num(f.champion_metric), _num(f.previous_metric)
    cv, pv, name = _v(f.champion_version), _v(f.previous_version), f.metric_name
    if f.last_rollback_at is not None and _utc(f.last_rollback_at) >= promoted:
        # The champion is the version a rollback restored and `previous` the one it took
        # off: rolling back again on live figures would flip between the two. A failing
        # champion (the check before this one) still rolls back; promoting needs a person
        # or a better challenger.
        sentence = (
            f"champion {cv} was restored by the rollback at "
            f"{_time(_utc(f.last_rollback_at), now)}, which ended the watch of the "
            f"promotion of {_time(promoted, now)}; no automatic rollback to {pv}"
        )
        return _Check(False, sentence if inside else None, derived)

    if f.previous_version is None or previous is None:
        sentence = f"no previous version with a {name} to roll back to" if inside else None
        return _Check(False, sentence, derived)
    if champion is None or f.champion_labelled_rows < t.min_labelled_rows:
        sentence = (
            f"not enough labelled rows for champion {cv} to judge a rollback: "
            f"{f.champion_labelled_rows:,} < {t.min_labelled_rows:,}"
        )
        return _Check(False, sentence if inside else None, derived)

    gain = relative_gain(champion, previous, f.higher_is_better)
    derived["champion_vs_previous_gain"] = gain
    comparison = (
        f"champion {cv} {name} {_m(champion)} is {_change(gain)} than previous {pv} "
        f"({_m(previous)})"
    )
    if not -gain > t.rollback_margin + _EPS:  # not worse by the margin
        sentence = f"{comparison}, within the {_pct(t.rollback_margin)} rollback margin"
        return _Check(False, sentence if inside else None, derived)
    if not inside:
        return _Check(
            False,
            f"{comparison}, beyond the {_pct(t.rollback_margin)} rollback margin, but the "
            f"watch period after its promotion ended at {_time(watch_end, now)}; "
            "not rolling back",
            derived,
        )
    return _rollback_beyond_margin(f, t, now - promoted, comparison, derived)


def _rollback_beyond_margin(
    f: Figures, t: Thresholds, since: timedelta, comparison: str, derived: dict[str, Any]
) -> _Check:
    """A champion worse by more than the margin, `since` its promotion (in the watch
    period): rolled back unless its gain's interval does not rule out the margin."""
    interval = f.champion_gain_interval
    if interval is not None:
        derived["champion_gain_interval"] = list(interval)
        if -interval[1] <= t.rollback_margin + _EPS:
            return _Check(
                False,
                f"{comparison}, but the {_level(f)} interval of the change "
                f"{_span(interval)} on {f.champion_labelled_rows:,} labelled rows does not "
                f"rule out staying within the {_pct(t.rollback_margin)} rollback margin",
                derived,
            )
    minutes = max(0.0, since.total_seconds()) / 60
    beyond = "" if interval is None else f" (its {_level(f)} interval {_span(interval)})"
    return _Check(
        True,
        f"{comparison} > {_pct(t.rollback_margin)} rollback margin{beyond} on "
        f"{f.champion_labelled_rows:,} labelled rows, {minutes:.0f} min after its promotion",
        derived,
    )


def _check_promote(f: Figures, t: Thresholds) -> _Check:
    """Promote a challenger that beats the champion by the margin on live labels."""
    if f.challenger_version is None:
        return _Check(False, _NO_CHALLENGER)
    xv, cv, name = _v(f.challenger_version), _v(f.champion_version), f.metric_name
    if f.challenger_labelled_rows < t.min_labelled_rows:
        return _Check(
            False,
            f"not enough labelled rows for challenger {xv}: "
            f"{f.challenger_labelled_rows:,} < {t.min_labelled_rows:,}",
        )
    if f.champion_version is None:
        return _Check(False, f"no champion to compare challenger {xv} with")
    if f.champion_labelled_rows < t.min_labelled_rows:
        return _Check(
            False,
            f"not enough labelled rows for champion {cv}: "
            f"{f.champion_labelled_rows:,} < {t.min_labelled_rows:,}",
        )
    challenger, champion = _num(f.challenger_metric), _num(f.champion_metric)
    if challenger is None or champion is None:
        missing = "challenger " + xv if challenger is None else "champion " + cv
        return _Check(False, f"no live {name} for {missing} yet")

    gain = relative_gain(challenger, champion, f.higher_is_better)
    comparison = (
        f"challenger {xv} {name} {_m(challenger)} is {_change(gain)} than champion {cv} "
        f"({_m(champion)})"
    )
    return _promote_by_gain(f, t, gain, comparison)


def _promote_by_gain(f: Figures, t: Thresholds, gain: float, comparison: str) -> _Check:
    """Promote when the gain, and its interval when there is one, clear the margin."""
    derived: dict[str, Any] = {"challenger_vs_champion_gain": gain}
    interval = f.challenger_gain_interval
    if interval is not None:
        derived["challenger_gain_interval"] = list(interval)
    clears = interval is None or interval[0] >= t.live_promotion_margin - _EPS
    if gain >= t.live_promotion_margin - _EPS and not clears:
        return _Check(
            False,
            f"{comparison}, but the {_level(f)} interval of the gain {_span(interval)} "
            f"on {f.challenger_labelled_rows:,} / {f.champion_labelled_rows:,} labelled "
            f"rows does not clear the {_pct(t.live_promotion_margin)} promotion margin",
            derived,
        )
    if gain >= t.live_promotion_margin - _EPS:
        cleared = (
            ""
            if interval is None
            else f", and its {_level(f)} interval {_span(interval)} clears the margin"
        )
        return _Check(
            True,
            f"{comparison} ≥ {_pct(t.live_promotion_margin)} promotion margin on "
            f"{f.challenger_labelled_rows:,} / {f.champion_labelled_rows:,} labelled rows"
            + cleared,
            derived,
        )
    return _Check(
        False, f"{comparison} < {_pct(t.live_promotion_margin)} promotion margin", derived
    )


def _check_retrain(f: Figures, t: Thresholds, now: datetime) -> _Check:
    """Retrain on drift or OOD traffic, unless cooling down or a challenger is pending."""
    rows = f"{f.window_rows:,} rows"
    if f.window_rows < t.min_window_rows:
        return _Check(
            False, f"window too small to judge drift: {f.window_rows:,} < {t.min_window_rows:,}"
        )
    share, ood = _num(f.drift_share), _num(f.ood_rate)
    if share is None and ood is None:
        return _Check(False, f"no drift or OOD figures for the window of {rows}")

    triggers, calm = _drift_triggers(f, t, share, ood)
    if not triggers:
        return _Check(False, f"no drift on {rows}: " + ", ".join(calm))

    what = " and ".join(triggers) + f" on {rows}"
    if f.prediction_drift:
        what += ", with prediction drift"
    return _retrain_unless_held(f, t, now, what)


def _drift_triggers(
    f: Figures, t: Thresholds, share: float | None, ood: float | None
) -> tuple[list[str], list[str]]:
    """(what crossed its threshold, what stayed below), as phrases for the reason."""
    triggers, calm = [], []
    if share is not None:
        text = f"drift share {share:.2f}"
        if share >= t.drift_share_threshold - _EPS:
            triggers.append(f"{text} ≥ {t.drift_share_threshold:.2f} ({_features(f)})")
        else:
            calm.append(f"{text} < {t.drift_share_threshold:.2f}")
    if ood is not None:
        text = f"OOD rate {_pct(ood, 1)}"
        if ood >= t.ood_rate_threshold - _EPS:
            triggers.append(f"{text} ≥ {_pct(t.ood_rate_threshold)}")
        else:
            calm.append(f"{text} < {_pct(t.ood_rate_threshold)}")
    return triggers, calm


def _retrain_unless_held(f: Figures, t: Thresholds, now: datetime, what: str) -> _Check:
    """Retrain on `what` drifted, unless cooling down or a challenger is still waiting;
    pending while the window lacks the labels to learn the drift from."""
    derived: dict[str, Any] = {}
    if f.last_retrain_at is not None:
        last = _utc(f.last_retrain_at)
        until = _plus(last, t.retrain_cooldown_s)
        derived["retrain_cooldown_until"] = until.isoformat()
        if now < until:
            return _Check(
                False,
                f"{what}, but retraining is cooling down until {_time(until, now)} "
                f"(last retrain {_time(last, now)})",
                derived,
            )

    pending = _pending_challenger(f, t, now)
    if pending is not None:
        return _Check(False, f"{what}, but {pending}", derived)
    labelled = f.labelled_rows
    if (
        labelled is not None
        and labelled < t.min_retrain_labelled_rows
        and not t.retrain_without_labels
    ):
        derived["retrain_pending"] = True
        return _Check(
            True,
            f"{RETRAIN_PENDING_PREFIX}: {labelled:,} of {t.min_retrain_labelled_rows:,} "
            f"labelled rows ({what}); it retrains once enough labels arrive",
            derived,
        )
    return _Check(True, what, derived)


def _check_retire(f: Figures, t: Thresholds, now: datetime, promote: _Check) -> _Check:
    """Retire a challenger that lost on live labels, or that waited past its patience."""
    if f.challenger_version is None or promote.fires:
        return _Check(False, None)
    xv = _v(f.challenger_version)
    gain = promote.derived.get("challenger_vs_champion_gain")
    if gain is not None:  # judged: enough labels on both sides
        interval = f.challenger_gain_interval
        if interval is not None and interval[1] >= t.live_promotion_margin - _EPS:
            return _Check(False, None)  # could still clear the margin: keep collecting
        return _Check(
            True,
            f"challenger {xv} lost on live labels: {promote.sentence}",
        )
    created = f.challenger_created_at or f.last_retrain_at
    if created is None:
        return _Check(False, None)
    waited = (now - _utc(created)).total_seconds()
    if waited <= t.challenger_patience_s:
        return _Check(False, None)
    return _Check(
        True,
        f"challenger {xv} waited {waited / 3600:.1f} h for live labels "
        f"(patience {t.challenger_patience_s / 3600:.1f} h) without being judged: "
        f"{f.challenger_labelled_rows:,} < {t.min_labelled_rows:,} labelled rows",
    )


def _pending_challenger(f: Figures, t: Thresholds, now: datetime) -> str | None:
    """Why a waiting challenger blocks a retrain, or None when it does not."""
    if f.challenger_version is None:
        return None
    judged = (
        f.challenger_labelled_rows >= t.min_labelled_rows
        and f.champion_labelled_rows >= t.min_labelled_rows
        and _num(f.challenger_metric) is not None
        and _num(f.champion_metric) is not None
    )
    if judged:  # it was compared and did not win: a fresh model is welcome
        return None
    created = f.challenger_created_at or f.last_retrain_at
    if created is not None:
        waited = (now - _utc(created)).total_seconds()
        if waited > t.challenger_patience_s:
            return None
    return (
        f"challenger {_v(f.challenger_version)} is still waiting for live labels "
        f"({f.challenger_labelled_rows:,} < {t.min_labelled_rows:,}); retraining now would "
        "pile up challengers and replace it before it is judged"
    )


# -- formatting --------------------------------------------------------------------------


def _sentence(check: _Check) -> str:
    return check.sentence or ""


def _utc(moment: datetime) -> datetime:
    """Naive datetimes are taken as UTC so naive and aware figures compare."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def _plus(moment: datetime, seconds: float) -> datetime:
    """``moment + seconds``, clamped to the calendar's end instead of overflowing."""
    try:
        return moment + timedelta(seconds=seconds)
    except OverflowError:
        return datetime.max.replace(tzinfo=UTC)


def _num(value: float | None) -> float | None:
    """None for missing or NaN figures."""
    if value is None:
        return None
    value = float(value)
    return None if math.isnan(value) else value


def _v(version: str | None) -> str:
    if version is None:
        return "(unknown)"
    return version if version.startswith("v") else f"v{version}"


def _m(value: float) -> str:
    return f"{value:.4g}"


def _level(f: Figures) -> str:
    return f"{f.interval_level:.0%}" if f.interval_level else "bootstrap"


def _span(interval: tuple[float, float]) -> str:
    return f"[{interval[0]:+.1%}, {interval[1]:+.1%}]"


def _pct(share: float, digits: int = 0) -> str:
    return f"{share:.{digits}%}"


def _change(gain: float) -> str:
    if gain >= 0:
        return f"{_pct(gain, 1)} better"
    return f"{_pct(-gain, 1)} worse"


def _time(moment: datetime, now: datetime) -> str:
    if moment.date() == now.date():
        return moment.strftime("%H:%M UTC")
    return moment.strftime("%Y-%m-%d %H:%M UTC")


def _features(f: Figures) -> str:
    names = list(f.drifted_features)
    count = f"{len(names)} of {f.feature_count}" if f.feature_count else f"{len(names)}"
    if not names:
        return f"{count} features"
    listed = ", ".join(names[:_MAX_LISTED_FEATURES])
    if len(names) > _MAX_LISTED_FEATURES:
        listed += f", +{len(names) - _MAX_LISTED_FEATURES} more"
    return f"{count} features: {listed}"
