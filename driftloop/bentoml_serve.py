"""``python -m driftloop.bentoml_serve serve ...``: the ``bentoml`` CLI, restarting dead
workers within `RESPAWN_CHECK_S` instead of BentoML's 10 s.

BentoML's process supervisor (circus) notices a dead worker only when its controller
next runs ``manage_watchers``, every ``check_delay`` seconds, and BentoML 1.4 fixes that
delay at 10 s (``bentoml._internal.utils.circus.create_standalone_arbiter``; measured:
a ``kill -9`` of the workers was answered again after 0.5-10 s of waiting plus the
worker's start-up, bench/README.md "Worker restart"). Nothing in BentoML's configuration
sets it, so this launcher wraps that function (looked up by `serve_http` when it starts
the arbiter) to pass a short delay, and then runs the unchanged ``bentoml`` CLI.

A pass of ``manage_watchers`` is cheap (``waitpid`` and a status read per worker). While
the arbiter is still starting its watchers a pass is refused with circus's
``ConflictError`` (the reason for BentoML's long delay); the launcher skips such a pass
quietly, the next one runs `RESPAWN_CHECK_S` later.

It also has circus start each service worker as ``python -m driftloop.warm_worker``
(same arguments as BentoML's ``_bentoml_impl.worker.service``): a warm parent that
imports everything once and forks the serving process, so a killed serving process is
replaced by a fork (~1 s) instead of a fresh interpreter (~6 s of imports).

And it gives the workers a folder to say they have started in (`bentos.startup`), so that
``/readyz`` says ready only once every worker has loaded its champion.
"""

from __future__ import annotations

import atexit
import functools
import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from typing import Any

RESPAWN_CHECK_S = 0.25  # seconds between two checks of the supervisor for dead workers


def _patch_arbiter(check_delay_s: float) -> None:
    """Give BentoML's arbiter `check_delay_s` and a quiet `manage_watchers` conflict."""
    import bentoml._internal.utils.circus as bentoml_circus
    from circus.arbiter import Arbiter
    from circus.exc import ConflictError

    create = bentoml_circus.create_standalone_arbiter

    @functools.wraps(create)
    def create_standalone_arbiter(watchers: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("check_delay", check_delay_s)
        return create(watchers, **kwargs)

    bentoml_circus.create_standalone_arbiter = create_standalone_arbiter
    manage: Callable[..., Any] = Arbiter.manage_watchers

    @functools.wraps(manage)
    def manage_watchers(self: Any) -> Any:
        try:
            return manage(self)
        except ConflictError:  # another arbiter command runs; the next pass comes soon
            return None

    Arbiter.manage_watchers = manage_watchers  # type: ignore[method-assign]


def _patch_worker(module: str) -> None:
    """Have BentoML's ``serve_http`` start service workers as ``python -m <module>``."""
    import _bentoml_impl.server.serving as bentoml_serving

    bentoml_serving._SERVICE_WORKER_SCRIPT = module  # read when serve_http builds its watcher


def main(argv: list[str] | None = None) -> None:
    """Run the ``bentoml`` CLI with `argv` (default: this process's arguments)."""
    from bentoml_cli.cli import cli

    from bentos.startup import STARTED_DIR_ENV
    from driftloop.warm_worker import WORKER_MODULE

    _patch_arbiter(RESPAWN_CHECK_S)
    _patch_worker(WORKER_MODULE)
    # Where the workers mark that they loaded their champion (bentos/startup.py): /readyz
    # is "starting" until all have. One folder per server, removed when it exits.
    started = tempfile.mkdtemp(prefix="driftloop-started-")
    atexit.register(shutil.rmtree, started, True)
    os.environ[STARTED_DIR_ENV] = started
    cli.main(args=sys.argv[1:] if argv is None else argv, prog_name="bentoml")


if __name__ == "__main__":
    main()
