"""The peers' own virtualenvs: created on first use under `.driftloop/bench/peers/<peer>/venv`.

A peer's pins clash with the project's (MLServer wants its own FastAPI, Ray its own
everything), so each gets a venv of its own, installed from PyPI with the project's `uv`
(else pip) and reused while its requirement list is unchanged (`installed.json`). The
model's own `requirements.txt` (the exact versions it was logged with) goes in too, so
every peer loads the very model driftloop serves.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from bench.common import REPO, log

PEERS_STATE = REPO / ".driftloop" / "bench" / "peers"
INSTALL_TIMEOUT_S = 1200.0


class PeerFailed(RuntimeError):
    """A peer could not be installed, started or checked; the message is the table's reason."""


def model_requirements(model_folder: Path) -> list[str]:
    """The pinned requirements the model was logged with (its `requirements.txt`)."""
    path = model_folder / "requirements.txt"
    if not path.is_file():
        return []
    lines = (line.strip() for line in path.read_text().splitlines())
    return [line for line in lines if line and not line.startswith(("#", "-"))]


def _uv() -> str | None:
    local = Path(sys.executable).parent / "uv"
    return str(local) if local.is_file() else shutil.which("uv")


def ensure_venv(name: str, requirements: list[str], root: Path = PEERS_STATE) -> Path:
    """The venv of peer `name` holding `requirements` (created or re-created if needed).

    Returns the venv folder; raises PeerFailed naming what went wrong (the log of the
    install is kept beside the venv).
    """
    folder = root / name
    venv = folder / "venv"
    stamp = folder / "installed.json"
    wanted = sorted(requirements)
    python = venv / "bin" / "python"
    if python.is_file() and stamp.is_file() and json.loads(stamp.read_text()) == wanted:
        return venv
    log(f"peers: installing {name}'s venv ({', '.join(wanted)}); once, then reused")
    shutil.rmtree(venv, ignore_errors=True)
    stamp.unlink(missing_ok=True)
    folder.mkdir(parents=True, exist_ok=True)
    install_log = folder / "install.log"
    uv = _uv()
    if uv:
        steps = [
            [uv, "venv", "--quiet", "--python", sys.executable, str(venv)],
            [uv, "pip", "install", "--quiet", "--python", str(python), *wanted],
        ]
    else:
        steps = [
            [sys.executable, "-m", "venv", str(venv)],
            [str(python), "-m", "pip", "install", "--quiet", *wanted],
        ]
    with install_log.open("w") as out:
        for argv in steps:
            try:
                done = subprocess.run(
                    argv, stdout=out, stderr=subprocess.STDOUT, timeout=INSTALL_TIMEOUT_S
                )
            except (OSError, subprocess.TimeoutExpired) as exc:
                raise PeerFailed(f"install of {name} failed: {type(exc).__name__}") from exc
            if done.returncode != 0:
                raise PeerFailed(f"install of {name} failed: {_last_line(install_log)}")
    stamp.write_text(json.dumps(wanted))
    return venv


def _last_line(path: Path) -> str:
    lines = [line.strip() for line in path.read_text(errors="replace").splitlines() if line.strip()]
    return (lines[-1] if lines else "no output")[:200]
