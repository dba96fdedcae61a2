"""Dataset sources, time-ordered splits and data contracts for driftloop.

Importing ``data`` is cheap: names are resolved lazily from the submodules on first
use, so ``import data`` never imports Great Expectations (only ``data.contract`` does).
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY: dict[str, str] = {
    "DataError": "data.errors",
    "Snapshot": "data.sources",
    "load_table": "data.sources",
    "load_snapshot": "data.sources",
    "dataset_digest": "data.sources",
    "infer_task": "data.sources",
    "describe_task_choice": "data.sources",
    "time_split": "data.split",
    "train_validation_split": "data.split",
    "slice_by_time": "data.split",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    """Import the submodule that defines ``name`` only when it is first asked for."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'data' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
