"""monitoring.heap: the import-time objects frozen once per stage (in a fresh interpreter:
freezing the test process would keep its later garbage)."""

from __future__ import annotations

import subprocess
import sys

SCRIPT = """
import gc
from monitoring.heap import freeze_imports
assert gc.get_freeze_count() == 0
assert freeze_imports("check") is True
frozen = gc.get_freeze_count()
assert frozen > 1000, frozen
garbage = []
garbage.append(garbage)  # a cycle made after the freeze
assert freeze_imports("check") is False and gc.get_freeze_count() == frozen
del garbage
assert gc.collect() >= 1  # still collected: only the earlier objects were frozen
assert freeze_imports("evidently") is True and gc.get_freeze_count() >= frozen
print("ok")
"""


def test_imports_are_frozen_once_per_stage_and_later_garbage_is_still_collected() -> None:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
