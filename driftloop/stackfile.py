"""The local stack's state file: which servers `driftloop up` started, where."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def stack_file(state: Path) -> Path:
    return state / "stack.json"


def read_stack(state: Path) -> dict[str, Any] | None:
    """The running stack's description, or None when `driftloop up` has not run."""
    path = stack_file(state)
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def write_stack(state: Path, info: dict[str, Any]) -> None:
    state.mkdir(parents=True, exist_ok=True)
    tmp = stack_file(state).with_suffix(".tmp")
    tmp.write_text(json.dumps(info, indent=2))
    tmp.replace(stack_file(state))
