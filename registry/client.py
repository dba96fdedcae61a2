"""The only code that talks to the MLflow model registry.

Aliases carry the lifecycle: ``champion`` serves, ``challenger`` gets the canary
share, ``previous`` is the rollback target. ``latest`` is never used. Every
alias move is recorded in the promotion history (see ``registry.history``).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from config.names import ALIASES, CHALLENGER, CHAMPION, PREVIOUS
from registry.describe import model_description, version_description, when
from registry.history import AliasMove, PromotionHistory
from registry.ledger import OK, Claim, MoveLedger, check_decision_id, new_decision_id
from registry.tags import ROLLED_BACK_TAG, all_readable, flat_tags, lookup_filter, stored_tags

if TYPE_CHECKING:
    from config.settings import Settings

logger = logging.getLogger(__name__)


DEFAULT_MOVE_WAIT_S = 30.0
REGISTRATION_KEY_TAG = "driftloop.registration_key"
CANARY_SHARE_TAG = "driftloop.canary_share"
READY = "READY"  # a model version's status once registered (mlflow ModelVersionStatus)
REGISTRATION_WAIT_S = 60
"""Seconds `Registry.register` lets MLflow wait for a new version to be READY."""
"""Registered-model tag: the challenger's share of traffic; the serving follower polls it
like the aliases and it overrides the service's `canary_share` setting while set."""


class RegistryError(Exception):
    """A registry operation that cannot be carried out as asked (bad version, no alias...)."""


def version_number(version: str | int) -> str:
    """A version as the registry spells it: ``3``, ``"3"``, ``"v3"`` and ``"V3"`` are "3".

    Raises RegistryError naming the accepted forms for anything else (MLflow would
    answer "v3" with an INVALID_PARAMETER_VALUE error the user cannot act on).
    """
    text = str(version).strip()
    digits = text[1:] if text[:1] in ("v", "V") else text
    if not digits.isdecimal() or int(digits) < 1:
        raise RegistryError(f"not a model version: {text!r} (a number such as 3, or v3)")
    return str(int(digits))


class AliasesMoved(RegistryError):
    """The aliases are not what the caller expected: someone else moved them first.

    `expected` and `actual` map alias -> version (None = unset); nothing was moved.
    With `during=True` the aliases changed while this move was writing them (a
    writer outside driftloop's ledger, e.g. the MLflow UI).
    """

    def __init__(
        self,
        model_name: str,
        action: str,
        expected: Mapping[str, str | None],
        actual: Mapping[str, str | None],
        during: bool = False,
    ) -> None:
        self.model_name = model_name
        self.action = action
        self.expected = dict(expected)
        self.actual = {alias: actual.get(alias) for alias in ALIASES if actual.get(alias)}
        self.during = during
        differing = alias_differences(expected, actual)
        want = ", ".join(f"{a} {_v(expected.get(a))}" for a in sorted(differing))
        have = ", ".join(f"{a} {_v(actual.get(a))}" for a in sorted(differing))
        if during:
            message = (
                f"{action} of {model_name!r} was overwritten while it ran: wrote {want}, "
                f"found {have}; check `driftloop models` and move again if needed"
            )
        else:
            hint = " (already rolled back?)" if action == "rollback" else ""
            message = (
                f"{action} of {model_name!r} refused: the aliases moved{hint}; "
                f"expected {want}; found {have}; nothing was changed"
            )
        super().__init__(message)


def _v(version: str | None) -> str:
    return "unset" if version is None else f"v{version}"


def alias_differences(
    expected: Mapping[str, str | None], actual: Mapping[str, str | None]
) -> dict[str, tuple[str | None, str | None]]:
    """alias -> (expected, actual) for every expected alias that is not as expected."""
    return {
        alias: (want, actual.get(alias))
        for alias, want in expected.items()
        if (None if want in (None, "") else str(want)) != actual.get(alias)
    }


def plan_promote(model_name: str, live: Mapping[str, str], version: str) -> dict[str, str | None]:
    """The alias writes that make `version` champion (old champion → previous)."""
    old_champion = live.get(CHAMPION)
    if old_champion == version:
        raise RegistryError(f"version {version} is already the champion of {model_name!r}")
    plan: dict[str, str | None] = {CHAMPION: version}
    if old_champion is not None:
        plan[PREVIOUS] = old_champion
    if live.get(CHALLENGER) == version:
        plan[CHALLENGER] = None
    return plan


def plan_rollback(model_name: str, live: Mapping[str, str]) -> dict[str, str | None]:
    """The alias writes that swap champion and previous."""
    previous, champion = live.get(PREVIOUS), live.get(CHAMPION)
    if previous is None:
        raise RegistryError(
            f"model {model_name!r} has no 'previous' version to roll back to "
            f"(champion: {champion or 'none'}); promote a version first"
        )
    return {CHAMPION: previous, PREVIOUS: champion}


def parse_canary_share(value: object, where: str = "canary share") -> float:
    """A canary share in [0, 1] from a number or its text; ValueError naming `where` else."""
    try:
        share = float(str(value).strip())
    except ValueError:
        share = math.nan
    if not 0.0 <= share <= 1.0:  # NaN fails too
        raise ValueError(
            f"{where} {value!r} is not a share: use a number from 0 (shadow only: the "
            "challenger predicts for the log) to 1 (the challenger answers everything)"
        )
    return share


_FORMER_METRIC_NAMES = {"f1_macro": "f1"}  # today's name → the one older versions carry


@dataclass(frozen=True)
class VersionInfo:
    """One registered version as users see it in `driftloop models`."""

    name: str
    version: str
    run_id: str | None
    source: str
    aliases: tuple[str, ...]
    tags: dict[str, str]
    created_at: datetime
    status: str = READY
    stored_tags: Mapping[str, str] | None = field(default=None, repr=False, compare=False)
    """The tags as MLflow stores them when this was read from the registry (None: not
    known); `Registry.set_tags` merges into them instead of reading the version again."""

    @property
    def model_uri(self) -> str:
        return f"models:/{self.name}/{self.version}"

    def holdout_metric(self, metric: str) -> float | None:
        """The holdout figure tagged at training; versions registered before metric names
        said what they measure carry macro F1 as ``holdout_f1``."""
        value = self.tags.get(f"holdout_{metric}")
        if value in (None, "") and metric in _FORMER_METRIC_NAMES:
            value = self.tags.get(f"holdout_{_FORMER_METRIC_NAMES[metric]}")
        return float(value) if value not in (None, "") else None


def _ready(info: VersionInfo) -> VersionInfo:
    """`info` when its registration finished; RegistryError otherwise (a version found by
    its registration key that an earlier, interrupted attempt left pending or failed)."""
    if info.status != READY:
        raise RegistryError(
            f"version {info.version} of {info.name!r} is {info.status}, not {READY}: "
            "its registration failed or is still running; run the training again"
        )
    return info


def _version_info(mv: ModelVersion) -> VersionInfo:
    return VersionInfo(
        name=mv.name,
        version=str(mv.version),
        run_id=mv.run_id,
        source=mv.source,
        aliases=tuple(sorted(mv.aliases or ())),
        tags=flat_tags(mv.tags or {}),
        created_at=datetime.fromtimestamp((mv.creation_timestamp or 0) / 1000, tz=UTC),
        status=str(mv.status),
        stored_tags=dict(mv.tags or {}),
    )


class ModelsClient(MlflowClient):
    """An `MlflowClient` that checks a registered model is not a prompt once per name,
    not before every registry write.

    MLflow 3 keeps prompts in the model registry and, before each write to a version
    or alias (a tag, an alias move, a description), reads the registered model to
    refuse prompts: a `get_registered_model` request each time, half the requests of
    every tag and alias write. The first write per name still checks (and refuses a
    prompt as MLflow does); the later ones trust that answer (a name does not turn
    into a prompt). Should MLflow rename the hook, every write checks again: slower,
    never wrong."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._not_prompts: set[str] = set()

    def _raise_if_prompt(self, name: str) -> None:
        if name not in self._not_prompts:
            super()._raise_if_prompt(name)
            self._not_prompts.add(name)


class Registry:
    """Register versions, read and move aliases, promote and roll back one model.

    One instance per registered model. Methods that move aliases are
    compare-and-swap moves through the model's ledger (`registry.ledger`) and
    record an `AliasMove` in the promotion history with the reason and figures
    given. `move_wait_s` is how long a move waits for another one in progress
    (and the longest a move may take before it stops writing).
    """

    def __init__(
        self, model_name: str, tracking_uri: str, move_wait_s: float = DEFAULT_MOVE_WAIT_S
    ) -> None:
        self.model_name = model_name
        self.tracking_uri = tracking_uri
        self.move_wait_s = move_wait_s
        self.client = ModelsClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
        self.history = PromotionHistory(self.client, model_name)
        self.ledger = MoveLedger(self.client, self.history, model_name, move_wait_s)

    @classmethod
    def from_settings(cls, settings: Settings) -> Registry:
        """The settings' model on the settings' tracking server (how flows and the CLI
        open the registry)."""
        return cls(
            settings.model_name,
            settings.resolved_tracking_uri(),
            move_wait_s=settings.alias_move_wait_s,
        )

    # -- reading ------------------------------------------------------------
    def exists(self) -> bool:
        try:
            self.client.get_registered_model(self.model_name)
        except MlflowException as exc:
            if _is_not_found(exc):
                return False
            raise
        return True

    def versions(self) -> list[VersionInfo]:
        """All versions, newest first."""
        if not self.exists():
            return []
        found = self.client.search_model_versions(f"name = '{self.model_name}'")
        # Search results do not carry aliases on every store: take them from the model.
        by_version: dict[str, list[str]] = {}
        for alias, version in self.aliases().items():
            by_version.setdefault(version, []).append(alias)
        infos = [
            replace(_version_info(mv), aliases=tuple(sorted(by_version.get(str(mv.version), []))))
            for mv in found
        ]
        return sorted(infos, key=lambda v: int(v.version), reverse=True)

    def get(self, version: str | int) -> VersionInfo:
        version = version_number(version)
        try:
            return _version_info(self.client.get_model_version(self.model_name, version))
        except MlflowException as exc:
            if _is_not_found(exc):
                known = ", ".join(v.version for v in self.versions()) or "none"
                raise RegistryError(
                    f"model {self.model_name!r} has no version {version} (versions: {known})"
                ) from exc
            raise

    def by_alias(self, alias: str) -> VersionInfo | None:
        """The version behind an alias, or None when the alias is not set."""
        version = self.aliases().get(alias)  # raises when the registry is unreachable
        return None if version is None else self.get(version)

    def aliases(self) -> dict[str, str]:
        """alias -> version for every alias that is set (one registry call)."""
        return self.aliases_and_tags()[0]

    def aliases_and_tags(self) -> tuple[dict[str, str], dict[str, str]]:
        """(aliases, registered-model tags) from one registry call (the serving follower's)."""
        try:
            model = self.client.get_registered_model(self.model_name)
        except MlflowException as exc:
            if _is_not_found(exc):
                return {}, {}
            raise
        aliases = {alias: str(version) for alias, version in (model.aliases or {}).items()}
        return aliases, {str(k): str(v) for k, v in (model.tags or {}).items()}

    def canary_share(self) -> float | None:
        """The canary share set in the registry (`CANARY_SHARE_TAG`), None when unset."""
        value = self.aliases_and_tags()[1].get(CANARY_SHARE_TAG)
        if value is None:
            return None
        return parse_canary_share(value, f"registry tag {CANARY_SHARE_TAG}")

    def set_canary_share(
        self, share: float | None, reason: str, actor: str = "user", decision_id: str | None = None
    ) -> AliasMove:
        """Set (or with None remove) the challenger's share of traffic and record it.

        Running services pick it up at their next alias poll, without a restart; while
        unset they use their `canary_share` setting. No alias moves, so no ledger claim:
        the last writer wins, and every change is in the history (`canary-share`).
        """
        new = None if share is None else parse_canary_share(share)
        if not self.exists():
            raise RegistryError(
                f"model {self.model_name!r} is not registered: run `driftloop train` first"
            )
        if decision_id is not None:
            earlier = self.history.find(check_decision_id(decision_id))
            if earlier is not None:
                return replace(earlier, replayed=True)
        try:
            old: float | None = self.canary_share()
        except ValueError:
            old = None  # an unusable hand-written tag: replaced below
        if new is None:
            try:
                self.client.delete_registered_model_tag(self.model_name, CANARY_SHARE_TAG)
            except MlflowException as exc:
                if not _is_not_found(exc):
                    raise
        else:
            self.client.set_registered_model_tag(self.model_name, CANARY_SHARE_TAG, f"{new:g}")
        figures = {} if new is None else {"canary_share": new}
        if old is not None:
            figures["previous_canary_share"] = old
        before = "the serving setting" if old is None else f"{old:g}"
        after = "the serving setting (tag removed)" if new is None else f"{new:g}"
        move = AliasMove.now(
            action="canary-share",
            moves={},
            reason=f"canary share {before} → {after}: {reason}",
            actor=actor,
            figures=figures,
            decision_id=decision_id or new_decision_id("share"),
        )
        self.history.append(move)
        return move

    def download_model(self, version: str | int | VersionInfo, dst_dir: Path) -> Path:
        """Download a version's MLflow model folder (MLmodel + files) into `dst_dir`
        (`version` may be the `VersionInfo` the caller just read: no second read)."""
        from mlflow.artifacts import download_artifacts

        info = version if isinstance(version, VersionInfo) else self.get(version)
        # The concrete artifact location (not models:/...), which resolves against
        # this registry's server rather than MLflow's global tracking URI.
        source = self.client.get_model_version_download_uri(self.model_name, info.version)
        local = download_artifacts(
            artifact_uri=source, dst_path=str(dst_dir), tracking_uri=self.tracking_uri
        )
        return Path(local)

    # -- writing ------------------------------------------------------------
    def register(
        self,
        model_uri: str,
        run_id: str | None,
        tags: dict[str, Any] | None = None,
        registration_key: str | None = None,
        fresh_key: bool = False,
    ) -> VersionInfo:
        """Create a new version from a logged model and wait until it is READY.

        With a `registration_key` the call is idempotent: a version already
        registered under that key (an earlier attempt whose answer was lost) is
        returned instead of a duplicate. `fresh_key`: the caller made the key for
        this very call (a first attempt), so that look-up is skipped.
        """
        if registration_key is not None and not fresh_key:
            existing = self.find_registered(registration_key)
            if existing is not None:
                return _ready(existing)
        # MLflow 3 logs models as `models:/m-<id>`; the server wants that id named too.
        model_id = (
            model_uri.removeprefix("models:/") if model_uri.startswith("models:/m-") else None
        )
        flat = {k: str(v) for k, v in (tags or {}).items()}
        if registration_key is not None:
            flat[REGISTRATION_KEY_TAG] = check_decision_id(registration_key)
        mv = self._create_version(model_uri, run_id, stored_tags(flat), model_id)
        return _ready(self.get(mv.version) if mv.status != READY else _version_info(mv))

    def _create_version(
        self, model_uri: str, run_id: str | None, tags: dict[str, str], model_id: str | None
    ) -> ModelVersion:
        """A new version; the registered model is created with the first one."""

        def create() -> ModelVersion:
            # MLflow waits for READY itself and raises MlflowException on a failed
            # registration or past the wait (OSS stores create versions READY at once).
            return self.client.create_model_version(
                self.model_name,
                source=model_uri,
                run_id=run_id,
                tags=tags,
                model_id=model_id,
                await_creation_for=REGISTRATION_WAIT_S,
            )

        try:  # the registered model exists but for the first version: one call, not two
            return create()
        except MlflowException as exc:
            if not _is_not_found(exc) or self.exists():
                raise
            try:
                self.client.create_registered_model(
                    self.model_name,
                    description="Managed by driftloop: aliases champion / challenger / previous.",
                )
            except MlflowException as exc2:  # created concurrently by another process
                if getattr(exc2, "error_code", "") != "RESOURCE_ALREADY_EXISTS":
                    raise
            return create()

    def find_registered(self, registration_key: str) -> VersionInfo | None:
        """The version registered under `registration_key`, if any (oldest wins)."""
        if not self.exists():
            return None
        key = check_decision_id(registration_key)
        found = self.client.search_model_versions(
            f"name = '{self.model_name}' and {lookup_filter(REGISTRATION_KEY_TAG, key)}"
        )
        infos = sorted(
            (
                info
                for info in map(_version_info, found)
                if info.tags.get(REGISTRATION_KEY_TAG) == key
            ),
            key=lambda v: int(v.version),
        )
        return infos[0] if infos else None

    def set_tags(
        self, version: str | int, tags: dict[str, Any], current: Mapping[str, str] | None = None
    ) -> None:
        """Set tags by their flat names (`registry.tags`): readable ones directly, the
        others merged into the version's JSON details tag.

        `current`: the version's stored tags as the caller just read them
        (`VersionInfo.stored_tags`), merged into instead of reading the version again;
        None reads them when there is something to merge. MLflow has no call that sets
        several version tags: each tag is one `set_model_version_tag` (two requests)."""
        version = str(version)
        if all_readable(tags):
            current = {}
        elif current is None:
            current = self.client.get_model_version(self.model_name, version).tags or {}
        for key, value in stored_tags(tags, current).items():
            self.client.set_model_version_tag(self.model_name, version, key, value)

    def set_alias(
        self,
        alias: str,
        version: str | int,
        reason: str,
        actor: str = "user",
        figures: dict[str, float] | None = None,
        expected: Mapping[str, str | None] | None = None,
        decision_id: str | None = None,
    ) -> AliasMove:
        """Point one alias at a version and record the move.

        `expected` (alias -> version, None = unset) is compared with the live aliases
        first; None compares `alias` with what this call reads first; `{}` compares
        nothing (last writer wins, as the gate wants for `challenger`).
        """
        self._check_alias(alias)
        target = self.get(version)

        def plan(live: dict[str, str]) -> dict[str, str | None]:
            return {alias: target.version}

        return self._move(f"set-{alias}", plan, expected, reason, actor, figures, decision_id)

    def clear_alias(
        self,
        alias: str,
        reason: str,
        actor: str = "user",
        expected: Mapping[str, str | None] | None = None,
        decision_id: str | None = None,
    ) -> AliasMove | None:
        """Unset one alias and record it; None when it was not set.

        A retry of a clear that went through (same `decision_id`) returns the earlier
        move (`replayed=True`) rather than None.
        """
        self._check_alias(alias)
        if self.aliases().get(alias) is None:
            if decision_id is not None:
                earlier = self.history.find(check_decision_id(decision_id))
                if earlier is not None:
                    return replace(earlier, replayed=True)
            return None

        def plan(live: dict[str, str]) -> dict[str, str | None]:
            return {alias: None}

        return self._move(f"clear-{alias}", plan, expected, reason, actor, {}, decision_id)

    def promote(
        self,
        version: str | int,
        reason: str,
        actor: str = "user",
        figures: dict[str, float] | None = None,
        expected: Mapping[str, str | None] | None = None,
        decision_id: str | None = None,
    ) -> AliasMove:
        """Make `version` the champion; the old champion becomes `previous`.

        If `version` was the challenger, the challenger alias is cleared. `expected`
        is the caller's view of the aliases (e.g. ``{"champion": "2", "challenger":
        "3"}``): when the live aliases differ the move is refused with
        `AliasesMoved`. Without it, the aliases this call reads first are expected.
        """
        target = self.get(version)

        def plan(live: dict[str, str]) -> dict[str, str | None]:
            return plan_promote(self.model_name, live, target.version)

        return self._move("promote", plan, expected, reason, actor, figures, decision_id)

    def rollback(
        self,
        reason: str,
        actor: str = "user",
        figures: dict[str, float] | None = None,
        expected: Mapping[str, str | None] | None = None,
        decision_id: str | None = None,
    ) -> AliasMove:
        """Swap champion and previous: the previous champion serves again.

        Two concurrent rollbacks that saw the same aliases make one move: the other
        is refused with `AliasesMoved` instead of swapping back.
        """

        def plan(live: dict[str, str]) -> dict[str, str | None]:
            return plan_rollback(self.model_name, live)

        return self._move("rollback", plan, expected, reason, actor, figures, decision_id)

    # -- internals ------------------------------------------------------------
    def _move(
        self,
        action: str,
        plan_for: Callable[[dict[str, str]], dict[str, str | None]],
        expected: Mapping[str, str | None] | None,
        reason: str,
        actor: str,
        figures: dict[str, float] | None,
        decision_id: str | None,
    ) -> AliasMove:
        """Compare, claim the next ledger generation, apply, verify, record.

        A retry with a `decision_id` already carried out returns the earlier move
        (`replayed=True`) and moves nothing.
        """
        decision_id = check_decision_id(decision_id) if decision_id else new_decision_id()
        want: dict[str, str | None] | None = None if expected is None else dict(expected)
        while True:
            state = self.ledger.read_settled(own_decision=decision_id)
            mine = state.find(decision_id)
            if mine is not None:
                generation, claim = mine
                outcome = state.outcomes.get(generation)
                if outcome == OK:
                    return self._replay(claim)
                if outcome is None and generation == state.generation:
                    # Our own earlier attempt claimed it and stopped half-way: finish it.
                    return self._carry_out(generation, claim, reason, figures)
            live = self.aliases()
            plan = plan_for(live)
            if want is None:  # expect what we saw first, for the aliases the move touches
                want = {alias: live.get(alias) for alias in plan}
            moved = alias_differences(want, live)
            if moved:
                raise AliasesMoved(self.model_name, action, want, live)
            claim = Claim(
                decision_id=decision_id,
                action=action,
                actor=actor,
                before={alias: live.get(alias) for alias in ALIASES},
                plan=plan,
                at=datetime.now(UTC).isoformat(timespec="seconds"),
            )
            generation = state.generation + 1
            held = self.ledger.claim(generation, claim)
            if held.decision_id == decision_id:
                return self._carry_out(generation, held, reason, figures)
            # Another decision took this generation first: read again (and most
            # likely refuse, because it moved what we expected).

    def _carry_out(
        self, generation: int, claim: Claim, reason: str, figures: dict[str, float] | None
    ) -> AliasMove:
        """Write a claimed plan, check it landed, record it once, mark it done."""
        deadline = time.monotonic() + self.move_wait_s
        try:
            self._apply(claim.plan, claim.before, deadline)
            after = self.aliases()
            wrong = {a: v for a, v in claim.plan.items() if after.get(a) != v}
            if wrong:
                raise AliasesMoved(self.model_name, claim.action, claim.plan, after, during=True)
        except Exception as exc:
            self.ledger.finish(generation, f"failed: {type(exc).__name__}: {exc}")
            raise
        move = self.history.find(claim.decision_id)
        if move is None:
            move = AliasMove(
                at=claim.at,
                action=claim.action,
                moves={alias: (claim.before.get(alias), new) for alias, new in claim.plan.items()},
                reason=reason,
                actor=claim.actor,
                figures=figures or {},
                decision_id=claim.decision_id,
            )
            self._record(move)
        self.ledger.finish(generation, OK)
        return move

    def _replay(self, claim: Claim) -> AliasMove:
        """The earlier result of a decision already carried out."""
        recorded = self.history.find(claim.decision_id)
        if recorded is None:  # done but its history run is missing: rebuild from the claim
            recorded = AliasMove(
                at=claim.at,
                action=claim.action,
                moves={alias: (claim.before.get(alias), new) for alias, new in claim.plan.items()},
                reason="",
                actor=claim.actor,
                decision_id=claim.decision_id,
            )
        return replace(recorded, replayed=True)

    def _apply(
        self, plan: dict[str, str | None], before: dict[str, str | None], deadline: float
    ) -> None:
        """Set several aliases; on failure put back the ones already changed.

        MLflow has no multi-alias transaction. `champion` is written after
        `previous` so a reader never sees a champion without its fallback. Past
        `deadline` (the lease other movers wait for) no further alias is written.
        """
        order = sorted(plan, key=lambda alias: alias == CHAMPION)
        done: list[str] = []
        try:
            for alias in order:
                if time.monotonic() > deadline:
                    raise RegistryError(
                        f"moving {self.model_name}'s aliases took over {self.move_wait_s:.0f} s; "
                        "stopped so that other movers may go on (nothing more was written)"
                    )
                new = plan[alias]
                if new is None:
                    self._delete_alias(alias)
                else:
                    self.client.set_registered_model_alias(self.model_name, alias, new)
                done.append(alias)
        except Exception:
            for alias in reversed(done):
                old = before.get(alias)
                try:
                    if old is None:
                        self._delete_alias(alias)
                    else:
                        self.client.set_registered_model_alias(self.model_name, alias, old)
                except MlflowException:
                    pass  # best effort; the original error is what the user needs
            raise

    def _delete_alias(self, alias: str) -> None:
        try:
            self.client.delete_registered_model_alias(self.model_name, alias)
        except MlflowException as exc:
            if not _is_not_found(exc):  # already unset: a roll-forward repeats deletes
                raise

    def _record(self, move: AliasMove) -> None:
        self.history.append(move)
        for alias, (_, new) in move.moves.items():
            if new is not None:
                self.set_tags(
                    new,
                    {
                        f"{alias}_since": move.at,
                        "last_decision": f"{alias} since {when(move.at)} — "
                        f"{move.action}: {move.reason}",
                    },
                )
        try:
            self._describe(move)
        except MlflowException as exc:  # the move stands; the UI text is not worth failing it
            logger.warning("could not write the registry descriptions of %s: %s", move, exc)

    def _describe(self, move: AliasMove) -> None:
        """Version and model descriptions after `move` (registry/describe.py); a champion a
        rollback replaced gets the `rolled_back` tag, an explicit promotion clears it."""
        old_champion, new_champion = move.moves.get(CHAMPION, (None, None))
        if move.action == "rollback" and old_champion is not None:
            self.set_tags(old_champion, {ROLLED_BACK_TAG: f"{when(move.at)}: {move.reason}"})
        elif (
            move.action != "rollback"
            and new_champion is not None
            and ROLLED_BACK_TAG in self.get(new_champion).tags
        ):
            self.client.delete_model_version_tag(self.model_name, new_champion, ROLLED_BACK_TAG)
        aliases = self.aliases()
        touched = {v for pair in move.moves.values() for v in pair if v is not None}
        rolled_back = {}
        for version in sorted(touched | set(aliases.values())):
            tag = self.get(version).tags.get(ROLLED_BACK_TAG)
            if tag:
                rolled_back[version] = tag
        for version in sorted(touched):
            text = version_description(version, aliases, move, rolled_back.get(version))
            self.client.update_model_version(self.model_name, version, description=text)
        self.client.update_registered_model(
            self.model_name, description=model_description(aliases, move, rolled_back)
        )

    @staticmethod
    def _check_alias(alias: str) -> None:
        if alias not in ALIASES:
            raise RegistryError(f"unknown alias {alias!r}: driftloop uses {', '.join(ALIASES)}")


def _is_not_found(exc: MlflowException) -> bool:
    code = getattr(exc, "error_code", "")
    return code in ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND") or "not found" in str(exc).lower()
