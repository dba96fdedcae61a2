"""``python -m driftloop.warm_worker <worker arguments>``: a BentoML service worker that
restarts from a warm parent instead of from scratch.

BentoML's supervisor (circus) starts each service worker as a new Python process, and a
new process spends ~5-6 s of CPU importing bentoml, mlflow, pandas, sqlalchemy,
sklearn/scipy and skops before it can load its model (bench/README.md "Worker restart").
`driftloop serve` has circus start this module instead of BentoML's
``_bentoml_impl.worker.service`` (driftloop/bentoml_serve.py), with the same arguments.
The process circus started, the *keeper*, imports all of that and the service module
(through BentoML's own loader; the service module's optional ``prefork()`` imports what
its start-up would import), starting no thread, event loop, socket or connection, and
then forks a child that runs BentoML's unchanged worker ``main`` with the same
arguments: the child inherits the listening socket circus passed, the worker id and the
environment, and serves (it loads its champion, opens the prediction log, then accepts
connections, as before). The gunicorn "preload" model.

The keeper waits for its child:

- the child dies by a signal (``kill -9``, a segfault) or exits non-zero: the keeper forks
  a new one at once. A child that dies before it served (uvicorn's start-up, which runs
  the service's, had not finished: a crash loop, e.g. a champion that cannot load) is a
  start failure; after each one the keeper waits a little longer (`BACKOFF_S` doubling),
  and after `START_FAILURE_LIMIT` in a row it gives up and exits 1 (circus then restarts
  the worker from scratch, as it always did);
- the child exits 0 (a graceful stop: uvicorn exits 0 only when asked to stop): the
  keeper exits 0;
- the keeper gets SIGTERM/SIGINT/SIGQUIT/SIGHUP (circus's stop): it passes the signal
  to the child, waits for it and exits with its code. The child also gets SIGTERM when
  the keeper dies (``PR_SET_PDEATHSIG``), so no child outlives its keeper.

Before forking, the keeper checks that it runs a single Python thread (a native library
thread such as pyarrow's jemalloc one re-arms itself in a forked child); if an import
started one, forking is not safe and the keeper runs the worker in its own process
instead (BentoML's stock behaviour), saying so in the log.

The keeper imports nothing of the project itself: for ``driftloop serve --bento`` the
loader imports the Bento's own copy of the service code.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import gc
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any


def _log() -> logging.Logger:
    """The keeper's logger, created only once BentoML configured logging (its dictConfig
    disables the loggers that exist before it)."""
    return logging.getLogger("driftloop.serving")


# The child's environment says which keeper forked it (bentos/service.py logs it).
PARENT_ENV = "DRIFTLOOP_WARM_PARENT_PID"
WORKER_MODULE = "driftloop.warm_worker"  # what circus runs (`python -m ...`)
PREFORK_HOOK = "prefork"  # a service module's function that imports its start-up's modules

START_FAILURE_LIMIT = 3  # children in a row dead before serving: the keeper gives up (exit 1)
BACKOFF_S = 0.25  # wait before the fork after the first such death; doubles each time
FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGHUP)
_PR_SET_PDEATHSIG = 1  # linux/prctl.h


@dataclass
class Keeper:
    """Forks `serve` into a child and forks a new one whenever the child dies unasked.

    `serve(ready)` runs in the child, calls `ready()` once it serves, and returns (or
    raises SystemExit with) its exit code; `exit_child` ends the child's process with
    that code (the real worker: a normal interpreter exit; tests: ``os._exit``).
    """

    serve: Callable[[Callable[[], None]], int | None]
    exit_child: Callable[[int], Any]
    start_failure_limit: int = START_FAILURE_LIMIT
    backoff_s: float = BACKOFF_S
    forks: int = 0
    child: int | None = None
    stop_signal: int | None = None
    _pid: int = field(default_factory=os.getpid)
    _threads: Callable[[], int] = threading.active_count

    def run(self) -> int:
        """Fork, wait, re-fork; the keeper's exit code (the child's code once stopped)."""
        self._pid = os.getpid()
        for sig in FORWARDED:
            signal.signal(sig, self._on_signal)
        failures = 0  # children in a row that died before they served
        while self.stop_signal is None:
            forked_at = time.monotonic()
            pid, ready_pipe = self._fork()
            status = self._wait(pid)
            self.child = None
            served = _was_ready(ready_pipe)
            code = exit_code(status)
            if self.stop_signal is not None:
                return code
            if os.WIFEXITED(status) and code == 0:
                _log().info("worker child %d stopped (exit 0); keeper %d exits", pid, self._pid)
                return 0
            lived_s = time.monotonic() - forked_at
            failures = 0 if served else failures + 1
            what = f"worker child {pid} {describe(status)} {lived_s:.1f} s after its fork"
            if failures >= self.start_failure_limit:
                _log().error(
                    "%s, the %d. in a row that died before serving: keeper %d gives up "
                    "(exit 1), the supervisor starts a fresh worker",
                    what,
                    failures,
                    self._pid,
                )
                return 1
            wait_s = self.backoff_s * 2 ** (failures - 1) if failures else 0.0
            _log().warning(
                "%s%s; keeper %d forks a new one%s",
                what,
                "" if served else " (before it served)",
                self._pid,
                f" in {wait_s:.2f} s" if wait_s else "",
            )
            deadline = time.monotonic() + wait_s
            while self.stop_signal is None and time.monotonic() < deadline:
                time.sleep(0.02)
        return 0

    def _fork(self) -> tuple[int, int]:
        """Fork a child running `serve` (in the child this never returns); its pid and the
        read end of the pipe it writes to once it serves."""
        threads = self._threads()
        if threads != 1:
            raise RuntimeError(f"refusing to fork with {threads} threads running")
        read_end, write_end = os.pipe()
        sigs = set(FORWARDED)
        # Signals wait until the child's pid is known here and the child has reset them.
        signal.pthread_sigmask(signal.SIG_BLOCK, sigs)
        pid = os.fork()
        if pid == 0:
            os.close(read_end)
            self._become_child(sigs, write_end)
        os.close(write_end)
        self.child = pid
        self.forks += 1
        signal.pthread_sigmask(signal.SIG_UNBLOCK, sigs)
        return pid, read_end

    def _become_child(self, sigs: set[int], ready_fd: int) -> None:
        code = 1
        try:
            for sig in sigs:
                signal.signal(sig, signal.SIG_DFL)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, sigs)
            die_with_parent(self._pid)
            os.environ[PARENT_ENV] = str(self._pid)
            code = self.serve(functools.partial(_say_ready, ready_fd)) or 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        except BaseException:
            _log().exception("worker child %d failed", os.getpid())
            code = 1
        self.exit_child(code)
        os._exit(code)  # `exit_child` must not return into the keeper's loop

    def _wait(self, pid: int) -> int:
        """The child's wait status (signals to the keeper are handled meanwhile)."""
        while True:
            done, status = os.waitpid(pid, 0)
            if done == pid:
                return status

    def _on_signal(self, sig: int, _frame: Any) -> None:
        if os.getpid() != self._pid:  # the child resets these first; never forward from it
            return
        self.stop_signal = sig
        if self.child is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.child, sig)


def _say_ready(fd: int) -> None:
    """In the child: tell the keeper it serves (once)."""
    try:
        os.write(fd, b"1")
        os.close(fd)
    except OSError:
        pass


def _was_ready(fd: int) -> bool:
    """In the keeper, once the child is gone: whether it said it served."""
    try:
        os.set_blocking(fd, False)
        return os.read(fd, 1) == b"1"
    except OSError:
        return False
    finally:
        os.close(fd)


@dataclass(frozen=True)
class Workers:
    """The service workers under a `bentoml serve` process: keeper pid -> its serving
    children (BentoML's stock workers, which serve themselves, are their own keepers)."""

    tree: dict[int, list[int]]

    @property
    def keepers(self) -> set[int]:
        return set(self.tree)

    @property
    def serving(self) -> set[int]:
        """The processes that answer requests."""
        return {pid for keeper, kids in self.tree.items() for pid in (kids or [keeper])}


STOCK_WORKER_MODULE = "_bentoml_impl.worker.service"


def find_workers(root_pid: int) -> Workers:
    """The workers under `root_pid` (``driftloop serve``/``bentoml serve``), found by their
    command lines: a forked child has its keeper's command line and its keeper as parent."""
    import psutil

    found: dict[int, tuple[int, str]] = {}
    for proc in psutil.Process(root_pid).children(recursive=True):
        try:
            found[proc.pid] = (proc.ppid(), " ".join(proc.cmdline()))
        except psutil.Error:
            continue
    tree: dict[int, list[int]] = {}
    for pid, (ppid, cmdline) in found.items():
        if not (WORKER_MODULE in cmdline or STOCK_WORKER_MODULE in cmdline):
            continue
        parent = found.get(ppid)
        if parent is not None and parent[1] == cmdline:
            continue  # a forked child, listed under its keeper below
        tree[pid] = sorted(kid for kid, (kp, _) in found.items() if kp == pid)
    return Workers(tree)


def exit_code(status: int) -> int:
    """A wait status as a shell would report it (128 + signal for a killed process)."""
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    return os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else 1


def describe(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"was killed by {signal.Signals(os.WTERMSIG(status)).name}"
    return f"exited {exit_code(status)}"


def die_with_parent(parent: int) -> None:
    """SIGTERM this process when `parent` dies (Linux); already dead: terminate now."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: the keeper still forwards its signals
        pass
    if os.getppid() != parent:  # the keeper died before prctl took effect
        os._exit(1)


def native_threads() -> int:
    """Threads of this process that Python did not start (0 where /proc is missing).

    pandas imports pyarrow, whose jemalloc starts a background thread; jemalloc (like
    OpenBLAS) re-arms itself in a forked child, so such threads do not make a fork unsafe.
    """
    try:
        return len(os.listdir(f"/proc/{os.getpid()}/task")) - threading.active_count()
    except OSError:
        return 0


def prepare(argv: Sequence[str]) -> None:
    """In the keeper: what BentoML's worker ``main`` does before it serves, up to and
    including importing the service, then the service module's ``prefork()``.

    The same steps run again in the child; there they find everything imported.
    """
    import bentoml._internal.log as bentoml_log
    import psutil  # noqa: F401  (imported by `main` before logging is configured, like uvicorn)
    import uvicorn
    from _bentoml_impl.loader import load
    from _bentoml_impl.worker.service import main as worker_main
    from bentoml._internal.context import server_context
    from bentoml._internal.utils.args import set_arguments

    with worker_main.make_context("worker", list(argv)) as ctx:
        params = ctx.params
    worker_id = params.get("worker_id")
    if params.get("worker_env") and worker_id is not None:
        env_list = json.loads(params["worker_env"])
        if 0 < worker_id <= len(env_list):
            os.environ.update(env_list[worker_id - 1])
    if params.get("args"):
        set_arguments(json.loads(params["args"]))
    bentoml_log.configure_server_logging()
    # The child's `main` configures logging again; loggers created since (the service's,
    # mlflow's, ...) must stay enabled as in a worker that imported them after that call.
    bentoml_log.configure_server_logging = keep_logger_states(bentoml_log.configure_server_logging)
    if worker_id is not None:
        server_context.worker_index = worker_id
    service = load(params["bento_identifier"], standalone_load=True)
    # What the worker's `main` and uvicorn import only when they run.
    import uvicorn.lifespan.on
    import uvicorn.loops.auto
    import uvicorn.protocols.http.auto
    import uvicorn.protocols.websockets.auto  # noqa: F401

    module = sys.modules.get(getattr(service.inner, "__module__", ""))
    hook = getattr(module, PREFORK_HOOK, None)
    if callable(hook):
        hook()


def keep_logger_states(configure: Callable[[], None]) -> Callable[[], None]:
    """`configure` (a `logging.config.dictConfig` call) that leaves every existing
    logger's enabled/disabled state as it was."""

    @functools.wraps(configure)
    def configure_keeping_states() -> None:
        manager = logging.Logger.manager
        states = {
            name: logger.disabled
            for name, logger in manager.loggerDict.items()
            if isinstance(logger, logging.Logger)
        }
        configure()
        for name, disabled in states.items():
            logging.getLogger(name).disabled = disabled

    return configure_keeping_states


def run_worker(argv: Sequence[str], ready: Callable[[], None] | None = None) -> int | None:
    """BentoML's worker ``main`` with `argv` (returns its exit code or raises SystemExit);
    `ready()` runs once uvicorn's start-up (the service's included) has finished."""
    from _bentoml_impl.worker.service import main as worker_main

    if ready is not None:
        import uvicorn

        startup = uvicorn.Server.startup

        @functools.wraps(startup)
        async def startup_then_ready(self: Any, *args: Any, **kwargs: Any) -> None:
            await startup(self, *args, **kwargs)
            if not self.should_exit:  # a failed start-up sets it
                ready()

        uvicorn.Server.startup = startup_then_ready  # type: ignore[method-assign]
    return worker_main.main(args=list(argv), prog_name=WORKER_MODULE, standalone_mode=True)


def main(argv: Sequence[str] | None = None) -> None:
    """The keeper: warm imports, then fork BentoML's worker and keep it running."""
    argv = list(sys.argv[1:] if argv is None else argv)
    began = time.process_time()
    prepare(argv)
    logging.getLogger("driftloop").setLevel(logging.INFO)
    if threading.active_count() != 1:
        names = sorted(t.name for t in threading.enumerate())
        _log().warning(
            "worker %d runs %d threads after its imports (%s): forking is not safe, so it "
            "serves in this process and a killed worker restarts from scratch",
            os.getpid(),
            threading.active_count(),
            ", ".join(names),
        )
        run_worker(argv)
        return
    gc.collect()
    gc.freeze()  # the imports' objects stay shared with the children (copy-on-write)
    _log().info(
        "warm worker parent %d ready after %.2f s of CPU (%d native library threads); "
        "forking its serving child",
        os.getpid(),
        time.process_time() - began,
        native_threads(),
    )
    keeper = Keeper(serve=lambda ready: run_worker(argv, ready), exit_child=_exit_normally)
    sys.exit(keeper.run())


def _exit_normally(code: int) -> None:
    """End the child like the stock worker ends: interpreter shutdown (atexit handlers,
    non-daemon threads joined, streams flushed) with `code`."""
    raise SystemExit(code)


if __name__ == "__main__":
    main()
