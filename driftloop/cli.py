"""The `driftloop` command line: train, inspect and move model versions.

Exit codes: 0 ok, 1 a check failed (bad data, gate, health), 2 bad usage.

Imports stay light at the top (typer, rich): `driftloop --help` must not pay for
pydantic-settings, pandas, MLflow or Prefect; each command imports what it uses.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager, redirect_stderr, redirect_stdout
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import click
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

if TYPE_CHECKING:
    from config.settings import Settings
    from registry import VersionInfo

app = typer.Typer(
    name="driftloop",
    help="MLOps model lifecycle: train, register, serve, monitor, promote and roll back.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
# Piped output (scripts, CI logs) is not squeezed into 80 columns.
console = Console(width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True, width=None if sys.stderr.isatty() else 160)

EXIT_OK, EXIT_CHECK_FAILED, EXIT_USAGE = 0, 1, 2


def _command_group(name: str, help_text: str) -> typer.Typer:
    """A `driftloop NAME ...` group of subcommands (shows its help when called bare)."""
    group = typer.Typer(help=help_text, no_args_is_help=True, add_completion=False)
    app.add_typer(group, name=name)
    return group


ModelName = Annotated[str | None, typer.Option("--model-name", "-m", help="Registered model name.")]
DecisionId = Annotated[
    str | None,
    typer.Option(
        "--decision-id",
        help="Name this move; running the command again with the same id after it went "
        "through changes nothing (safe retries from scripts).",
    ),
]


class CliError(Exception):
    """An error already phrased for the user, with its exit code."""

    def __init__(self, message: str, code: int = EXIT_CHECK_FAILED) -> None:
        super().__init__(message)
        self.code = code


def registry_for(settings: Settings) -> Any:
    """The registry of the settings' model (imported late: the CLI starts without MLflow)."""
    from registry import Registry

    return Registry.from_settings(settings)


def settings_from(**overrides: Any) -> Settings:
    from pydantic import ValidationError

    from config.settings import load_settings

    try:
        return load_settings(**overrides)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'settings'}: {e['msg']}" for e in exc.errors()
        )
        raise CliError(f"bad settings: {problems}", EXIT_USAGE) from exc


def environment_for(model_name: str | None) -> Settings:
    """Settings for one model, with the environment prepared for MLflow/Prefect."""
    settings = settings_from(model_name=model_name)
    prepare_environment(settings)
    return settings


def prepare_environment(settings: Settings) -> None:
    """Point MLflow/Prefect at the local stack when it runs, keep tool homes in the state dir.

    Must run before prefect is imported: Prefect reads its settings at import.
    """
    from config.mlflow_env import mlflow_http_env
    from driftloop.stackfile import read_stack

    state = settings.state_path
    (state / "prefect").mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    # MLflow honours DO_NOT_TRACK only as "true", and its telemetry thread edits os.environ
    # while other threads read it: switched off by its own setting.
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    for key, value in mlflow_http_env().items():  # bounded, not MLflow's minutes
        os.environ.setdefault(key, value)
    os.environ.setdefault("BENTOML_HOME", str(state / "bentoml"))
    # Flow and task logs go to the Prefect UI; the terminal shows driftloop's own
    # messages only (DRIFTLOOP_VERBOSE=1 shows Prefect's console logs too).
    if not os.environ.get("DRIFTLOOP_VERBOSE"):
        os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "CRITICAL")
    stack = read_stack(state)
    if settings.resolved_prefect_api_url():
        os.environ["PREFECT_API_URL"] = settings.resolved_prefect_api_url() or ""
    elif stack and stack.get("prefect_api_url"):
        os.environ["PREFECT_API_URL"] = stack["prefect_api_url"]
    else:
        os.environ.setdefault("PREFECT_HOME", str(state / "prefect"))
        # Embedded mode starts Prefect's temporary server in this process; its 20 s default
        # start-up bound fails the first command on a busy machine.
        os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    no_uri = not settings.tracking_uri and not os.environ.get("MLFLOW_TRACKING_URI")
    if no_uri and stack and stack.get("mlflow_tracking_uri"):
        os.environ["MLFLOW_TRACKING_URI"] = stack["mlflow_tracking_uri"]


@contextmanager
def user_errors() -> Iterator[None]:
    """Turn known failures into one clear message and the right exit code.

    Messages are printed verbatim: `pip install 'driftloop[torch]'` is not Rich markup.
    """
    from pydantic import ValidationError

    from data.errors import DataError
    from registry import RegistryError

    known: list[tuple[type[Exception], str, int | None]] = [
        (CliError, "error", None),  # its own exit code
        (DataError, "data check failed", EXIT_CHECK_FAILED),
        (RegistryError, "registry", EXIT_USAGE),
        (ValidationError, "bad settings", EXIT_USAGE),
        (ValueError, "error", EXIT_USAGE),
        (ConnectionError, "cannot reach a server", EXIT_CHECK_FAILED),
    ]
    try:
        yield
    except tuple(kind for kind, _, _ in known) as exc:
        label, code = next((lab, c) for kind, lab, c in known if isinstance(exc, kind))
        err.print(f"[red]{label}:[/red] {escape(str(exc))}")
        raise typer.Exit(exc.code if isinstance(exc, CliError) else code) from None
    except (typer.Exit, typer.Abort, click.ClickException, KeyboardInterrupt):
        raise
    except Exception as exc:
        # Never a traceback for the user: one line, the exit code, and how to see more.
        if os.environ.get("DRIFTLOOP_VERBOSE"):
            raise
        message, code = describe_unexpected(exc)
        err.print(
            f"[red]error:[/red] {escape(message)} (DRIFTLOOP_VERBOSE=1 shows the traceback)",
            soft_wrap=True,
        )
        raise typer.Exit(code) from None


# MLflow error codes that mean the request named something wrong (the user's to fix).
_MLFLOW_USAGE_CODES = {"RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"}


def describe_unexpected(exc: BaseException) -> tuple[str, int]:
    """One line for an exception no command handled, and its exit code: 2 when MLflow
    says the request named something that does not exist or is invalid, 1 otherwise."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    if len(text) > 300:
        text = text[:297] + "..."
    code = getattr(exc, "error_code", None)
    if type(exc).__module__.startswith("mlflow") and code is not None:
        usage = code in _MLFLOW_USAGE_CODES
        return f"MLflow: {text}", EXIT_USAGE if usage else EXIT_CHECK_FAILED
    return f"{type(exc).__name__}: {text}", EXIT_CHECK_FAILED


def run_command(body: Callable[[], None]) -> None:
    with user_errors():
        body()


# -- commands ---------------------------------------------------------------------------


@app.command()
def train(
    data: Annotated[
        Path | None, typer.Option(help="CSV or Parquet file; default: bundled Bikeshare 2011.")
    ] = None,
    target: Annotated[str | None, typer.Option(help="Column to predict.")] = None,
    task: Annotated[
        str | None, typer.Option(help="regression | classification | auto (default: inferred).")
    ] = None,
    family: Annotated[str | None, typer.Option(help="Model family: sklearn | torch.")] = None,
    model_name: ModelName = None,
    time_column: Annotated[
        str | None, typer.Option(help="Column that orders rows in time (holdout = latest).")
    ] = None,
    drop: Annotated[
        list[str] | None, typer.Option("--drop", help="Column to leave out (repeatable).")
    ] = None,
    time_from: Annotated[float | None, typer.Option(help="Train on rows with time ≥ this.")] = None,
    time_until: Annotated[
        float | None, typer.Option(help="Train on rows with time < this.")
    ] = None,
    no_package: Annotated[
        bool, typer.Option("--no-package", help="Register without building a Bento.")
    ] = False,
    rebuild_contract: Annotated[
        bool,
        typer.Option(
            "--rebuild-contract", help="Rebuild the data contract from this data (schema changed)."
        ),
    ] = False,
    widen_contract: Annotated[
        bool,
        typer.Option(
            "--widen-contract",
            help="Let ranges and categories grow to admit drifted data (new contract revision); "
            "hard rules still apply.",
        ),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Validate data, train a model, register it and let the gate set its alias."""

    def body() -> None:
        if task is not None and task not in ("regression", "classification", "auto"):
            raise CliError(
                f"unknown task {task!r}: use regression, classification or auto", EXIT_USAGE
            )
        if family is not None and family not in ("sklearn", "torch"):
            raise CliError(f"unknown family {family!r}: use sklearn or torch", EXIT_USAGE)
        settings = settings_from(
            data=data,
            target=target,
            task=task,
            family=family,
            model_name=model_name,
            time_column=time_column,
            drop_columns=drop,
        )
        from pipelines.families import require_family

        require_family(settings.family)  # before Prefect starts: a missing extra, in one line
        prepare_environment(settings)
        from pipelines.train import in_process_run, train_flow

        # Library chatter (MLflow's run links, Prefect logs) goes to stderr so that
        # stdout carries only the result (`--json` stays parseable).
        with (
            redirect_stdout(sys.stderr),
            err.status(f"training {settings.model_name} ({settings.family})…"),
            in_process_run(),  # no flow-run heartbeats: no worker watches this process
        ):
            result = train_flow(
                model_name=settings.model_name,
                data=str(data) if data else None,
                target=target,
                task=task,
                family=family,
                time_column=time_column,
                drop_columns=drop,
                time_from=time_from,
                time_until=time_until,
                package_bento=not no_package,
                rebuild_contract=rebuild_contract,
                widen_contract=widen_contract,
            )
        _print_trained(result, as_json)

    run_command(body)


def _print_trained(result: dict[str, Any], as_json: bool) -> None:
    """`driftloop train`'s answer: the version, its alias and why, the holdout figures."""
    if as_json:
        print(json.dumps(result, indent=2, default=str))
        return
    console.print(
        f"[bold]{result['model_name']} v{result['version']}[/bold] → "
        f"[green]{result['alias']}[/green]: {result['reason']}"
    )
    if result.get("task_explanation"):
        console.print(result["task_explanation"], markup=False)
    metrics = ", ".join(f"{k} {v:.4g}" for k, v in result["metrics"].items())
    console.print(f"holdout: {metrics}  (run {result['run_id']})")
    if result.get("bento_tag"):
        console.print(f"bento: {result['bento_tag']}")


def _version_row(v: VersionInfo) -> dict[str, Any]:
    """One version as `driftloop models` shows it (and prints it with --json)."""
    return {
        "version": v.version,
        "aliases": list(v.aliases),
        "family": v.tags.get("family", ""),
        "task": v.tags.get("task", ""),
        "metrics": {
            k.removeprefix("holdout_"): float(val)
            for k, val in v.tags.items()
            if k.startswith("holdout_")
        },
        "data_digest": v.tags.get("data_digest", ""),
        "bento_tag": v.tags.get("bento_tag", ""),
        "created_at": v.created_at.isoformat(timespec="seconds"),
    }


def _versions_table(rows: list[dict[str, Any]], title: str) -> Table:
    table = Table(title=title)
    for column in ("version", "aliases", "family", "task", "holdout", "data", "bento", "created"):
        table.add_column(column)
    for row in rows:
        table.add_row(
            row["version"],
            ", ".join(row["aliases"]),
            row["family"],
            row["task"],
            ", ".join(f"{k} {v:.4g}" for k, v in row["metrics"].items()),
            row["data_digest"][:8],
            row["bento_tag"],
            row["created_at"],
        )
    return table


@app.command()
def models(
    model_name: ModelName = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print as JSON.")] = False,
) -> None:
    """List versions with their aliases and key metrics."""

    def body() -> None:
        settings = environment_for(model_name)
        versions = registry_for(settings).versions()
        rows = [_version_row(v) for v in versions]
        if as_json:
            print(json.dumps(rows, indent=2))
            return
        if not rows:
            console.print(
                f"no versions of {settings.model_name!r} yet: run `driftloop train` first"
            )
            return
        table = _versions_table(rows, f"{settings.model_name} — {settings.resolved_tracking_uri()}")
        console.print(table)

    run_command(body)


@app.command()
def promote(
    version: Annotated[str, typer.Argument(help="Version to make champion.")],
    model_name: ModelName = None,
    reason: Annotated[str, typer.Option(help="Why; recorded in the history.")] = "manual promotion",
    expect_champion: Annotated[
        str | None,
        typer.Option(help="Refuse unless this version is the champion ('none' = no champion)."),
    ] = None,
    decision_id: DecisionId = None,
) -> None:
    """Make VERSION the champion; the old champion becomes `previous`.

    Compare-and-swap: the aliases read here are shown and passed as the expected
    state; if they moved before the swap, nothing changes and the exit code is 1.
    """

    def body() -> None:
        from config.names import CHALLENGER, CHAMPION, PREVIOUS
        from registry import AliasesMoved

        settings = environment_for(model_name)
        registry = registry_for(settings)
        seen = registry.aliases()
        console.print(f"{settings.model_name} now: {_describe_aliases(seen)}")
        expected = {alias: seen.get(alias) for alias in (CHAMPION, PREVIOUS, CHALLENGER)}
        if expect_champion is not None:
            expected[CHAMPION] = None if expect_champion.lower() == "none" else expect_champion
        try:
            move = registry.promote(
                version, reason, actor=_actor(), expected=expected, decision_id=decision_id
            )
        except AliasesMoved as exc:
            raise CliError(str(exc), EXIT_CHECK_FAILED) from exc
        _print_move("promoted", move)

    run_command(body)


@app.command()
def rollback(
    model_name: ModelName = None,
    reason: Annotated[str, typer.Option(help="Why; recorded in the history.")] = "manual rollback",
    expect_champion: Annotated[
        str | None, typer.Option(help="Refuse unless this version is the champion.")
    ] = None,
    decision_id: DecisionId = None,
) -> None:
    """Swap champion and previous: the previous champion serves again.

    Compare-and-swap: the aliases read here are shown and passed as the expected
    state, so two concurrent rollbacks make one move; the other exits 1 with
    "refused: the aliases moved (already rolled back?)".
    """

    def body() -> None:
        from config.names import CHAMPION, PREVIOUS
        from registry import ROLLED_BACK_TAG, AliasesMoved

        settings = environment_for(model_name)
        registry = registry_for(settings)
        seen = registry.aliases()
        console.print(f"{settings.model_name} now: {_describe_aliases(seen)}")
        expected = {alias: seen.get(alias) for alias in (CHAMPION, PREVIOUS)}
        if expect_champion is not None:
            expected[CHAMPION] = expect_champion
        if seen.get(PREVIOUS) is not None:
            was = registry.get(seen[PREVIOUS]).tags.get(ROLLED_BACK_TAG)
            if was:
                err.print(
                    f"[yellow]warning:[/yellow] previous v{seen[PREVIOUS]} was itself rolled "
                    f"back ({escape(was)}); this makes it champion again",
                    soft_wrap=True,
                )
        try:
            move = registry.rollback(
                reason, actor=_actor(), expected=expected, decision_id=decision_id
            )
        except AliasesMoved as exc:
            raise CliError(str(exc), EXIT_CHECK_FAILED) from exc
        _print_move("rolled back", move)

    run_command(body)


def _describe_aliases(aliases: dict[str, str]) -> str:
    return ", ".join(f"{a} v{v}" for a, v in sorted(aliases.items())) or "no aliases set"


def _print_move(done: str, move: Any) -> None:
    """One line for a recorded move; a retried decision says it changed nothing."""
    if move.replayed:
        console.print(
            f"already done by decision {move.decision_id} at {move.at} "
            f"({move.describe_moves()}); nothing changed"
        )
        return
    console.print(f"{done}: {move.describe_moves()} (decision {move.decision_id})")


challenger_app = _command_group(
    "challenger",
    "The challenger: make a version challenger, clear it, set its share of traffic.",
)


@challenger_app.command("set")
def challenger_set(
    version: Annotated[str, typer.Argument(help="Version to judge live as challenger.")],
    model_name: ModelName = None,
    reason: Annotated[
        str, typer.Option(help="Why; recorded in the history.")
    ] = "made challenger by user",
    decision_id: DecisionId = None,
) -> None:
    """Make VERSION the challenger (e.g. one the gate left without an alias).

    Compare-and-swap like `promote`: refused (exit 1) if the challenger or champion moved
    meanwhile; the champion itself cannot be made challenger (exit 2).
    """

    def body() -> None:
        from config.names import CHALLENGER, CHAMPION
        from registry import AliasesMoved

        settings = environment_for(model_name)
        registry = registry_for(settings)
        seen = registry.aliases()
        console.print(f"{settings.model_name} now: {_describe_aliases(seen)}")
        if seen.get(CHAMPION) == str(version):
            raise CliError(
                f"v{version} is the champion of {settings.model_name!r}: a challenger must "
                "be another version (`driftloop models` lists them)",
                EXIT_USAGE,
            )
        expected = {alias: seen.get(alias) for alias in (CHAMPION, CHALLENGER)}
        try:
            move = registry.set_alias(
                CHALLENGER,
                version,
                reason,
                actor=_actor(),
                expected=expected,
                decision_id=decision_id,
            )
        except AliasesMoved as exc:
            raise CliError(str(exc), EXIT_CHECK_FAILED) from exc
        _print_move("challenger set", move)

    run_command(body)


@challenger_app.command("clear")
def challenger_clear(
    model_name: ModelName = None,
    reason: Annotated[str, typer.Option(help="Why; recorded in the history.")] = "cleared by user",
    expect_challenger: Annotated[
        str | None, typer.Option(help="Refuse unless this version is the challenger.")
    ] = None,
    decision_id: DecisionId = None,
) -> None:
    """Remove the challenger alias: it stops taking traffic and stops blocking retrains.

    Compare-and-swap like `rollback`: the challenger read here is the expected state; if
    it changed before the clear, nothing changes and the exit code is 1. No challenger:
    exit 2. The version stays registered and is tagged `retired` with the reason.
    """

    def body() -> None:
        from config.names import CHALLENGER
        from registry import AliasesMoved

        settings = environment_for(model_name)
        registry = registry_for(settings)
        seen = registry.aliases()
        console.print(f"{settings.model_name} now: {_describe_aliases(seen)}")
        current = seen.get(CHALLENGER)
        if current is None and decision_id is None:
            raise CliError(
                f"model {settings.model_name!r} has no challenger: nothing to clear",
                EXIT_USAGE,
            )
        expected = {CHALLENGER: expect_challenger if expect_challenger is not None else current}
        try:
            move = registry.clear_alias(
                CHALLENGER, reason, actor=_actor(), expected=expected, decision_id=decision_id
            )
        except AliasesMoved as exc:
            raise CliError(str(exc), EXIT_CHECK_FAILED) from exc
        if move is None:  # only with a decision id that was never carried out
            raise CliError(
                f"model {settings.model_name!r} has no challenger and decision "
                f"{decision_id} cleared none: nothing to clear",
                EXIT_USAGE,
            )
        if not move.replayed:
            retired = move.moves[CHALLENGER][0]
            if retired:
                registry.set_tags(retired, {"retired": f"{move.actor}: {reason}"[:4900]})
        _print_move("challenger cleared", move)

    run_command(body)


@challenger_app.command("share")
def challenger_share(
    share: Annotated[
        str | None,
        typer.Argument(help="Share of traffic the challenger answers, 0-1 (0 = shadow only)."),
    ] = None,
    model_name: ModelName = None,
    reset: Annotated[
        bool,
        typer.Option("--reset", help="Remove the registry's share: the serving setting applies."),
    ] = False,
    reason: Annotated[str, typer.Option(help="Why; recorded in the history.")] = "set by user",
) -> None:
    """Set the canary share in the registry; running services follow it without a restart.

    Stored as the registered model's tag `driftloop.canary_share` and polled with the
    aliases (every `alias_poll_interval_s`); `/metadata` shows the share in effect and
    where it comes from. Without SHARE: show the current one.
    """

    def body() -> None:
        from registry import CANARY_SHARE_TAG, parse_canary_share

        if share is not None and reset:
            raise CliError("give a SHARE or --reset, not both", EXIT_USAGE)
        value = None if share is None else parse_canary_share(share, "SHARE")
        settings = environment_for(model_name)
        registry = registry_for(settings)
        if share is None and not reset:
            current = registry.canary_share()
            where = (
                f"registry tag {CANARY_SHARE_TAG}"
                if current is not None
                else "setting canary_share (no registry tag)"
            )
            shown = current if current is not None else settings.canary_share
            console.print(f"{settings.model_name}: canary share {shown:g} (from {where})")
            return
        move = registry.set_canary_share(value, reason, actor=_actor())
        console.print(f"{settings.model_name}: {move.reason}")

    run_command(body)


HISTORY_WIDTH = 100


@app.command()
def history(
    model_name: ModelName = None,
    limit: Annotated[int, typer.Option(min=1, help="Decisions per page, newest first.")] = 20,
    page_token: Annotated[
        str | None, typer.Option(help="Show older decisions: the token the last page printed.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print as JSON.")] = False,
    wide: Annotated[
        bool,
        typer.Option(
            "--wide", help="Full times, actors and decision ids (wider than 100 columns)."
        ),
    ] = False,
) -> None:
    """Every alias move and retrain, newest first: when, who, which versions, why, figures."""

    def body() -> None:
        settings = environment_for(model_name)
        page = registry_for(settings).history.page(limit, page_token)
        moves = page.moves
        if as_json:
            print(json.dumps([m.to_dict() for m in moves], indent=2))
        elif not moves:
            console.print(f"no decisions recorded for {settings.model_name!r} yet")
        elif wide:
            table = Table(title=f"{settings.model_name} — promotion history (newest first)")
            for column in ("time (UTC)", "action", "by", "aliases", "reason", "decision"):
                # Only the reason wraps: ids, times and actors stay whole (copy-pasteable).
                table.add_column(column, overflow="fold", no_wrap=column != "reason")
            for move in moves:
                table.add_row(
                    move.at,
                    move.action,
                    move.actor,
                    move.describe_moves(),
                    move.reason,
                    move.decision_id or "",
                )
            console.print(table)
        else:
            console.print(history_table(settings.model_name, moves), width=HISTORY_WIDTH)
        if page.next_page_token:
            err.print(
                f"older decisions: driftloop history --limit {limit} "
                f"--page-token {page.next_page_token}",
                soft_wrap=True,
                highlight=False,
                markup=False,
            )

    run_command(body)


def history_table(model_name: str, moves: list[Any]) -> Table:
    """The history in at most HISTORY_WIDTH columns: short UTC times, who in one word,
    the alias moves as ``champion 2→3``, reasons wrapped."""
    table = Table(
        title=f"{model_name} — history, newest first (UTC; --wide for more)",
        width=HISTORY_WIDTH,
        pad_edge=False,
    )
    table.add_column("when", no_wrap=True)
    table.add_column("action", no_wrap=True)
    table.add_column("by", no_wrap=True, max_width=10)
    table.add_column("aliases", max_width=28)
    table.add_column("reason", overflow="fold", ratio=1)
    for move in moves:
        table.add_row(
            short_time(move.at),
            move.action,
            move.actor.split(":", 1)[0],
            short_moves(move.moves),
            move.reason,
        )
    return table


def short_time(iso: str) -> str:
    """``2026-12-01T15:04:05.123+00:00`` → ``12-01 15:04`` (what fits a narrow table)."""
    date, _, clock = iso.partition("T")
    return f"{date[5:10]} {clock[:5]}" if clock else iso


def short_moves(moves: dict[str, tuple[str | None, str | None]]) -> str:
    """``{"champion": ("2", "3")}`` → ``champion 2→3``; one alias per line."""
    if not moves:
        return "-"
    return "\n".join(
        f"{alias} {old or '-'}→{new or '-'}" for alias, (old, new) in sorted(moves.items())
    )


@app.command()
def package(
    version: Annotated[str, typer.Argument(help="Registered version to package.")],
    model_name: ModelName = None,
) -> None:
    """Build the Bento `<model>-service:v<VERSION>` (the tag is written back to MLflow)."""

    def body() -> None:
        settings = environment_for(model_name)
        from driftloop import serving

        with redirect_stdout(sys.stderr), err.status(f"packaging v{version}…"):
            tag = serving.package(settings, version)
        console.print(f"bento: {tag}")

    run_command(body)


@app.command()
def serve(
    model_name: ModelName = None,
    port: Annotated[int | None, typer.Option(help="Port (default: DRIFTLOOP_SERVE_PORT).")] = None,
    host: Annotated[
        str,
        typer.Option(help="Interface to listen on (beyond loopback: needs an API key)."),
    ] = "127.0.0.1",
    insecure: Annotated[
        bool,
        typer.Option(
            "--insecure",
            help="Allow serving without an API key beyond loopback (DRIFTLOOP_INSECURE).",
        ),
    ] = False,
    bento: Annotated[
        bool, typer.Option("--bento", help="Serve the champion's built Bento, not the repo.")
    ] = False,
    wait_for_champion: Annotated[
        bool, typer.Option("--wait-for-champion", help="Wait for a champion instead of failing.")
    ] = False,
) -> None:
    """Run `bentoml serve` for the model: champion answers, challenger gets the canary share."""
    code = EXIT_OK

    def body() -> None:
        nonlocal code
        settings = environment_for(model_name)
        if insecure:
            settings.insecure = True
        from driftloop import serving

        try:
            code = serving.serve(
                settings, port=port, host=host, from_bento=bento, wait=wait_for_champion
            )
        except serving.UnsafeBind as exc:
            raise CliError(str(exc), EXIT_USAGE) from exc
        except serving.ServingError as exc:
            raise CliError(str(exc), EXIT_CHECK_FAILED) from exc

    run_command(body)
    raise typer.Exit(code)


@app.command()
def monitor(
    model_name: ModelName = None,
    window: Annotated[
        int | None,
        typer.Option(help="Latest requests to check (rows; shadow rows do not count)."),
    ] = None,
    since: Annotated[
        str | None,
        typer.Option(
            help="Only requests logged in the last DURATION (e.g. 90m, 1h, 7d); alone it is a "
            "time window, with --window both bounds apply."
        ),
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Decide but do not act.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print as JSON.")] = False,
) -> None:
    """Run one monitor check now: drift, OOD, live metrics, the decision (and act on it)."""

    def body() -> None:
        window_s = parse_duration(since, "--since") if since is not None else None
        settings = environment_for(model_name)
        from pipelines.monitor import monitor_flow

        with redirect_stdout(sys.stderr), err.status("checking the latest traffic…"):
            result = monitor_flow(
                model_name=settings.model_name,
                window_rows=window,
                act_on_decision=not dry_run,
                window_s=window_s,
            )
        if as_json:
            print(json.dumps(result, indent=2, default=str))
        else:
            print_check(result)
        if result.get("error"):
            raise typer.Exit(EXIT_CHECK_FAILED)

    run_command(body)


def print_check(result: dict[str, Any]) -> None:
    figures = result.get("figures", {})
    table = Table(title=f"{result['model_name']} — check at {result['at']}")
    table.add_column("figure")
    table.add_column("value", overflow="fold")
    shown = (
        "window_rows",
        "drift_share",
        "drifted_features",
        "prediction_drift",
        "ood_rate",
        "metric_name",
        "champion_version",
        "champion_metric",
        "champion_labelled_rows",
        "challenger_version",
        "challenger_metric",
        "challenger_labelled_rows",
        "previous_version",
        "previous_metric",
        "champion_requests",
        "champion_fallback_rows",
        "fallback_error",
    )
    for key in shown:
        value = figures.get(key)
        if value not in (None, "", []):
            table.add_row(key, format_figure(key, value))
    for key, value in classifier_drift_rows(result.get("drift") or {}):
        table.add_row(key, value)
    console.print(table)
    print_labels(result.get("labels") or {})
    decision = result.get("decision", {})
    console.print(f"decision: [bold]{decision.get('action')}[/bold] — {decision.get('reason')}")
    if result.get("acted"):
        console.print(f"done: {result['acted']}")
    for message in result.get("messages", []):
        console.print(f"[yellow]note:[/yellow] {message}")
    if result.get("report_html"):
        console.print(f"Evidently report: {result['report_html']}")


# Figures that are shares of rows or features: shown as percentages, not 0-1 floats.
PERCENT_FIGURES = {"drift_share", "ood_rate", "fallback_share"}


def format_figure(key: str, value: Any) -> str:
    """A check figure for people: shares as percentages, floats to 4 significant digits."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    if key in PERCENT_FIGURES:
        return f"{value:.1%}"
    return f"{value:.4g}" if isinstance(value, float) else f"{value:,}"


def classifier_drift_rows(drift: dict[str, Any]) -> list[tuple[str, str]]:
    """A classifier's prediction drift in words: each class's share, reference → window,
    and the P(positive) test when scores were logged."""
    rows = []
    shares = drift.get("prediction_shares") or {}
    if shares:
        ref, cur = shares.get("reference", {}), shares.get("current", {})
        rows.append(
            (
                "prediction_shares",
                ", ".join(f"{c} {ref.get(c, 0):.1%} → {cur.get(c, 0):.1%}" for c in cur),
            )
        )
    score = drift.get("score_drift")
    if score:
        verdict = "drifted" if score.get("drifted") else "no drift"
        value = score.get("score")
        shown = "n/a" if value is None else f"{value:.4g}"
        rows.append(("score_drift", f"{verdict} ({score.get('method')}: {shown})"))
    return rows


def print_labels(labels: dict[str, Any]) -> None:
    """Label coverage and delay per version in the window (the check's `labels`)."""
    from monitoring.report import duration_text

    if not labels:
        return
    table = Table(title="labels per version in the window")
    for column in ("version", "aliases", "rows", "matured", "labelled", "coverage", "delay p50"):
        table.add_column(column)
    table.add_column("delay p90")
    for version, entry in labels.items():
        coverage = entry.get("coverage")
        table.add_row(
            f"v{version}",
            ", ".join(entry.get("aliases", [])) or "-",
            f"{entry.get('rows', 0):,}",
            f"{entry.get('matured_rows', 0):,}",
            f"{entry.get('labelled_rows', 0):,}",
            "-" if coverage is None else f"{coverage:.1%}",
            duration_text(entry.get("delay_p50_s"), 1),
            duration_text(entry.get("delay_p90_s"), 1),
        )
    console.print(table)


@app.command()
def status(
    model_name: ModelName = None,
    url: Annotated[
        list[str] | None,
        typer.Option("--url", help="A serving URL to check too (repeat for several replicas)."),
    ] = None,
) -> None:
    """The stack's health, running services, the aliases, the last check and the last action."""

    def body() -> None:
        settings = environment_for(model_name)
        from driftloop import stack
        from driftloop.serving import running_services

        health = stack.status(settings)
        table = Table(title="local stack" + ("" if health["running"] else " (not running)"))
        for column in ("component", "healthy", "url"):
            table.add_column(column)
        for name, component in health["components"].items():
            healthy = component["healthy"]
            table.add_row(name, _yes_no(healthy), component["url"] or "")
        services = stack.probe_services(
            [*running_services(settings), *(u.rstrip("/") for u in url or [])],
            known={c["url"].rstrip("/") for c in health["components"].values() if c["url"]},
        )
        for service_url, healthy in services.items():
            table.add_row("serve", _yes_no(healthy), service_url)
        console.print(table)
        _print_model_state(settings)

    run_command(body)


def _print_model_state(settings: Settings) -> None:
    """`driftloop status`'s second half: the aliases, the last check and the last action."""
    from pipelines.monitor import read_last_check

    try:
        registry = registry_for(settings)
        aliases = registry.aliases()
        moves = registry.history.list(limit=1)
    except Exception as exc:  # registry down: say so, show the rest
        console.print(f"[yellow]registry unreachable:[/yellow] {exc}")
        aliases, moves = {}, []
    console.print(
        f"{settings.model_name} now: "
        + (", ".join(f"{a} v{v}" for a, v in sorted(aliases.items())) or "no versions yet")
    )
    check = read_last_check(settings)
    if check:
        console.print(f"last monitor check ({check['at']}), its figures:")
        print_check(check)
        if moves and moved_after(moves[0].at, check["at"]):
            console.print(
                f"[yellow]note:[/yellow] the aliases moved at {moves[0].at}, after this "
                "check: its figures and versions are from before that move"
            )
    else:
        console.print("no monitor check yet: `driftloop monitor` runs one")
    if moves:
        last = moves[0]
        console.print(
            f"last action: {last.at} {last.action} by {last.actor}: "
            f"{last.describe_moves()} — {last.reason}"
        )


def moved_after(move_at: str, check_at: str) -> bool:
    """Whether a move (ISO time) came after a check (ISO time); False if either is unreadable."""
    from datetime import datetime

    try:
        return datetime.fromisoformat(move_at) > datetime.fromisoformat(check_at)
    except (TypeError, ValueError):
        return False


def _yes_no(healthy: bool | None) -> str:
    return "-" if healthy is None else ("yes" if healthy else "NO")


@app.command()
def up(
    no_deploy: Annotated[
        bool, typer.Option("--no-deploy", help="Start the servers only, do not deploy flows.")
    ] = False,
) -> None:
    """Start MLflow, Prefect (+ worker, deployments) and bentoml serve locally."""

    def body() -> None:
        settings = settings_from()
        from driftloop import stack

        try:
            with err.status("starting MLflow, Prefect, the worker, bentoml serve and Evidently…"):
                info = stack.up(settings, deploy=not no_deploy)
        except stack.StackError as exc:
            raise CliError(str(exc), EXIT_CHECK_FAILED) from exc
        if info.get("already_running"):
            console.print("the stack is already running")
        prefect_ui = info["prefect_api_url"].removesuffix("/api")
        console.print(f"MLflow UI:  {info['mlflow_tracking_uri']}")
        console.print(f"Prefect UI: {prefect_ui}")
        console.print(f"Service:    {info['serve_url']} (starts once a champion exists)")
        if info.get("evidently_url"):
            console.print(f"Evidently:  {info['evidently_url']} (drift over time, per model)")
        console.print(f"Logs:       {settings.state_path / 'logs'}")

    run_command(body)


@app.command()
def deploy(
    git: Annotated[
        str | None,
        typer.Option(
            "--git", help="Workers clone this repository URL instead of using DRIFTLOOP_REPO."
        ),
    ] = None,
    branch: Annotated[str | None, typer.Option("--branch", help="Branch to clone.")] = None,
    prefect_file: Annotated[
        Path | None,
        typer.Option("--prefect-file", help="prefect.yaml to deploy (default: the checkout's)."),
    ] = None,
) -> None:
    """Deploy prefect.yaml: work pool, monitor schedule and train family from the settings."""

    def body() -> None:
        settings = settings_from()
        prepare_environment(settings)
        if not os.environ.get("PREFECT_API_URL"):
            raise CliError(
                "no Prefect server to deploy to: start the stack (`driftloop up`) or set "
                "PREFECT_API_URL (or DRIFTLOOP_PREFECT_API_URL)",
                EXIT_USAGE,
            )
        if branch and not git:
            raise CliError("--branch needs --git URL", EXIT_USAGE)
        from driftloop import stack

        try:
            log = stack.deploy_flows(
                settings,
                dict(os.environ),
                (prefect_file or stack.PREFECT_FILE).resolve(),
                git_url=git,
                git_branch=branch,
            )
        except stack.StackError as exc:
            raise CliError(str(exc), EXIT_CHECK_FAILED) from exc
        code = f"cloned from {git}" if git else "from DRIFTLOOP_REPO on the worker"
        console.print(
            f"deployed to {os.environ['PREFECT_API_URL']}: work pool {settings.work_pool!r}, "
            f"monitor every {settings.monitor_interval_s} s, train family {settings.family}, "
            f"code {code} (log: {log})"
        )

    run_command(body)


@app.command()
def down() -> None:
    """Stop exactly the processes `driftloop up` started."""

    def body() -> None:
        settings = settings_from()
        from driftloop import stack

        stopped = stack.down(settings)
        console.print(
            f"stopped {len(stopped)} processes" if stopped else "the stack was not running"
        )

    run_command(body)


@app.command()
def demo(
    fresh: Annotated[
        bool,
        typer.Option(
            "--fresh", help="Stop the stack and delete this state folder first (start clean)."
        ),
    ] = False,
) -> None:
    """The whole loop on the bundled data: drift → retrain → promote → bad version → rollback."""
    settings = settings_from()
    if fresh:
        import shutil

        from driftloop import stack

        stack.down(settings)
        if settings.state_path.exists():
            err.print(f"removing the state folder {settings.state_path} (--fresh)")
            shutil.rmtree(settings.state_path)
    prepare_environment(settings)
    from driftloop.demo import DemoFailed, run_demo

    # The libraries' own chatter goes to a log file; the terminal shows the story.
    shown = Console(file=sys.stdout, width=None if sys.stdout.isatty() else 160)
    log_path = settings.state_path / "logs" / "demo.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with log_path.open("a") as log, redirect_stdout(log), redirect_stderr(log):
            code = run_demo(settings, shown)
    except DemoFailed as exc:
        err.print(f"[red]the loop did not complete:[/red] {exc}")
        err.print(f"logs: {settings.state_path / 'logs'}")
        raise typer.Exit(EXIT_CHECK_FAILED) from None
    raise typer.Exit(code)


@app.command("wait-for", hidden=True)
def wait_for_url(
    url: str, timeout: Annotated[float, typer.Option(help="Seconds.")] = 180.0
) -> None:
    """Wait until URL answers 200 (used by the stack's Procfile)."""
    from driftloop.procs import answers_200, wait_until

    try:
        wait_until(lambda: answers_200(url), timeout, interval_s=0.5, what=url)
    except TimeoutError as exc:
        err.print(str(exc))
        raise typer.Exit(EXIT_CHECK_FAILED) from None


contract_app = _command_group(
    "contract",
    "The data contract: show it, compare revisions, widen it to admit real drift.",
)


def _contract_file(settings: Settings) -> Path:
    from pipelines.train import contract_path

    path = contract_path(settings)
    if not path.exists():
        raise CliError(
            f"no data contract for {settings.model_name} at {path}: `driftloop train` builds one",
            EXIT_USAGE,
        )
    return path


@contract_app.command("show")
def contract_show(
    model_name: ModelName = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the contract JSON.")] = False,
) -> None:
    """The rules data must meet: hard ones stop training, soft ones can be widened."""

    def body() -> None:
        from data.contract import Contract

        settings = settings_from(model_name=model_name)
        path = _contract_file(settings)
        contract = Contract.load(path)
        if as_json:
            print(contract.to_json(), end="")
            return
        table = Table(
            title=f"{settings.model_name} data contract r{contract.revision} — {path}",
            caption=f"target {contract.target}; at least {contract.min_rows} rows; "
            f"built from data {contract.created_from_digest}",
        )
        for header in ("column", "role", "kind", "empties", "values (soft: widen admits drift)"):
            table.add_column(header)
        for rule in contract.columns:
            if rule.min is not None and rule.max is not None:
                values = f"soft: {rule.min:g} … {rule.max:g}"
            elif rule.allowed is not None:
                shown = ", ".join(map(str, rule.allowed[:6]))
                more = f", … ({len(rule.allowed)})" if len(rule.allowed) > 6 else ""
                hard = rule.role == "target"
                values = f"{'hard' if hard else 'soft'}: {shown}{more}"
            else:
                values = "any"
            table.add_row(
                rule.name,
                rule.role,
                rule.kind,
                "allowed" if rule.nullable else "hard: none",
                values,
            )
        console.print(table)

    run_command(body)


@contract_app.command("diff")
def contract_diff(
    old: Annotated[
        Path | None, typer.Argument(help="Older contract JSON (default: the previous revision).")
    ] = None,
    new: Annotated[
        Path | None, typer.Argument(help="Newer contract JSON (default: the current one).")
    ] = None,
    model_name: ModelName = None,
) -> None:
    """What changed between two contract revisions."""

    def body() -> None:
        from data.contract import Contract, diff

        settings = settings_from(model_name=model_name)
        newer = Contract.load(new or _contract_file(settings))
        if old is None:
            before = (new or _contract_file(settings)).with_name(
                f"{settings.model_name}.r{newer.revision - 1}.json"
            )
            if not before.exists():
                raise CliError(
                    f"revision {newer.revision} has no earlier revision beside it ({before})",
                    EXIT_USAGE,
                )
        else:
            before = old
        console.print(diff(Contract.load(before), newer).summary())

    run_command(body)


@contract_app.command("widen")
def contract_widen(
    data: Annotated[Path, typer.Option(help="CSV or Parquet file holding the drifted data.")],
    target: Annotated[str | None, typer.Option(help="Column to predict.")] = None,
    time_column: Annotated[str | None, typer.Option(help="Column that orders rows.")] = None,
    model_name: ModelName = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show the new revision's diff, write nothing.")
    ] = False,
) -> None:
    """Admit real drift: widen ranges/categories to cover DATA; hard failures still stop it."""

    def body() -> None:
        from data.contract import Contract, diff, validate, widen
        from data.sources import load_dataset
        from pipelines.train import local_contract_path

        settings = settings_from(
            data=data, target=target, time_column=time_column, model_name=model_name
        )
        path = _contract_file(settings)
        contract = Contract.load(path)
        snapshot = load_dataset(settings.dataset_spec(), settings.task)
        report = validate(snapshot.frame, contract, source=str(data))
        if report.success:
            console.print(f"{data} already meets contract r{contract.revision}: nothing to widen")
            return
        if report.hard_failures:
            lines = "\n".join(f"  {f.line()}" for f in report.hard_failures)
            raise CliError(
                f"{data} breaks hard rules that widening never relaxes:\n{lines}\n"
                "fix the data, or rebuild the contract (`driftloop train --rebuild-contract`) "
                "if the schema changed on purpose"
            )
        widened = widen(contract, snapshot.frame, reason=f"admit {data}")
        change = diff(contract, widened)
        console.print(change.summary())
        if dry_run:
            console.print("dry run: nothing written")
            return
        local = local_contract_path(settings)
        kept = contract.save(local.with_name(f"{settings.model_name}.r{contract.revision}.json"))
        widened.save(local)
        console.print(
            f"wrote revision {widened.revision} to {local} (r{contract.revision}: {kept})"
        )

    run_command(body)


log_app = _command_group(
    "log",
    "The prediction log: retention and schema migrations.",
)


@log_app.command("prune")
def log_prune(
    older_than: Annotated[
        str,
        typer.Option(
            "--older-than", help="Delete rows logged more than DURATION ago (e.g. 30d, 12h)."
        ),
    ],
    model_name: ModelName = None,
    all_models: Annotated[
        bool, typer.Option("--all-models", help="Prune every model's rows, not just one.")
    ] = False,
    batch_rows: Annotated[
        int, typer.Option(min=1, help="Rows deleted per transaction (keeps each lock short).")
    ] = 10_000,
) -> None:
    """Delete old predictions and labels from the prediction log, in short batches.

    Safe while the service runs: each batch is its own short transaction. SQLite keeps
    the file's size and reuses the freed space (run `VACUUM` while the service is stopped
    to shrink it).
    """

    def body() -> None:
        import time

        seconds = parse_duration(older_than, "--older-than")
        settings = settings_from(model_name=model_name)
        from predlog.fallbacks import prune_fallback_events
        from predlog.log import PredictionLog

        cutoff = time.time() - seconds
        log = PredictionLog(settings.resolved_prediction_log_url())
        which = "every model" if all_models else settings.model_name
        only = None if all_models else settings.model_name
        try:
            with err.status(f"pruning {which}'s log rows older than {older_than}…") as status:
                deleted = log.prune(
                    cutoff,
                    model_name=only,
                    batch_rows=batch_rows,
                    progress=lambda p, f: status.update(
                        f"pruning {which}: {p:,} predictions, {f:,} labels deleted…"
                    ),
                )
                events = prune_fallback_events(log, cutoff, model_name=only)
        finally:
            log.close()
        console.print(
            f"deleted {deleted[0]:,} predictions and {deleted[1]:,} labels of {which} "
            f"logged before {_iso(cutoff)}"
            + (f" (and {events:,} fallback events)" if events else "")
        )

    run_command(body)


def _check_log_revision(engine: Any, shown: str) -> None:
    """`driftloop log migrate --check`: show the revision; CliError (exit 1) if not the head."""
    from predlog import migrations

    revision = migrations.current_revision(engine)
    state = "head" if revision == migrations.HEAD else f"head is {migrations.HEAD}"
    console.print(f"prediction log {shown}: revision {revision or 'none'} ({state})")
    if revision != migrations.HEAD:
        raise CliError(
            f"the prediction log is not at the head revision "
            f"{migrations.HEAD}: run `driftloop log migrate`",
            EXIT_CHECK_FAILED,
        )


@log_app.command("migrate")
def log_migrate(
    check: Annotated[
        bool,
        typer.Option(
            "--check",
            help="Only show the log's schema revision; exit 1 if it is not the head.",
        ),
    ] = False,
) -> None:
    """Upgrade the prediction log's schema to the head revision (Alembic) and show it.

    Every service, monitor and CLI command upgrades the log when it opens it; this runs
    the same upgrade on purpose (e.g. before starting new replicas on PostgreSQL). A log
    made before migrations is adopted: its rows stay.
    """

    def body() -> None:
        import sqlalchemy as sa

        from predlog import migrations

        settings = settings_from()
        url = settings.resolved_prediction_log_url()
        parsed = sa.engine.make_url(url)
        shown = parsed.render_as_string(hide_password=True)
        if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
            path = Path(parsed.database).expanduser()
            if not path.exists():
                if check:
                    raise CliError(f"no prediction log at {path}", EXIT_CHECK_FAILED)
                path.parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(url)
        try:
            if check:
                _check_log_revision(engine, shown)
                return
            done = migrations.upgrade(engine)
        except sa.exc.SQLAlchemyError as exc:
            reason = (str(getattr(exc, "orig", None) or exc).strip().splitlines() or [""])[0]
            raise CliError(
                f"cannot migrate the prediction log at {shown}: {reason}", EXIT_CHECK_FAILED
            ) from None
        except RuntimeError as exc:  # a revision this driftloop does not know
            raise CliError(str(exc), EXIT_CHECK_FAILED) from None
        finally:
            engine.dispose()
        if not done.changed:
            console.print(f"prediction log {shown}: revision {done.after} (head), nothing to do")
            return
        source = "made before migrations, adopted" if done.adopted else done.before or "new"
        console.print(f"prediction log {shown}: {source} → revision {done.after} (head)")

    run_command(body)


_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(text: str, option: str = "duration") -> float:
    """'90m', '1h', '30d', '2w', '45s' or plain seconds → seconds (a CliError with exit 2)."""
    value = text.strip().lower()
    unit = value[-1:] if value[-1:] in _DURATION_UNITS else "s"
    number = value[:-1] if value[-1:] in _DURATION_UNITS else value
    try:
        seconds = float(number) * _DURATION_UNITS[unit]
    except ValueError:
        seconds = -1.0
    if not seconds > 0:
        raise CliError(
            f"{option} {text!r} is not a duration: use a positive number with s, m, h, d or "
            "w (e.g. 90m, 1h, 30d)",
            EXIT_USAGE,
        )
    return seconds


def _iso(epoch: float) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(epoch, tz=UTC).isoformat(timespec="seconds")


def _actor() -> str:
    return f"user:{os.environ.get('USER', 'unknown')}"


def main() -> None:  # pragma: no cover - console script entry
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
