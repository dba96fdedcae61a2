"""Headless Chromium for the pages people look at: the rendered text of a page (its DOM
after the scripts ran) and screenshots. Used by `driftloop demo` (screenshots of the
key pages) and by the browser test; Chromium comes from the OS packages
(`apt-get install chromium`), nothing is downloaded at run time.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
INSTALL_HINT = "install Chromium (Debian/Ubuntu: apt-get install chromium)"


class BrowserError(RuntimeError):
    """No usable Chromium, or it failed on a page."""


def find_chromium() -> str | None:
    """The Chromium executable (DRIFTLOOP_CHROMIUM, else the first on PATH), or None."""
    configured = os.environ.get("DRIFTLOOP_CHROMIUM")
    if configured:
        return configured if Path(configured).exists() else shutil.which(configured)
    for name in CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    return None


def _argv(chromium: str, *extra: str, budget_ms: int, size: tuple[int, int]) -> list[str]:
    return [
        chromium,
        "--headless",
        "--no-sandbox",  # root in containers and CI; the pages are our own local servers
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--hide-scrollbars",
        "--no-first-run",
        f"--window-size={size[0]},{size[1]}",
        f"--virtual-time-budget={budget_ms}",
        *extra,
    ]


def _run(argv: list[str], timeout_s: float) -> subprocess.CompletedProcess[str]:
    with tempfile.TemporaryDirectory(prefix="driftloop-chromium-") as profile:
        try:
            return subprocess.run(
                [*argv[:-1], f"--user-data-dir={profile}", argv[-1]],
                capture_output=True,
                text=True,
                timeout=timeout_s,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise BrowserError(f"Chromium took over {timeout_s:.0f} s on {argv[-1]}") from exc


def rendered_dom(
    url: str, budget_ms: int = 15_000, timeout_s: float = 90.0, size: tuple[int, int] = (1400, 1000)
) -> str:
    """The page's HTML after its scripts ran for `budget_ms` of virtual time (network
    waits included), as a user's browser would show it."""
    chromium = find_chromium()
    if chromium is None:
        raise BrowserError(f"no Chromium found: {INSTALL_HINT}")
    done = _run(_argv(chromium, "--dump-dom", url, budget_ms=budget_ms, size=size), timeout_s)
    if done.returncode != 0 or not done.stdout.strip():
        raise BrowserError(
            f"Chromium failed on {url} (exit {done.returncode}): {done.stderr.strip()[-300:]}"
        )
    return done.stdout


def screenshot(
    url: str,
    path: Path,
    budget_ms: int = 15_000,
    timeout_s: float = 90.0,
    size: tuple[int, int] = (1400, 1000),
) -> Path:
    """A PNG of the page after `budget_ms` of virtual time."""
    chromium = find_chromium()
    if chromium is None:
        raise BrowserError(f"no Chromium found: {INSTALL_HINT}")
    path.parent.mkdir(parents=True, exist_ok=True)
    argv = _argv(chromium, f"--screenshot={path}", url, budget_ms=budget_ms, size=size)
    done = _run(argv, timeout_s)
    if done.returncode != 0 or not path.exists():
        raise BrowserError(
            f"Chromium could not screenshot {url} (exit {done.returncode}): "
            f"{done.stderr.strip()[-300:]}"
        )
    return path
