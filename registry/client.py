"""The only code that talks to the MLflow model registry.

Aliases carry the lifecycle: ``champion`` serves, ``challenger`` gets the canary
share, ``previous`` is the rollback target. ``latest`` is never used. Every
alias move is recorded in the promotion history (see ``registry.history``).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from registry.history import AliasMove, PromotionHistory

CHAMPION = "champion"
CHALLENGER = "challenger"
PREVIOUS = "previous"
ALIASES = (CHAMPION, CHALLENGER, PREVIOUS)


class RegistryError(Exception):
    """A registry operation that cannot be carried out as asked (bad version, no alias...)."""


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
    status: str = "READY"
    metrics: dict[str, float] = field(default_factory=dict)

    @property
    def model_uri(self) -> str:
        return f"models:/{self.name}/{self.version}"

    def holdout_metric(self, metric: str) -> float | None:
        value = self.tags.get(f"holdout_{metric}")
        return float(value) if value not in (None, "") else None


def _version_info(mv: ModelVersion) -> VersionInfo:
    return VersionInfo(
        name=mv.name,
        version=str(mv.version),
        run_id=mv.run_id,
        source=mv.source,
        aliases=tuple(sorted(mv.aliases or ())),
        tags=dict(mv.tags or {}),
        created_at=datetime.fromtimestamp((mv.creation_timestamp or 0) / 1000, tz=UTC),
        status=str(mv.status),
    )


class Registry:
    """Register versions, read and move aliases, promote and roll back one model.

    One instance per registered model. Methods that move aliases record an
    `AliasMove` in the promotion history with the reason and figures given.
    """

    def __init__(self, model_name: str, tracking_uri: str, lock_dir: Path | None = None) -> None:
        self.model_name = model_name
        self.tracking_uri = tracking_uri
        self.client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
        self.history = PromotionHistory(self.client, model_name)
        self._lock_dir = lock_dir

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
        try:
            return _version_info(self.client.get_model_version(self.model_name, str(version)))
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
        try:
            model = self.client.get_registered_model(self.model_name)
        except MlflowException as exc:
            if _is_not_found(exc):
                return {}
            raise
        return {alias: str(version) for alias, version in (model.aliases or {}).items()}

    def download_model(self, version: str | int, dst_dir: Path) -> Path:
        """Download a version's MLflow model folder (MLmodel + files) into `dst_dir`."""
        from mlflow.artifacts import download_artifacts

        info = self.get(version)
        # The concrete artifact location (not models:/...), which resolves against
        # this registry's server rather than MLflow's global tracking URI.
        source = self.client.get_model_version_download_uri(self.model_name, info.version)
        local = download_artifacts(
            artifact_uri=source, dst_path=str(dst_dir), tracking_uri=self.tracking_uri
        )
        return Path(local)

    # -- writing ------------------------------------------------------------
    def register(
        self, model_uri: str, run_id: str | None, tags: dict[str, Any] | None = None
    ) -> VersionInfo:
        """Create a new version from a logged model and wait until it is READY."""
        if not self.exists():
            self.client.create_registered_model(
                self.model_name,
                description="Managed by driftloop: aliases champion / challenger / previous.",
            )
        # MLflow 3 logs models as `models:/m-<id>`; the server wants that id named too.
        model_id = (
            model_uri.removeprefix("models:/") if model_uri.startswith("models:/m-") else None
        )
        mv = self.client.create_model_version(
            self.model_name,
            source=model_uri,
            run_id=run_id,
            tags={k: str(v) for k, v in (tags or {}).items()},
            model_id=model_id,
        )
        return self._wait_ready(mv)

    def set_tags(self, version: str | int, tags: dict[str, Any]) -> None:
        for key, value in tags.items():
            self.client.set_model_version_tag(self.model_name, str(version), key, str(value))

    def set_alias(
        self,
        alias: str,
        version: str | int,
        reason: str,
        actor: str = "user",
        figures: dict[str, float] | None = None,
    ) -> AliasMove:
        """Point one alias at a version and record the move."""
        self._check_alias(alias)
        target = self.get(version)
        with self._locked():
            before = self.aliases()
            self.client.set_registered_model_alias(self.model_name, alias, target.version)
            move = AliasMove.now(
                action=f"set-{alias}",
                moves={alias: (before.get(alias), target.version)},
                reason=reason,
                actor=actor,
                figures=figures or {},
            )
            self._record(move)
        return move

    def clear_alias(self, alias: str, reason: str, actor: str = "user") -> AliasMove | None:
        self._check_alias(alias)
        with self._locked():
            before = self.aliases().get(alias)
            if before is None:
                return None
            self.client.delete_registered_model_alias(self.model_name, alias)
            move = AliasMove.now(
                action=f"clear-{alias}",
                moves={alias: (before, None)},
                reason=reason,
                actor=actor,
                figures={},
            )
            self._record(move)
        return move

    def promote(
        self,
        version: str | int,
        reason: str,
        actor: str = "user",
        figures: dict[str, float] | None = None,
    ) -> AliasMove:
        """Make `version` the champion; the old champion becomes `previous`.

        If `version` was the challenger, the challenger alias is cleared.
        """
        target = self.get(version)
        with self._locked():
            before = self.aliases()
            old_champion = before.get(CHAMPION)
            if old_champion == target.version:
                raise RegistryError(f"version {target.version} is already the champion")
            plan: dict[str, str | None] = {CHAMPION: target.version}
            if old_champion is not None:
                plan[PREVIOUS] = old_champion
            if before.get(CHALLENGER) == target.version:
                plan[CHALLENGER] = None
            return self._move("promote", plan, before, reason, actor, figures)

    def rollback(
        self, reason: str, actor: str = "user", figures: dict[str, float] | None = None
    ) -> AliasMove:
        """Swap champion and previous: the previous champion serves again."""
        with self._locked():
            before = self.aliases()
            previous, champion = before.get(PREVIOUS), before.get(CHAMPION)
            if previous is None:
                raise RegistryError(
                    f"model {self.model_name!r} has no 'previous' version to roll back to "
                    f"(champion: {champion or 'none'}); promote a version first"
                )
            plan: dict[str, str | None] = {CHAMPION: previous, PREVIOUS: champion}
            return self._move("rollback", plan, before, reason, actor, figures)

    # -- internals ------------------------------------------------------------
    def _move(
        self,
        action: str,
        plan: dict[str, str | None],
        before: dict[str, str],
        reason: str,
        actor: str,
        figures: dict[str, float] | None,
    ) -> AliasMove:
        """Apply an alias plan and record it as one decision (caller holds the lock)."""
        self._apply(plan, before)
        move = AliasMove.now(
            action=action,
            moves={alias: (before.get(alias), new) for alias, new in plan.items()},
            reason=reason,
            actor=actor,
            figures=figures or {},
        )
        self._record(move)
        return move

    def _apply(self, plan: dict[str, str | None], before: dict[str, str]) -> None:
        """Set several aliases; on failure put back the ones already changed.

        MLflow has no multi-alias transaction. `champion` is written after
        `previous` so a reader never sees a champion without its fallback.
        """
        order = sorted(plan, key=lambda alias: alias == CHAMPION)
        done: list[str] = []
        try:
            for alias in order:
                new = plan[alias]
                if new is None:
                    self.client.delete_registered_model_alias(self.model_name, alias)
                else:
                    self.client.set_registered_model_alias(self.model_name, alias, new)
                done.append(alias)
        except Exception:
            for alias in reversed(done):
                old = before.get(alias)
                try:
                    if old is None:
                        self.client.delete_registered_model_alias(self.model_name, alias)
                    else:
                        self.client.set_registered_model_alias(self.model_name, alias, old)
                except MlflowException:
                    pass  # best effort; the original error is what the user needs
            raise

    def _record(self, move: AliasMove) -> None:
        self.history.append(move)
        for alias, (_, new) in move.moves.items():
            if new is not None:
                self.set_tags(
                    new,
                    {f"{alias}_since": move.at, "last_decision": f"{move.action}: {move.reason}"},
                )

    def _wait_ready(self, mv: ModelVersion, timeout_s: float = 60.0) -> VersionInfo:
        deadline = time.monotonic() + timeout_s
        while str(mv.status) not in ("READY", "ModelVersionStatus.READY"):
            if "FAILED" in str(mv.status):
                raise RegistryError(f"version {mv.version} failed to register: {mv.status_message}")
            if time.monotonic() > deadline:
                raise RegistryError(f"version {mv.version} not READY after {timeout_s:.0f} s")
            time.sleep(0.2)
            mv = self.client.get_model_version(self.model_name, mv.version)
        return _version_info(mv)

    @staticmethod
    def _check_alias(alias: str) -> None:
        if alias not in ALIASES:
            raise RegistryError(f"unknown alias {alias!r}: driftloop uses {', '.join(ALIASES)}")

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """Serialise alias moves made from this machine (CLI, flows, monitor)."""
        if self._lock_dir is None:
            yield
            return
        import portalocker

        self._lock_dir.mkdir(parents=True, exist_ok=True)
        lock_file = self._lock_dir / f"registry-{self.model_name}.lock"
        with portalocker.Lock(str(lock_file), timeout=30):
            yield


def _is_not_found(exc: MlflowException) -> bool:
    code = getattr(exc, "error_code", "")
    return code in ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND") or "not found" in str(exc).lower()
