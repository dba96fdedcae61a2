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


def run_fresh(script: str) -> None:
    """Run `script` in a new interpreter; it prints "ok" when its asserts held."""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


def test_imports_are_frozen_once_per_stage_and_later_garbage_is_still_collected() -> None:
    run_fresh(SCRIPT)


NEW_IMPORTS = """
import gc
from monitoring.heap import freeze_new_imports
assert freeze_new_imports() is True
frozen = gc.get_freeze_count()
assert freeze_new_imports() is False  # nothing imported since
garbage = []
garbage.append(garbage)
import fractions  # a module imported lazily, as a flow's first run does
assert freeze_new_imports() is True and gc.get_freeze_count() > frozen
assert freeze_new_imports() is False
del garbage  # frozen while alive: kept (the bounded cost of a freeze)
after = gc.get_freeze_count()
later = []
later.append(later)
del later
assert gc.collect() >= 1 and gc.get_freeze_count() == after  # later cycles still go
print("ok")
"""


def test_a_freeze_again_happens_only_after_new_imports() -> None:
    run_fresh(NEW_IMPORTS)
