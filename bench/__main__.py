"""`python -m bench` (what `make bench` runs): every benchmark, then bench/RESULTS.md.

A full run (no `--quick`, no `--only`) also copies RESULTS.md's targets table into the
README (`bench/readme.py`).

    python -m bench                      # all sections (~16 min on 2 cores)
    python -m bench --quick              # shorter runs, fewer sizes (a smoke test)
    python -m bench --only serving       # one section (serving, monitoring, loop, training,
                                         # peers)
    python -m bench --output out.md      # write the table somewhere else

Each section starts what it needs (servers, stacks) in temp folders and stops it at the
end, even when it fails; a failed section is reported in the file and the exit code is 1.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path

from bench.common import (
    QUIET_ENV,
    REPO,
    Section,
    cpu_ticks,
    log,
    machine,
    preserved_environ,
    steal_share,
    wait_for_quiet,
)

SECTIONS = {
    "serving": "1. Serving",
    "monitoring": "2. Monitoring cost",
    "loop": "3. The loop",
    "training": "4. Training overhead",
    "peers": "5. Serving against other inference servers",
}
DEFAULT_OUTPUT = REPO / "bench" / "RESULTS.md"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short runs, fewer sizes")
    parser.add_argument("--only", choices=list(SECTIONS), action="append", help="run one section")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="Markdown file")
    args = parser.parse_args(argv)
    os.environ.update(QUIET_ENV)
    names = args.only or list(SECTIONS)
    started, run_ticks = time.perf_counter(), cpu_ticks()
    before = machine()
    sections: list[Section] = []
    for name in names:
        section = Section(name, SECTIONS[name])
        section.quiet = wait_for_quiet()
        log(f"section {section.title} (started on {section.quiet})")
        t0, ticks = time.perf_counter(), cpu_ticks()
        try:
            # A section's servers are gone afterwards: no URL of theirs may outlive it.
            with preserved_environ():
                importlib.import_module(f"bench.{name}.run").run(section, args.quick)
        except Exception as exc:  # report and go on: the other sections still mean something
            traceback.print_exc()
            section.error = f"{type(exc).__name__}: {str(exc).strip().splitlines()[-1][:300]}"
        section.seconds = time.perf_counter() - t0
        section.steal = steal_share(ticks, cpu_ticks())
        log(f"section {section.title} done in {section.seconds:.0f} s")
        sections.append(section)
    total = time.perf_counter() - started
    command = "python -m bench" + (" --quick" if args.quick else "")
    command += "".join(f" --only {n}" for n in args.only or [])
    write(
        args.output,
        sections,
        command,
        before,
        machine(),
        total,
        steal_share(run_ticks, cpu_ticks()),
    )
    log(f"wrote {args.output} ({total:.0f} s in all)")
    if not args.quick and not args.only and args.output.resolve() == DEFAULT_OUTPUT.resolve():
        from bench import readme

        readme.update()
        log("copied its targets table into README.md")
    return 1 if any(s.error for s in sections) else 0


def write(
    path: Path,
    sections: list[Section],
    command: str,
    before: dict[str, str],
    after: dict[str, str],
    total: float,
    steal: float | None = None,
) -> None:
    lines = [
        "# driftloop benchmarks",
        "",
        "Written by `make bench` (`python -m bench`); every figure below comes from that one "
        "run. Absolute numbers depend on the machine and on whatever else runs on it, so each "
        "is set against a baseline measured in the same run: the FastAPI wrapper (serving), "
        "the 1k-row check (monitoring), the alias poll interval (the loop), a plain fit "
        "(training), the best other inference server (peers). How to read and rerun them: "
        "[README.md](README.md).",
        "",
        f"- command: `{command}`",
        f"- date: {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- machine: {before['nproc']} cores, Python {before['python']}, {before['platform']}",
        f"- load average (1 min) before / after: {before['load_before']} / "
        f"{after['load_before']} (other processes share these cores)",
        f"- total wall time: {total / 60:.1f} min",
        "- steal over the run (time these virtual cores were ready while the hypervisor ran "
        f"others; each section's is in its header): {'–' if steal is None else f'{steal:.1%}'}",
        "",
        "## Targets",
        "",
        "| section | target | wanted | measured | met |",
        "|---|---|---|---|---|",
    ]
    for section in sections:
        if section.error:
            lines.append(f"| {section.title} | (section failed) | | `{section.error}` | ✗ |")
        for what, wanted, got, met in section.targets:
            mark = "✓" if met else ("✗" if met is False else "–")
            lines.append(f"| {section.title} | {what} | {wanted} | {got} | {mark} |")
    lines.append("")
    lines += [section.markdown() for section in sections]
    path.write_text("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
