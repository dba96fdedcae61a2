"""Packaging reads the version from the registry only when the caller has not just
registered it: the training flow hands over registration's answer (one read less)."""

from __future__ import annotations

from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import pytest

import bentos.packaging as packaging
from registry import VersionInfo


def info(version: str, stored: dict[str, str] | None) -> VersionInfo:
    return VersionInfo(
        name="m",
        version=version,
        run_id="r1",
        source="models:/m-1",
        aliases=(),
        tags=dict(stored or {}),
        created_at=datetime(2026, 1, 1, tzinfo=UTC),
        stored_tags=stored,
    )


class FakeRegistry:
    """Counts reads; records the tag merge it is asked for."""

    model_name = "m"
    tracking_uri = "http://mlflow.invalid"

    def __init__(self) -> None:
        self.reads: list[str] = []
        self.merged: list[tuple[str, dict[str, str], Any]] = []

    def get(self, version: str) -> VersionInfo:
        self.reads.append(str(version))
        return info(str(version), {"data_digest": "from-get"})

    def set_tags(self, version: str, tags: dict[str, str], current: Any = None) -> None:
        self.merged.append((version, tags, current))


@pytest.fixture
def fake_build(monkeypatch: pytest.MonkeyPatch) -> list[VersionInfo]:
    """No BentoML store or build: what packaging imported and built is recorded."""
    seen: list[VersionInfo] = []

    def import_version(registry: Any, version: str, info: VersionInfo, **_: Any) -> Any:
        seen.append(info)
        return SimpleNamespace(tag=f"m:v{info.version}")

    monkeypatch.setattr(packaging, "import_version", import_version)
    monkeypatch.setattr(
        packaging, "build_bento", lambda info, tag: (f"m-service:v{info.version}", True)
    )
    return seen


def test_registrations_answer_is_used_without_a_read(fake_build: list[VersionInfo]) -> None:
    registry = FakeRegistry()
    registered = info("3", {"data_digest": "abc"})
    packed = packaging.package_version(
        "m",
        "3",
        registry.tracking_uri,
        registry=registry,
        info=registered,  # type: ignore[arg-type]
    )
    assert registry.reads == []
    assert fake_build == [registered]
    assert packed.bento_tag == "m-service:v3"
    # The Bento tags are merged into the tags registration stored.
    assert registry.merged == [
        ("3", {"bento_tag": "m-service:v3", "bento_model_tag": "m:v3"}, {"data_digest": "abc"})
    ]


@pytest.mark.parametrize(
    "given",
    [None, info("2", {"data_digest": "abc"}), info("3", None)],
    ids=["none", "another version", "tags not known"],
)
def test_without_a_usable_answer_the_version_is_read(
    fake_build: list[VersionInfo], given: VersionInfo | None
) -> None:
    registry = FakeRegistry()
    packaging.package_version("m", "3", registry.tracking_uri, registry=registry, info=given)  # type: ignore[arg-type]
    assert registry.reads == ["3"]
    assert fake_build[0].tags == {"data_digest": "from-get"}
    assert registry.merged[0][2] == {"data_digest": "from-get"}
