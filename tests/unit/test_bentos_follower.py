"""Following the aliases: swaps, circuit breaker, cache and pinned fallback (no servers)."""

from __future__ import annotations

import itertools
import threading
import time
from pathlib import Path

import pytest

from bentos.follower import AliasCache, AliasFollower, CircuitBreaker
from bentos.schema import LabelSchema, RecordSchema
from bentos.store import LoadedModel


class Registry:
    def __init__(self, aliases: dict[str, str]) -> None:
        self.current = aliases
        self.down = False

    def aliases(self) -> dict[str, str]:
        if self.down:
            raise ConnectionError("connection refused")
        return dict(self.current)


class Loader:
    """Versions in `local` load offline; others need the registry (allow_import)."""

    def __init__(self, local: set[str] | None = None, broken: set[str] | None = None) -> None:
        self.local = local if local is not None else {"1", "2", "3"}
        self.broken = broken or set()
        self.calls: list[tuple[str, bool]] = []

    def __call__(self, version: str, allow_import: bool) -> LoadedModel:
        self.calls.append((version, allow_import))
        if version in self.broken or (version not in self.local and not allow_import):
            raise LookupError(f"version {version} unavailable")
        self.local.add(version)
        return LoadedModel(version, f"m:v{version}", object(), RecordSchema(()), LabelSchema())


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def follower(
    tmp_path: Path,
    registry: Registry,
    loader: Loader,
    clock: Clock | None = None,
    pinned: str | None = None,
) -> AliasFollower:
    return AliasFollower(
        model_name="m",
        source=registry,
        loader=loader,
        cache=AliasCache(tmp_path / "serving" / "m" / "aliases.json"),
        poll_interval_s=0.1,
        breaker=CircuitBreaker(1.0, 8.0, clock=clock or Clock()),
        pinned_version=pinned,
    )


def versions(f: AliasFollower) -> tuple[str | None, str | None]:
    snap = f.snapshot
    return (
        snap.champion.version if snap.champion else None,
        snap.challenger.version if snap.challenger else None,
    )


def test_breaker_backoff_doubles_up_to_the_cap() -> None:
    clock = Clock()
    breaker = CircuitBreaker(1.0, 8.0, clock=clock)
    waits = []
    for _ in range(6):
        breaker.record_failure(ConnectionError("down"))
        waits.append(breaker.backoff_s())
    assert waits == [1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    assert not breaker.allows_call()
    clock.now += 8.0
    assert breaker.allows_call()
    assert breaker.record_success() is True and breaker.status()["reachable"]


def test_aliases_are_loaded_and_swapped(tmp_path: Path) -> None:
    registry = Registry({"champion": "1", "challenger": "2", "previous": "3"})
    f = follower(tmp_path, registry, Loader())
    f.poll_once()
    assert versions(f) == ("1", "2")
    assert f.status()["loaded_versions"] == ["1", "2", "3"]  # previous kept for rollback
    old_champion = f.snapshot.champion
    registry.current = {"champion": "3", "previous": "1"}  # rollback, challenger cleared
    f.poll_once()
    assert versions(f) == ("3", None)
    assert f.swaps == 2
    assert old_champion is not None and old_champion.version == "1"  # in-flight users keep it


def test_registry_down_keeps_serving_and_reports_it(tmp_path: Path) -> None:
    clock = Clock()
    registry = Registry({"champion": "1"})
    f = follower(tmp_path, registry, Loader(), clock)
    f.poll_once()
    registry.down = True
    f.poll_once()
    status = f.status()
    assert versions(f) == ("1", None)
    assert status["registry"]["reachable"] is False
    assert "connection refused" in status["registry"]["last_error"]
    f.poll_once()  # inside the backoff: no call, no change
    assert f.breaker.failures == 1
    registry.down = False
    registry.current = {"champion": "2"}
    clock.now += 1.0
    f.poll_once()
    assert versions(f) == ("2", None) and f.status()["registry"]["reachable"] is True


def test_a_restart_while_the_registry_is_down_serves_the_cached_aliases(tmp_path: Path) -> None:
    registry = Registry({"champion": "2", "challenger": "1"})
    follower(tmp_path, registry, Loader()).poll_once()  # writes the cache
    registry.down = True
    loader = Loader()
    restarted = follower(tmp_path, registry, loader)
    restarted.start_from_cache()
    restarted.poll_once()
    assert versions(restarted) == ("2", "1")
    assert restarted.snapshot.source == "cache"
    assert all(allow is False for _, allow in loader.calls)  # nothing fetched from MLflow


def test_a_restart_serves_its_champion_before_loading_previous_and_challenger(
    tmp_path: Path,
) -> None:
    registry = Registry({"champion": "2", "challenger": "3", "previous": "1"})
    follower(tmp_path, registry, Loader()).poll_once()  # writes the cache
    seen: list[tuple[str, str | None]] = []

    class Watching(Loader):
        def __call__(self, version: str, allow_import: bool) -> LoadedModel:
            champion = restarted.snapshot.champion
            seen.append((version, champion.version if champion else None))
            return super().__call__(version, allow_import)

    restarted = follower(tmp_path, registry, Watching())
    restarted.start_from_cache()
    assert seen[0] == ("2", None)  # the champion first, alone
    assert sorted(seen[1:]) == [("1", "2"), ("3", "2")]  # the others while it serves
    assert versions(restarted) == ("2", "3") and restarted.snapshot.previous is not None


def test_start_load_first_returns_with_the_champion_and_loads_the_rest_in_its_thread(
    tmp_path: Path,
) -> None:
    registry = Registry({"champion": "2", "challenger": "3", "previous": "1"})
    follower(tmp_path, registry, Loader()).poll_once()  # writes the cache
    threads: dict[str, str] = {}

    class Watching(Loader):
        def __call__(self, version: str, allow_import: bool) -> LoadedModel:
            threads[version] = threading.current_thread().name
            return super().__call__(version, allow_import)

    restarted = follower(tmp_path, registry, Watching())
    restarted.poll_interval_s = 60.0  # no registry poll during the test
    restarted.start(load_first=True)
    try:
        # start() returned as soon as the cached champion was loaded, in this thread
        assert threads["2"] == threading.current_thread().name
        assert restarted.snapshot.champion is not None
        assert restarted.snapshot.champion.version == "2"
        deadline = time.monotonic() + 10
        while restarted.snapshot.previous is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert versions(restarted) == ("2", "3") and restarted.snapshot.previous is not None
        assert threads["3"] == threads["1"] == "alias-follower"
        assert restarted.snapshot.source == "cache"
    finally:
        restarted.stop()


def test_without_cache_or_registry_a_bento_serves_its_own_version(tmp_path: Path) -> None:
    registry = Registry({})
    registry.down = True
    f = follower(tmp_path, registry, Loader(), pinned="3")
    f.start_from_cache()
    assert versions(f) == ("3", None) and f.snapshot.source == "pinned"


def test_a_version_that_fails_to_load_does_not_replace_the_champion(tmp_path: Path) -> None:
    clock = Clock()
    registry = Registry({"champion": "1"})
    loader = Loader(broken={"2"})
    f = follower(tmp_path, registry, loader, clock)
    f.poll_once()
    registry.current = {"champion": "2"}
    f.poll_once()
    assert versions(f) == ("1", None)
    assert "unavailable" in f.status()["load_errors"]["2"]
    loader.broken.clear()
    clock.now += 1.0  # the first backoff
    f.poll_once()
    assert versions(f) == ("2", None)
    assert f.status()["failed_loads"] == {} and f.status()["load_errors"] == {}


def test_failed_loads_back_off_per_version_up_to_the_cap(tmp_path: Path) -> None:
    clock = Clock()
    registry = Registry({"champion": "1", "challenger": "2"})
    loader = Loader(broken={"2"})
    f = follower(tmp_path, registry, loader, clock)
    attempts_at = []
    for step in range(400):  # 40 s of polls every 0.1 s
        clock.now = 100.0 + step / 10
        before = len(loader.calls)
        f.poll_once()
        if any(v == "2" for v, _ in loader.calls[before:]):
            attempts_at.append(round(clock.now - 100.0, 1))
    gaps = [round(b - a, 1) for a, b in itertools.pairwise(attempts_at)]
    assert gaps[:4] == [1.0, 2.0, 4.0, 8.0] and set(gaps[4:]) == {8.0}  # capped at 8 s
    assert sum(v == "1" for v, _ in loader.calls) == 1  # the good version loaded once
    failed = f.status()["failed_loads"]["2"]
    assert failed["attempts"] == len(attempts_at) and "unavailable" in failed["error"]
    assert 0 < failed["retry_in_s"] <= 8.0


def test_previous_is_loaded_and_in_the_snapshot(tmp_path: Path) -> None:
    f = follower(tmp_path, Registry({"champion": "2", "previous": "1"}), Loader())
    f.poll_once()
    assert f.snapshot.previous is not None and f.snapshot.previous.version == "1"
    assert f.status()["previous"] == "1"


def test_versions_missing_locally_are_imported_only_when_the_registry_answers(
    tmp_path: Path,
) -> None:
    loader = Loader(local={"1"})
    f = follower(tmp_path, Registry({"champion": "1", "challenger": "4"}), loader)
    f.poll_once()
    assert ("4", True) in loader.calls and versions(f) == ("1", "4")


@pytest.mark.parametrize("content", ["", "not json", '{"aliases": 3}'])
def test_a_damaged_cache_is_ignored(tmp_path: Path, content: str) -> None:
    cache = AliasCache(tmp_path / "aliases.json")
    cache.path.write_text(content)
    assert cache.load() is None


class TaggedRegistry(Registry):
    """A registry that also has registered-model tags (as `registry.Registry` does)."""

    def __init__(self, aliases: dict[str, str], tags: dict[str, str] | None = None) -> None:
        super().__init__(aliases)
        self.tags = tags or {}

    def aliases_and_tags(self) -> tuple[dict[str, str], dict[str, str]]:
        return self.aliases(), dict(self.tags)


def test_the_canary_share_tag_is_followed_cached_and_survives_a_registry_outage(
    tmp_path: Path,
) -> None:
    registry = TaggedRegistry({"champion": "1", "challenger": "2"})
    f = follower(tmp_path, registry, Loader())
    f.poll_once()
    assert f.share.value is None and f.share.error is None  # no tag: the setting applies
    registry.tags["driftloop.canary_share"] = "0.25"
    f.poll_once()
    assert (f.share.value, f.share.source) == (0.25, "registry")
    registry.down = True
    f.breaker.next_attempt_at = 0.0
    f.poll_once()
    assert f.share.value == 0.25  # keeps the last share while the registry is down
    # A restart while MLflow is down starts from the cache, share included.
    again = follower(tmp_path, registry, Loader())
    again.start_from_cache()
    assert (again.share.value, again.share.source) == (0.25, "cache")
    registry.down = False
    del registry.tags["driftloop.canary_share"]
    f.breaker.next_attempt_at = 0.0
    f.poll_once()
    assert f.share.value is None and f.share.raw is None


@pytest.mark.parametrize("raw", ["1.5", "-1", "half", "nan"])
def test_an_unusable_share_tag_is_ignored_and_said_why(tmp_path: Path, raw: str) -> None:
    registry = TaggedRegistry({"champion": "1"}, {"driftloop.canary_share": raw})
    f = follower(tmp_path, registry, Loader())
    f.poll_once()
    assert f.share.value is None and f.share.raw == raw
    assert f.share.error is not None and "is not a share" in f.share.error
