"""Follow the registry's aliases and keep the right models loaded, without ever failing.

A background thread reads the aliases every `poll_interval_s`, loads what they
point at (from the local BentoML store, importing from MLflow when a version is
not there yet) and swaps an immutable `Snapshot` in one assignment, so requests
in flight finish on the models they started with and no request waits for a load.
The ``previous`` version is kept loaded too, so a rollback is a pointer swap and
it can answer for a champion that fails (see `bentos.app`).

The registered model's tag ``driftloop.canary_share`` is read in the same call: while
set, it is the challenger's share of traffic (`canary`), so the share changes without a
restart; unset (or unusable), the service's `canary_share` setting applies.

A version that fails to load is retried with its own exponential backoff (the
registry breaker's bounds), not at every poll, and shows in /readyz with its error.

When the registry fails, a circuit breaker spaces the retries out (exponential
backoff), the failure is logged once and shown in /readyz, and the service keeps
serving what it has. The last aliases seen are cached on disk, so a restart
while MLflow is down serves the same versions from the local store.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from bentos.store import LoadedModel
from config.names import ALIASES, CHALLENGER, CHAMPION, PREVIOUS
from registry.client import CANARY_SHARE_TAG, parse_canary_share

log = logging.getLogger("driftloop.serving")

_KEPT_LOADED = ALIASES


class AliasSource(Protocol):
    """What the follower needs from the registry (``registry.Registry`` fits)."""

    def aliases(self) -> dict[str, str]: ...


@dataclass(frozen=True)
class ShareOverride:
    """The canary share the registry sets (`CANARY_SHARE_TAG`); replaced as a whole.

    `value` None: no usable tag, the service's setting applies; `error` says why a tag
    that is set cannot be used (shown in /metadata).
    """

    value: float | None = None
    raw: str | None = None
    source: str = "none"  # registry | cache | none
    error: str | None = None

    @classmethod
    def from_tag(cls, raw: str | None, source: str) -> ShareOverride:
        if raw is None:
            return cls(None, None, source)
        try:
            return cls(parse_canary_share(raw, f"registry tag {CANARY_SHARE_TAG}"), raw, source)
        except ValueError as exc:
            return cls(None, raw, source, str(exc))


class ModelLoader(Protocol):
    """Load a version: local store first; `allow_import` lets it fetch from MLflow."""

    def __call__(self, version: str, allow_import: bool) -> LoadedModel: ...


@dataclass(frozen=True)
class Snapshot:
    """What serves right now. Replaced as a whole, never mutated."""

    champion: LoadedModel | None = None
    challenger: LoadedModel | None = None
    aliases: Mapping[str, str] = field(default_factory=dict)
    source: str = "none"  # registry | cache | pinned | none
    previous: LoadedModel | None = None  # answers for a champion that fails

    @property
    def ready(self) -> bool:
        return self.champion is not None


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds")


class CircuitBreaker:
    """Closed while calls succeed; open after a failure, retried with exponential backoff."""

    def __init__(
        self,
        initial_backoff_s: float,
        max_backoff_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.initial_backoff_s = initial_backoff_s
        self.max_backoff_s = max_backoff_s
        self.clock = clock
        self.failures = 0
        self.last_error: str | None = None
        self.next_attempt_at = 0.0
        self.last_success_wall: float | None = None
        self.opened_wall: float | None = None

    @property
    def is_open(self) -> bool:
        return self.failures > 0

    def allows_call(self) -> bool:
        return not self.is_open or self.clock() >= self.next_attempt_at

    def backoff_s(self) -> float:
        """Wait before the next attempt after `failures` failures in a row."""
        if self.failures == 0:
            return 0.0
        return min(self.initial_backoff_s * 2 ** (self.failures - 1), self.max_backoff_s)

    def record_success(self) -> bool:
        """Close the breaker; True when it was open (the registry came back)."""
        was_open = self.is_open
        self.failures = 0
        self.last_error = None
        self.opened_wall = None
        self.last_success_wall = time.time()
        return was_open

    def record_failure(self, error: BaseException) -> bool:
        """Open (or keep open) the breaker; True on the first failure of a run."""
        first = not self.is_open
        self.failures += 1
        self.last_error = f"{type(error).__name__}: {error}"[:500]
        if first:
            self.opened_wall = time.time()
        self.next_attempt_at = self.clock() + self.backoff_s()
        return first

    def status(self) -> dict[str, Any]:
        return {
            "reachable": not self.is_open,
            "state": "open" if self.is_open else "closed",
            "consecutive_failures": self.failures,
            "last_error": self.last_error,
            "down_since": _iso(self.opened_wall),
            "last_success_at": _iso(self.last_success_wall),
            "retry_in_s": round(max(0.0, self.next_attempt_at - self.clock()), 2)
            if self.is_open
            else None,
        }


class AliasCache:
    """The last aliases read from the registry, on disk (atomic replace)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def _read(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def load(self) -> dict[str, str] | None:
        aliases = self._read().get("aliases")
        if not isinstance(aliases, dict):
            return None
        return {str(k): str(v) for k, v in aliases.items()}

    def load_canary_share(self) -> str | None:
        """The canary share tag seen with the cached aliases (None: none was set)."""
        value = self._read().get("canary_share")
        return None if value is None else str(value)

    def save(
        self, model_name: str, aliases: Mapping[str, str], canary_share: str | None = None
    ) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(f".tmp{os.getpid()}")
        payload: dict[str, Any] = {
            "model_name": model_name,
            "aliases": dict(aliases),
            "saved_at": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        if canary_share is not None:
            payload["canary_share"] = canary_share
        tmp.write_text(json.dumps(payload, indent=2))
        os.replace(tmp, self.path)


class AliasFollower:
    """Keep `snapshot` in line with the registry's aliases from a background thread."""

    def __init__(
        self,
        model_name: str,
        source: AliasSource,
        loader: ModelLoader,
        cache: AliasCache,
        poll_interval_s: float,
        breaker: CircuitBreaker,
        pinned_version: str | None = None,
        on_change: Callable[[Snapshot], None] | None = None,
        on_registry: Callable[[bool], None] | None = None,
    ) -> None:
        self.model_name = model_name
        self.source = source
        self.loader = loader
        self.cache = cache
        self.poll_interval_s = poll_interval_s
        self.breaker = breaker
        self.pinned_version = pinned_version
        self.on_change = on_change
        self.on_registry = on_registry
        self.snapshot = Snapshot()
        self.load_errors: dict[str, str] = {}
        self._load_failures: dict[str, tuple[int, float]] = {}  # version: (failures, retry at)
        self.swaps = 0
        self._loaded: dict[str, LoadedModel] = {}
        self._known: dict[str, str] | None = None  # aliases last read from the registry
        self._known_share: str | None = None
        self.share = ShareOverride()  # the registry's canary share (one assignment)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()  # one reconcile at a time (thread vs. tests)

    # -- lifecycle ---------------------------------------------------------------------
    def start(self, load_first: bool = False) -> None:
        """Serve from the on-disk cache at once, then follow the registry.

        `load_first`: load the champion in the calling thread before following (the
        cached aliases from the local store, else one registry poll), so a serving worker
        only accepts connections once it can answer (with several workers, a worker that
        is still loading must not take requests its siblings could serve).
        """
        if load_first:
            try:
                self.start_from_cache(champion_only=True)
                if self.snapshot.champion is None:
                    self.poll_once()
            except Exception:  # never fail start-up: the thread keeps trying
                log.exception("loading the champion before serving failed; will retry")
        self._thread = threading.Thread(
            target=self._run, args=(not load_first,), name="alias-follower", daemon=True
        )
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)

    def _run(self, from_cache: bool = True) -> None:
        if from_cache:
            try:
                self.start_from_cache()
            except Exception:  # never let the thread die
                log.exception("serving from the alias cache failed")
        else:  # start() loaded the champion (from the cache, or after one poll)
            if self.snapshot.source == "cache":
                try:
                    self.start_from_cache()  # the cached challenger and `previous` too
                except Exception:
                    log.exception("loading the cached challenger/previous failed")
            self._stop.wait(self._next_wait_s())
        while not self._stop.is_set():
            try:
                self.poll_once()
            except Exception:
                log.exception("alias follower iteration failed; will retry")
            self._stop.wait(self._next_wait_s())

    def _next_wait_s(self) -> float:
        if self.breaker.is_open:
            return max(
                0.05, min(self.poll_interval_s, self.breaker.next_attempt_at - self.breaker.clock())
            )
        return self.poll_interval_s

    # -- one step ------------------------------------------------------------------------
    def start_from_cache(self, champion_only: bool = False) -> None:
        """Before the registry answers: the cached aliases, else the Bento's own version.

        `champion_only`: load just the cached champion (a starting worker answers as soon
        as it is loaded; `_run` then loads the challenger and `previous`).
        """
        cached = self.cache.load()
        self.share = ShareOverride.from_tag(self.cache.load_canary_share(), "cache")
        if cached:
            if cached.get(CHAMPION) and len(self._wanted_versions(cached)) > 1:
                # A restarted worker answers as soon as its champion is loaded; the
                # challenger and `previous` follow in the next reconcile.
                self.reconcile({CHAMPION: cached[CHAMPION]}, source="cache", allow_import=False)
                if champion_only and self.snapshot.champion is not None:
                    return
            self.reconcile(cached, source="cache", allow_import=False)
        elif self.pinned_version is not None:
            self.reconcile({CHAMPION: self.pinned_version}, source="pinned", allow_import=False)

    def poll_once(self) -> None:
        """Read the aliases (if the breaker allows) and apply them."""
        if not self.breaker.allows_call():
            return
        try:
            aliases, share_tag = self._read_source()
        except Exception as exc:  # any registry failure: keep serving what we have
            self._report_registry(False)
            if self.breaker.record_failure(exc):
                log.warning(
                    "registry unreachable (%s); serving %s from what is loaded; "
                    "retrying with backoff up to %.0f s",
                    self.breaker.last_error,
                    self._describe(self.snapshot),
                    self.breaker.max_backoff_s,
                )
            else:
                log.debug("registry still unreachable: %s", self.breaker.last_error)
            self._retry_missing_loads()
            return
        self._report_registry(True)
        if self.breaker.record_success():
            log.info("registry reachable again; following its aliases")
        self._follow_share(share_tag)
        if aliases != self._known or share_tag != self._known_share:
            try:
                self.cache.save(self.model_name, aliases, share_tag)
            except OSError as exc:
                log.warning("could not write the alias cache %s: %s", self.cache.path, exc)
        self._known = aliases
        self._known_share = share_tag
        if not aliases.get(CHAMPION) and self.pinned_version is not None:
            aliases = {**aliases, CHAMPION: self.pinned_version}
        self.reconcile(aliases, source="registry", allow_import=True)

    def _read_source(self) -> tuple[dict[str, str], str | None]:
        """(aliases, canary share tag) in one registry call when the source offers it."""
        both = getattr(self.source, "aliases_and_tags", None)
        if both is None:
            return dict(self.source.aliases()), None
        aliases, tags = both()
        return dict(aliases), tags.get(CANARY_SHARE_TAG)

    def _follow_share(self, raw: str | None) -> None:
        """Take the registry's canary share tag (logged when it changes)."""
        old = self.share
        if raw == old.raw and old.source == "registry":
            return
        new = ShareOverride.from_tag(raw, "registry")
        self.share = new  # one assignment: a request sees the old or the new share
        if new.raw != old.raw:
            if new.error:
                log.warning("ignoring %s: %s", CANARY_SHARE_TAG, new.error)
            elif new.value is None:
                log.info("canary share tag removed: the canary_share setting applies")
            else:
                log.info("canary share from the registry: %g", new.value)

    def _report_registry(self, up: bool) -> None:
        if self.on_registry is not None:
            try:
                self.on_registry(up)
            except Exception:
                log.debug("on_registry callback failed", exc_info=True)

    def _retry_missing_loads(self) -> None:
        """While the registry is down, versions already imported can still be loaded."""
        wanted = dict(self.snapshot.aliases) or (self.cache.load() or {})
        if wanted and any(v not in self._loaded for v in self._wanted_versions(wanted)):
            self.reconcile(wanted, source=self.snapshot.source or "cache", allow_import=False)

    def reconcile(self, aliases: Mapping[str, str], source: str, allow_import: bool) -> None:
        """Load what the aliases name, then swap the snapshot if anything changed."""
        with self._lock:
            for version in self._wanted_versions(aliases):
                if version not in self._loaded and self._load_due(version):
                    self._load(version, allow_import)
            old = self.snapshot
            new = self._snapshot_for(aliases, source, old)
            if (new.champion, new.challenger, new.previous, dict(new.aliases)) != (
                old.champion,
                old.challenger,
                old.previous,
                dict(old.aliases),
            ) or new.source != old.source:
                self.snapshot = new  # one assignment: requests see old or new, never half
                if (new.champion, new.challenger) != (old.champion, old.challenger):
                    self.swaps += 1
                    log.info("now serving %s (was %s)", self._describe(new), self._describe(old))
                if self.on_change is not None:
                    try:
                        self.on_change(new)
                    except Exception:
                        log.warning("on_change callback failed", exc_info=True)
            keep = set(self._wanted_versions(aliases))
            keep.update(m.version for m in (new.champion, new.challenger) if m is not None)
            for version in list(self._loaded):
                if version not in keep:
                    del self._loaded[version]
            for version in list(self._load_failures):
                if version not in keep:
                    self._load_failures.pop(version, None)
                    self.load_errors.pop(version, None)

    def _load(self, version: str, allow_import: bool) -> None:
        """Load one version into `_loaded`; a failure is kept (with its backoff), not raised."""
        try:
            started = time.perf_counter()
            self._loaded[version] = self.loader(version, allow_import)
            self.load_errors.pop(version, None)
            self._load_failures.pop(version, None)
            log.info(
                "loaded %s version %s in %.2f s",
                self.model_name,
                version,
                time.perf_counter() - started,
            )
        except Exception as exc:
            message = f"{type(exc).__name__}: {exc}"[:500]
            wait_s = self._load_failed(version, allow_import)
            if self.load_errors.get(version) != message:
                log.warning(
                    "cannot load %s version %s: %s (retrying in %.1f s)",
                    self.model_name,
                    version,
                    message,
                    wait_s,
                )
            self.load_errors[version] = message

    def _snapshot_for(self, aliases: Mapping[str, str], source: str, old: Snapshot) -> Snapshot:
        """The models the aliases name among those loaded; a champion that is not loaded
        keeps the old one serving (rather than nothing)."""
        champion_version = aliases.get(CHAMPION)
        champion = self._loaded.get(champion_version) if champion_version else None
        if champion is None:
            champion = old.champion
        challenger_version = aliases.get(CHALLENGER)
        challenger = self._loaded.get(challenger_version) if challenger_version else None
        if (
            challenger is not None
            and champion is not None
            and challenger.version == champion.version
        ):
            challenger = None
        previous_version = aliases.get(PREVIOUS)
        previous = self._loaded.get(previous_version) if previous_version else None
        return Snapshot(champion, challenger, dict(aliases), source, previous)

    def _load_due(self, version: str) -> bool:
        failures = self._load_failures.get(version)
        return failures is None or self.breaker.clock() >= failures[1]

    def _load_failed(self, version: str, allow_import: bool) -> float:
        """Space out the next load of `version` (exponential, bounded); the wait in s.

        An attempt made without the registry (`allow_import` False) failing is expected
        while it is down, so it does not grow the backoff of a version.
        """
        failures = self._load_failures.get(version, (0, 0.0))[0] + (1 if allow_import else 0)
        wait_s = 0.0
        if failures:
            wait_s = min(
                self.breaker.initial_backoff_s * 2 ** (failures - 1), self.breaker.max_backoff_s
            )
        self._load_failures[version] = (failures, self.breaker.clock() + wait_s)
        return wait_s

    @staticmethod
    def _wanted_versions(aliases: Mapping[str, str]) -> list[str]:
        return list(dict.fromkeys(aliases[a] for a in _KEPT_LOADED if aliases.get(a)))

    @staticmethod
    def _describe(snapshot: Snapshot) -> str:
        if snapshot.champion is None:
            return "no model"
        text = f"champion v{snapshot.champion.version}"
        if snapshot.challenger is not None:
            text += f" + challenger v{snapshot.challenger.version}"
        return text

    def status(self) -> dict[str, Any]:
        snap = self.snapshot
        return {
            CHAMPION: snap.champion.version if snap.champion else None,
            CHALLENGER: snap.challenger.version if snap.challenger else None,
            "aliases": dict(snap.aliases),
            "aliases_from": snap.source,
            "loaded_versions": sorted(self._loaded, key=lambda v: (len(v), v)),
            PREVIOUS: snap.previous.version if snap.previous else None,
            "load_errors": dict(self.load_errors),
            "failed_loads": {
                version: {
                    "error": self.load_errors.get(version),
                    "attempts": failures,
                    "retry_in_s": round(max(0.0, retry_at - self.breaker.clock()), 2),
                }
                for version, (failures, retry_at) in self._load_failures.items()
            },
            "registry": self.breaker.status(),
        }
