"""Copy the targets table of bench/RESULTS.md into the README's benchmark section.

`python -m bench` does this after a full run (not `--quick`, not `--only`), so the README
always shows the figures of the committed RESULTS.md and never figures of its own.
`python -m bench.readme` does it by hand.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from bench.common import REPO

README = REPO / "README.md"
RESULTS = REPO / "bench" / "RESULTS.md"
BEGIN = "<!-- bench:begin (written by python -m bench from bench/RESULTS.md) -->"
END = "<!-- bench:end -->"


def summary(results: str) -> str:
    """The run's date/machine/load lines and its targets table, from RESULTS.md's text."""
    facts = [
        line for line in results.splitlines() if re.match(r"- (date|machine|load|steal)", line)
    ]
    match = re.search(r"^## Targets\n\n(.*?)(?:\n\n|\Z)", results, re.S | re.M)
    if match is None:
        raise ValueError("RESULTS.md has no '## Targets' table")
    table = match.group(1)
    return "\n".join(["From the committed run:", "", *facts, "", table])


def update(readme: Path = README, results: Path = RESULTS) -> bool:
    """Rewrite the block between the markers; returns whether the README changed."""
    text = readme.read_text()
    if BEGIN not in text or END not in text:
        raise ValueError(f"{readme} has no {BEGIN!r} … {END!r} block")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    new = f"{head}{BEGIN}\n{summary(results.read_text())}\n{END}{tail}"
    if new == text:
        return False
    readme.write_text(new)
    return True


if __name__ == "__main__":
    print("README.md updated" if update() else "README.md already up to date")
    sys.exit(0)
