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

_frozen: set[str] = set()


def freeze_imports(stage: str) -> bool:
    """Freeze what exists now, once per process and `stage` (e.g. "check" after the
    check's imports, "evidently" after Evidently's); False when already done.

    Once per stage, not per call: a cycle that becomes garbage after a freeze is never
    collected, so freezing again at every check would keep each check's garbage."""
    if stage in _frozen:
        return False
    gc.freeze()
    _frozen.add(stage)
    return True
