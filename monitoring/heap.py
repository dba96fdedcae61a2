"""Short garbage-collector passes during a check.

A check runs in a process that has imported MLflow, Prefect, pandas, SQLAlchemy,
Evidently and plotly: ~475,000 objects the cyclic garbage collector tracks. A full
collection walks all of them (0.15-0.45 s here), and the check's own allocations trigger
one or two per check at unpredictable points — in `bench --only monitoring` the same
step took 0.005 s in one check and 0.45 s in the next. `gc.freeze()` (O(1)) moves every
object tracked so far into a generation the collector never walks; objects made later
are collected as before. The serving worker does the same after start-up.
"""

from __future__ import annotations

import gc
import sys

_frozen: set[str] = set()
_modules_at_freeze = -1  # len(sys.modules) at this process's last freeze


def freeze_imports(stage: str) -> bool:
    """Freeze what exists now, once per process and `stage` (e.g. "check" after the
    check's imports, "evidently" after Evidently's); False when already done.

    Once per stage, not per call: a cycle that becomes garbage after a freeze is never
    collected, so freezing again at every check would keep each check's garbage."""
    if stage in _frozen:
        return False
    _freeze()
    _frozen.add(stage)
    return True


def freeze_new_imports() -> bool:
    """Freeze what exists now unless no module was imported since this process's last
    freeze; False when nothing new was imported.

    For code that imports its libraries lazily, run after run in one process (the
    training flow: Great Expectations, skops, BentoML, Qdrant on its first run): the
    next run freezes them too. Before, a full collection of those objects (0.4 s)
    landed in the second run's validation in 7 of 21 A/B runs of the training flow
    (bench/README.md, "Session 11"). A cycle that is garbage at a freeze is kept, so
    freezes are bounded by the imports that grow `sys.modules`, not one per run."""
    if _modules_at_freeze >= len(sys.modules):
        return False
    _freeze()
    return True


def _freeze() -> None:
    global _modules_at_freeze
    gc.freeze()
    _modules_at_freeze = len(sys.modules)
