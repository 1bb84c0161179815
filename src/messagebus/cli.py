"""The ``messagebus`` command: replay logs, look after dead letters, draw the wiring.

::

    messagebus replay LOG --app APP [--type NAME] [--since TIME] [--until TIME]
                          [--failed-only] [--include-events] [--dry-run] [--strict]
    messagebus dead-letters list  --app APP [--type NAME] [--handler NAME]
                                  [--resolved | --all] [--limit N] [--json]
    messagebus dead-letters show  ID --app APP [--json]
    messagebus dead-letters retry (ID ... | --type NAME | --all) --app APP
    messagebus dead-letters purge (ID ... | --type NAME | --resolved | --all) --app APP
    messagebus graph --app APP [--format mermaid|dot|svg] [--output FILE]
    messagebus relay --db URL --redis URL [--app APP] [--once] [...]
    messagebus outbox parked --db URL  |  messagebus outbox retry (ID ... | --all) --db URL
    messagebus consume --app APP --group G --stream S [--stream S ...] [--redis URL]
    messagebus --version | --help

``--app`` names the application's own code (trusted, unlike a log), as
``module:factory`` (``myapp.bootstrap:make_bus``) or ``path/to/file.py:factory``:
a function that takes no arguments and returns a :class:`~messagebus.MessageBus`
or an :class:`~messagebus.AsyncMessageBus` (or an object whose ``bus``
attribute is one), or such a bus itself. The current directory is importable,
as it is for ``python -m``; a file's folder is too (its package's, when it is in
one), as Flask does. ``MESSAGEBUS_APP`` gives it when ``--app`` is not given.

Exit status: 0 when the command did what it was asked (a replay that
reported bad lines included); 1 when something could not be done (``--strict``
and a problem; a dead letter not found, or a retry that failed); 2 when the
command could not start (wrong arguments, no command, an application or a log
that cannot be loaded, a file that is not a log); 130 when interrupted.

The progress bar and tables need ``rich``: ``pip install 'service-messagebus[cli]'``.
Shell completion is click's: ``eval "$(_MESSAGEBUS_COMPLETE=bash_source messagebus)"``
in ``~/.bashrc`` (``zsh_source`` for zsh, ``fish_source`` for fish).

Adding a command
----------------

The command line is a `click <https://click.palletsprojects.com>`_ group,
:data:`cli`. A new command is a function decorated with ``@cli.command()``
(or ``@cli.group()`` for one with actions, as ``dead-letters``), placed in
its own section of this module or in a module of its own imported at the
end of this one. It takes ``--app`` with the ``@_app_option`` decorator and
gets the bus from :func:`_app`; it returns its exit status (:data:`OK`,
:data:`NOT_DONE`), raises :class:`CannotStart` when it cannot start (exit 2),
and ``click.UsageError`` for arguments that do not go together (exit 2). It
writes plain text with :func:`_say` (never read as markup: it may quote a log)
and tables with the rich consoles of :func:`_consoles`. Describe positional
arguments in the docstring (click gives them no help of their own), and add
its tests to ``tests/unit/test_cli.py``, through :func:`main`::

    @cli.command()
    @click.argument("name", metavar="NAME")
    @_app_option
    def graph(name: str, app: str | None) -> int:
        '''Draw what NAME causes.

        NAME is a message name, as the logs show it.
        '''
        bus = _app(app)
        ...
        return OK
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import datetime as _dt
import functools
import importlib
import inspect
import json
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TextIO, TypeVar

import click

from ._async_bus import AsyncMessageBus
from ._bus import MessageBus
from ._consume_cli import add_consume_command
from ._registry import Registry
from ._relay_cli import add_relay_commands
from ._version import __version__
from .dead_letters import (
    AsyncDeadLetters,
    DeadLetterNotFoundError,
    DeadLetters,
    ManagedDeadLetterStore,
    RetryResult,
    StoredDeadLetter,
    import_dead_letters,
    import_dead_letters_async,
)
from .replay import ReplayReport, checkpoint_of, replay

__all__ = ["cli", "load_app", "main"]

Bus = MessageBus | AsyncMessageBus
F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")

#: The exit statuses.
OK, NOT_DONE, CANNOT_START, INTERRUPTED = 0, 1, 2, 130

_SKIP_LABELS = {
    "repeat": "further lines of a message",
    "raised_event": "raised events",
    "not_a_record": "not attempt records",
    "blank": "blank lines",
    "type": "other message types",
    "time": "outside the time range",
    "not_failed": "not failed",
    "replayed_before": "replayed before (--resume)",
}

#: How much of a log is looked at to tell whether it holds binary data.
_SNIFF = 8192


class CannotStart(Exception):
    """The command cannot start: its application, store or log cannot be had."""


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``messagebus`` command; returns its exit status."""
    try:
        status = cli.main(
            args=list(sys.argv[1:] if argv is None else argv),
            prog_name="messagebus",
            standalone_mode=False,
        )
    except click.ClickException as exc:  # wrong arguments: click's own message
        exc.show()
        return exc.exit_code
    except CannotStart as exc:
        print(f"messagebus: {exc}", file=sys.stderr)
        return CANNOT_START
    except click.Abort:  # click's KeyboardInterrupt
        print("messagebus: interrupted", file=sys.stderr)
        return INTERRUPTED
    return status if isinstance(status, int) else OK


# -- the application ---------------------------------------------------------------


def load_app(spec: str) -> Bus:
    """The bus that ``module:factory`` or ``path/to/file.py:factory`` makes.

    The application's own, trusted code: it is imported and the factory called.

    Raises:
        CannotStart: The module, the file or the factory cannot be found, the
            factory fails, or it returns something other than a bus.
    """
    value = _load(spec)
    if not isinstance(value, (MessageBus, AsyncMessageBus)):
        value = getattr(value, "bus", value)
    if not isinstance(value, (MessageBus, AsyncMessageBus)):
        raise CannotStart(
            f"--app {spec} gave {type(value).__qualname__}, not a MessageBus or AsyncMessageBus"
        )
    return value


def _load(spec: str) -> Any:
    """What ``module:attribute`` names: the attribute, or what it returns when called.

    A bus or a registry is taken as it is, not called.
    """
    where, colon, attribute = spec.rpartition(":")
    if not (colon and where and attribute):
        raise CannotStart(
            "--app takes module:factory or path/to/file.py:factory "
            f"(e.g. myapp.bootstrap:make_bus), not {spec!r}"
        )
    if where.endswith(".py") or "/" in where or os.sep in where:
        module_name = _importable(where, spec)
    else:
        module_name = where
        cwd = os.getcwd()
        if cwd not in sys.path:
            sys.path.insert(0, cwd)  # as `python -m` does: the application's own package
    try:
        target: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise CannotStart(f"cannot import {module_name!r} (from --app {spec}): {exc}") from exc
    for part in attribute.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise CannotStart(f"{module_name!r} has no {attribute!r} (from --app {spec})") from None
    if isinstance(target, (MessageBus, AsyncMessageBus, Registry)) or not callable(target):
        return target
    try:
        return target()
    except Exception as exc:
        detail = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        raise CannotStart(f"the factory {spec} failed:\n{detail}") from exc


def _importable(path: str, spec: str) -> str:
    """The module name of a Python file, its folder (or its package's) put on sys.path.

    As Flask's ``--app path/to/app.py`` does: a file inside a package (folders
    with an ``__init__.py``) is imported as part of it, so that its relative
    imports work.
    """
    file = Path(path).resolve()
    if file.suffix != ".py":
        file = file.with_suffix(".py")
    if not file.is_file():
        raise CannotStart(f"no Python file {path!r} (from --app {spec})")
    parts = [] if file.stem == "__init__" else [file.stem]
    folder = file.parent
    while (folder / "__init__.py").is_file():
        parts.insert(0, folder.name)
        folder = folder.parent
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))
    return ".".join(parts)


def _app(app: str | None) -> Bus:
    spec = app or os.environ.get("MESSAGEBUS_APP")
    if not spec:
        raise CannotStart("which application? give --app module:factory (or MESSAGEBUS_APP)")
    return load_app(spec)


#: The command's own stdout, while the application's writes to stdout go to stderr.
_STDOUT: contextvars.ContextVar[TextIO | None] = contextvars.ContextVar("_STDOUT", default=None)


def _stdout() -> TextIO:
    return _STDOUT.get() or sys.stdout


def _stdout_is_the_commands(command: F) -> F:
    """Run a command that loads the application with stdout kept for its own output.

    What the application writes to stdout while it is loaded and runs (its
    prints, and structlog's lines when the application uses structlog without
    configuring it, whose default is stdout) goes to stderr instead: stdout
    carries the command's summary, table or JSON only, which a pipe can read.
    """

    @functools.wraps(command)
    def run(*args: Any, **kwargs: Any) -> Any:
        token = _STDOUT.set(_stdout())
        try:
            with contextlib.redirect_stdout(sys.stderr):
                return command(*args, **kwargs)
        finally:
            _STDOUT.reset(token)

    return run  # type: ignore[return-value]


def _rich() -> Any:
    try:
        import rich.console
        import rich.progress
        import rich.table
        import rich.text
    except ImportError:
        raise CannotStart(
            "the command line needs rich: pip install 'service-messagebus[cli]'"
        ) from None
    return rich


def _consoles() -> tuple[Any, Any]:
    """Rich consoles for tables and the progress bar; text goes through :func:`_say`."""
    rich = _rich()
    out = rich.console.Console(file=_stdout(), highlight=False)
    err = rich.console.Console(file=sys.stderr, highlight=False)
    for console in (out, err):
        if not console.is_terminal:  # a file or a pipe: lines are not cut at 80 columns
            console.width = 160
    return out, err


def _say(text: str, *, err: bool = False) -> None:
    # Plain lines, never wrapped nor read as markup: they quote logs and errors.
    print(text, file=sys.stderr if err else _stdout())


# -- replay -------------------------------------------------------------------------


def _types(values: Sequence[str]) -> list[str] | None:
    names = [name.strip() for value in values for name in value.split(",") if name.strip()]
    return names or None


@_stdout_is_the_commands
def _replay(
    log: str,
    app: str | None,
    *,
    types: list[str] | None,
    since: _dt.datetime | None,
    until: _dt.datetime | None,
    failed_only: bool,
    include_events: bool,
    dry_run: bool,
    strict: bool,
    no_progress: bool,
    checkpoint: str | None = None,
    resume: bool = False,
) -> int:
    out, err = _consoles()
    rich = _rich()
    bus = _app(app)
    source: Any
    kept: str | None = None
    if log == "-":
        source = sys.stdin.buffer
        if resume:
            raise CannotStart("a replay of stdin cannot be resumed: give the log's file")
    else:
        path = Path(log)
        if not path.is_file():
            raise CannotStart(f"no log file {log!r}")
        source = path
        if not dry_run:
            kept = checkpoint or f"{log}.checkpoint"
            _refuse_to_replay_twice(kept, log, resume)
    columns = (
        rich.progress.TextColumn("{task.description}"),
        rich.progress.BarColumn(),
        rich.progress.TaskProgressColumn(),
        rich.progress.DownloadColumn(),
        rich.progress.TimeRemainingColumn(),
    )
    show = err.is_terminal and not no_progress
    with rich.progress.Progress(*columns, console=err, disable=not show, transient=True) as bar:
        task = bar.add_task("dry run" if dry_run else "replaying", total=None)

        def progress(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total or None)

        try:
            report = replay(
                source,
                bus,
                types=types,
                since=since,
                until=until,
                failed_only=failed_only,
                include_events=include_events,
                dry_run=dry_run,
                strict=strict,
                progress=progress,
                keep_messages=False,
                checkpoint=kept,
                resume=resume,
            )
        except (ValueError, OSError) as exc:
            raise CannotStart(str(exc)) from exc
    if kept is not None and report.stopped_at is None:
        Path(kept).unlink(missing_ok=True)  # the whole log was read: nothing to resume
    unreadable = _unreadable(report)
    if unreadable:
        # Nothing was handled: no line could be read. One line says so, not one per line.
        binary = " (it holds binary data)" if log != "-" and _binary(Path(log)) else ""
        what = "stdin" if log == "-" else repr(log)
        raise CannotStart(
            f"{what} is not a log of JSON lines{binary}: none of its "
            f"{unreadable:,} line{'' if unreadable == 1 else 's'} is a JSON object"
        )
    for problem in report.problems:
        _say(str(problem), err=True)
    out.print(_summary(rich, report, log))
    if report.stopped_at is not None:
        resumable = f"; --resume goes on from there (checkpoint {kept})" if kept else ""
        _say(f"stopped at line {report.stopped_at} (--strict){resumable}", err=True)
    return NOT_DONE if strict and report.problems else OK


def _refuse_to_replay_twice(checkpoint: str, log: str, resume: bool) -> None:
    """A replay of this log that did not finish left its checkpoint: go on, or say so."""
    if resume:
        return
    upto = checkpoint_of(checkpoint)
    if upto is not None:
        raise CannotStart(
            f"an earlier replay of {log} did not finish: its checkpoint {checkpoint} notes "
            f"the messages handled, up to line {upto:,}. --resume goes on from there; "
            "delete the checkpoint to replay everything again"
        )


def _unreadable(report: ReplayReport) -> int:
    """The number of lines that are not blank, when none is a JSON object; else 0.

    Only for a log read to its end (not stopped by ``--strict``).
    """
    lines = report.read - report.skipped_by_reason.get("blank", 0)
    malformed = sum(1 for problem in report.problems if problem.kind == "malformed")
    return lines if report.stopped_at is None and lines and malformed == lines else 0


def _binary(path: Path) -> bool:
    """Whether the start of a file holds a NUL byte or bytes that are not UTF-8 text."""
    with path.open("rb") as file:
        start = file.read(_SNIFF)
    if b"\0" in start:
        return True
    try:
        start.decode("utf-8")
    except UnicodeDecodeError as exc:
        return exc.start < len(start) - 3  # not a character cut at the end of the sample
    return False


def _summary(rich: Any, report: ReplayReport, log: str) -> Any:
    title = f"replay of {log}" + (" (dry run)" if report.dry_run else "")
    table = rich.table.Table(title=rich.text.Text(title), title_justify="left")
    table.add_column("lines")
    table.add_column("count", justify="right")
    table.add_row("read", f"{report.read:,}")
    table.add_row("to replay" if report.dry_run else "replayed", f"{report.replayed:,}")
    table.add_row("skipped", f"{report.skipped:,}")
    for reason, count in sorted(report.skipped_by_reason.items(), key=lambda item: -item[1]):
        table.add_row(f"  {_SKIP_LABELS.get(reason, reason)}", f"{count:,}", style="dim")
    table.add_row("failed", f"{report.failed:,}", style="bold red" if report.failed else None)
    if report.failed:
        table.add_row("  bad lines", f"{report.bad_lines:,}", style="dim")
        table.add_row("  handling failed", f"{report.handling_failed:,}", style="dim")
    return table


# -- dead letters -------------------------------------------------------------------


def _letters(app: str | None) -> DeadLetters | AsyncDeadLetters:
    bus = _app(app)
    store = getattr(bus, "dead_letters", None)
    if store is None:
        raise CannotStart(
            "the bus of --app keeps no dead letters: build it with dead_letters=store "
            "(e.g. messagebus.sqlalchemy.SqlAlchemyDeadLetterStore)"
        )
    if not isinstance(store, ManagedDeadLetterStore):
        raise CannotStart(
            f"the bus's dead-letter store, {type(store).__qualname__}, cannot list or mark "
            "letters: use a managed store (SqlAlchemyDeadLetterStore, InMemoryDeadLetterStore)"
        )
    if isinstance(bus, AsyncMessageBus):
        return AsyncDeadLetters(store, bus)
    return DeadLetters(store, bus)


def _done(value: Any) -> Any:
    """The value, or, for AsyncDeadLetters, the value its coroutine gives."""
    return asyncio.run(value) if inspect.iscoroutine(value) else value


def _as_data(stored: StoredDeadLetter, *, full: bool) -> dict[str, Any]:
    letter = stored.letter

    def iso(value: _dt.datetime | None) -> str | None:
        return None if value is None else value.isoformat()

    data: dict[str, Any] = {
        "id": stored.id,
        "status": stored.status,
        "message_name": letter.message_name,
        "message_version": letter.message_version,
        "message_id": stored.message_id,
        "handler": letter.handler,
        "attempts": letter.attempts,
        "failed_at": iso(letter.failed_at),
        "error": letter.error,
        "retries": stored.retries,
        "last_retried_at": iso(stored.last_retried_at),
        "last_error": stored.last_error,
        "resolved_at": iso(stored.resolved_at),
    }
    if full:
        data["payload"] = letter.payload
        data["metadata"] = letter.metadata
        data["traceback"] = letter.traceback
        data["last_traceback"] = stored.last_traceback
    return data


@_stdout_is_the_commands
def _list(
    app: str | None,
    message_name: str | None,
    handler: str | None,
    resolved: bool,
    everything: bool,
    limit: int | None,
    as_json: bool,
) -> int:
    out, _ = _consoles()
    rich = _rich()
    letters = _letters(app)
    found: list[StoredDeadLetter] = _done(
        letters.list(
            message_name=message_name,
            handler=handler,
            resolved=None if everything else resolved,
            limit=limit,
        )
    )
    if as_json:
        print(
            json.dumps([_as_data(stored, full=False) for stored in found], indent=2), file=_stdout()
        )
        return OK
    which = "all" if everything else ("resolved" if resolved else "pending")
    table = rich.table.Table(title=rich.text.Text(f"dead letters ({which}): {len(found)}"))
    for column in ("id", "failed at", "message", "handler", "attempts", "retries", "status"):
        table.add_column(
            column, justify="right" if column in ("id", "attempts", "retries") else "left"
        )
    table.add_column("error", overflow="fold")
    text = rich.text.Text
    for stored in found:
        letter = stored.letter
        table.add_row(
            str(stored.id),
            letter.failed_at.strftime("%Y-%m-%d %H:%M:%S"),
            text(letter.message_name),
            text(letter.handler),
            str(letter.attempts),
            str(stored.retries),
            stored.status,
            text(stored.last_error or letter.error),
        )
    out.print(table)
    return OK


@_stdout_is_the_commands
def _show(app: str | None, letter_id: int, as_json: bool) -> int:
    letters = _letters(app)
    try:
        stored: StoredDeadLetter = _done(letters.show(letter_id))
    except DeadLetterNotFoundError as exc:
        _say(f"messagebus: {exc}", err=True)
        return NOT_DONE
    data = _as_data(stored, full=True)
    if as_json:
        print(json.dumps(data, indent=2), file=_stdout())
        return OK
    for key in (
        "id", "status", "message_name", "message_version", "message_id", "handler",
        "attempts", "failed_at", "error", "retries", "last_retried_at", "last_error",
        "resolved_at",
    ):  # fmt: skip
        if data[key] is not None:
            _say(f"{key + ':':<17}{data[key]}")
    _say("payload:")
    _say(json.dumps(data["payload"], indent=2))
    _say("metadata:")
    _say(json.dumps(data["metadata"], indent=2))
    _say("traceback:")
    _say(stored.letter.traceback.rstrip())
    if stored.last_traceback:
        _say("last retry's traceback:")
        _say(stored.last_traceback.rstrip())
    return OK


@_stdout_is_the_commands
def _retry(app: str | None, ids: list[int], message_name: str | None, everything: bool) -> int:
    letters = _letters(app)
    try:
        results = _run_retries(letters, ids, message_name, everything)
    except DeadLetterNotFoundError as exc:
        _say(f"messagebus: {exc}", err=True)
        return NOT_DONE
    for result in results:
        note = f" ({result.note})" if result.note else ""
        if result.outcome == "failed":
            _say(f"{result.letter_id}: failed again: {result.error}{note}", err=True)
        else:
            _say(f"{result.letter_id}: {result.outcome.replace('_', ' ')}{note}")
    resolved = sum(1 for result in results if result.outcome == "resolved")
    failed = sum(1 for result in results if not result.ok)
    skipped = sum(1 for result in results if result.outcome == "skipped")
    _say(
        f"retried {len(results) - skipped}: {resolved} resolved, {failed} failed"
        + (f"; skipped {skipped}" if skipped else "")
    )
    return NOT_DONE if failed else OK


def _run_retries(
    letters: DeadLetters | AsyncDeadLetters,
    ids: list[int],
    message_name: str | None,
    everything: bool,
) -> list[RetryResult]:
    if isinstance(letters, AsyncDeadLetters):
        return asyncio.run(_run_retries_async(letters, ids, message_name, everything))
    if everything:
        return letters.retry_all()
    if message_name is not None:
        return letters.retry_type(message_name)
    return [letters.retry(letter_id) for letter_id in ids]


async def _run_retries_async(
    letters: AsyncDeadLetters, ids: list[int], message_name: str | None, everything: bool
) -> list[RetryResult]:
    if everything:
        return await letters.retry_all()
    if message_name is not None:
        return await letters.retry_type(message_name)
    return [await letters.retry(letter_id) for letter_id in ids]


@_stdout_is_the_commands
def _purge(
    app: str | None,
    ids: list[int],
    message_name: str | None,
    resolved: bool,
    everything: bool,
) -> int:
    letters = _letters(app)
    count: int = _done(
        letters.purge(
            ids or None,
            message_name=message_name,
            resolved=True if resolved else None,
            everything=everything,
        )
    )
    _say(f"purged {count} dead letter{'' if count == 1 else 's'}")
    return OK


@_stdout_is_the_commands
def _import(app: str | None, source: str) -> int:
    letters = _letters(app)
    if source != "-" and not Path(source).is_file():
        raise CannotStart(f"no file {source!r}")
    lines: Any = sys.stdin if source == "-" else source
    serializer = letters.bus.serializer
    try:
        if isinstance(letters, AsyncDeadLetters):
            report = asyncio.run(
                import_dead_letters_async(letters.store, lines, serializer=serializer)
            )
        else:
            report = import_dead_letters(letters.store, lines, serializer=serializer)
    except OSError as exc:
        raise CannotStart(str(exc)) from exc
    for problem in report.problems:
        _say(problem, err=True)
    _say(
        f"imported {report.imported} dead letter{'' if report.imported == 1 else 's'}"
        f"; {report.already_stored} already stored"
        + (f"; {len(report.problems)} could not be imported" if report.problems else "")
    )
    return NOT_DONE if report.problems else OK


# -- the commands -------------------------------------------------------------------

_CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


def _app_option(command: F) -> F:
    """The ``--app`` option of every command that needs the application."""
    option = click.option(
        "--app",
        metavar="APP",
        help="the application, module:factory or path/to/file.py:factory: a function "
        "that returns its bus (default: $MESSAGEBUS_APP)",
    )
    return option(command)


def _show_help_and_stop(ctx: click.Context) -> None:
    """Without a command, the help, and exit status 2 (a command is needed)."""
    if ctx.invoked_subcommand is None:
        click.echo(ctx.get_help())
        ctx.exit(CANNOT_START)


@click.group(context_settings=_CONTEXT, invoke_without_command=True)
@click.version_option(
    __version__, "--version", prog_name="messagebus", message="%(prog)s %(version)s"
)
@click.pass_context
def cli(ctx: click.Context) -> None:
    """Replay logged messages; look after dead letters; draw the message flow.

    Every command takes the application with --app module:factory (or
    path/to/file.py:factory, or $MESSAGEBUS_APP). Shell completion:
    eval "$(_MESSAGEBUS_COMPLETE=bash_source messagebus)" (zsh_source, fish_source).
    """
    _show_help_and_stop(ctx)


def _time_option(
    ctx: click.Context, param: click.Parameter, value: str | None
) -> _dt.datetime | None:
    """Read an option's ISO 8601 time; a bad one is a usage error."""
    if value is None:
        return None
    try:
        return _time(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), ctx, param) from None


def _time(text: str) -> _dt.datetime:
    """An ISO 8601 time; without a UTC offset, it is UTC."""
    value = text.strip()
    if value.endswith(("Z", "z")):
        value = value[:-1] + "+00:00"
    try:
        moment = _dt.datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(
            f"not an ISO 8601 time: {text!r} (e.g. 2024-05-01 or 2024-05-01T12:30:00+02:00)"
        ) from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=_dt.timezone.utc)


@cli.command("replay", context_settings=_CONTEXT)
@click.argument("log", metavar="LOG")
@_app_option
@click.option(
    "--type",
    "types",
    multiple=True,
    metavar="NAME",
    help="only messages of this name (repeat, or separate with commas)",
)
@click.option(
    "--since",
    metavar="TIME",
    callback=_time_option,
    help="only messages created at or after (ISO 8601; UTC unless an offset is given)",
)
@click.option(
    "--until",
    metavar="TIME",
    callback=_time_option,
    help="only messages created before (ISO 8601)",
)
@click.option("--failed-only", is_flag=True, help="only messages whose handling failed")
@click.option(
    "--include-events", is_flag=True, help="replay raised events too, not only root messages"
)
@click.option("--dry-run", is_flag=True, help="check every message; handle none")
@click.option("--strict", is_flag=True, help="stop at the first problem, and exit 1")
@click.option("--no-progress", is_flag=True, help="no progress bar")
@click.option(
    "--checkpoint",
    metavar="FILE",
    help="where to note each message handled (default: LOG.checkpoint; removed when "
    "the whole log is replayed)",
)
@click.option(
    "--resume", is_flag=True, help="go on from the checkpoint of a replay that did not finish"
)
def replay_command(
    log: str,
    app: str | None,
    types: tuple[str, ...],
    since: _dt.datetime | None,
    until: _dt.datetime | None,
    failed_only: bool,
    include_events: bool,
    dry_run: bool,
    strict: bool,
    no_progress: bool,
    checkpoint: str | None,
    resume: bool,
) -> int:
    """Handle the messages of a JSON-lines log again.

    LOG is a log file of the bus's JSON lines, or - for stdin. Each message is
    handled once, root messages only unless --include-events, with its original
    ids. Bad lines are reported by number and the rest goes on; a file of which
    no line is a JSON object is not a log (exit 2).

    Each message handled is noted in a checkpoint file, removed once the whole
    log is read: a replay that was killed (or stopped by --strict) is run again
    with --resume, and handles only what it had not handled. Without --resume,
    a checkpoint left behind is an error (exit 2), so that nothing is handled twice.
    """
    return _replay(
        log,
        app,
        types=_types(types),
        since=since,
        until=until,
        failed_only=failed_only,
        include_events=include_events,
        dry_run=dry_run,
        strict=strict,
        no_progress=no_progress,
        checkpoint=checkpoint,
        resume=resume,
    )


@cli.group("dead-letters", context_settings=_CONTEXT, invoke_without_command=True)
@click.pass_context
def dead_letters(ctx: click.Context) -> None:
    """List, show, retry or purge dead letters.

    Dead letters are the handlings the bus gave up on, kept in its dead-letter
    store. ID is a letter's id, as `messagebus dead-letters list` shows it.
    """
    _show_help_and_stop(ctx)


@dead_letters.command("list", context_settings=_CONTEXT)
@_app_option
@click.option("--type", "message_name", metavar="NAME", help="only letters of this message name")
@click.option("--handler", metavar="NAME", help="only letters of this handler")
@click.option("--resolved", is_flag=True, help="resolved letters instead")
@click.option("--all", "everything", is_flag=True, help="pending and resolved letters")
@click.option("--limit", type=int, metavar="N", help="at most N letters")
@click.option("--json", "as_json", is_flag=True, help="JSON instead of a table")
def list_command(
    app: str | None,
    message_name: str | None,
    handler: str | None,
    resolved: bool,
    everything: bool,
    limit: int | None,
    as_json: bool,
) -> int:
    """List dead letters (pending ones unless --resolved or --all)."""
    if resolved and everything:
        raise click.UsageError("--resolved and --all: give one of them")
    return _list(app, message_name, handler, resolved, everything, limit, as_json)


@dead_letters.command("show", context_settings=_CONTEXT)
@click.argument("letter_id", type=int, metavar="ID")
@_app_option
@click.option("--json", "as_json", is_flag=True, help="JSON instead of text")
def show_command(letter_id: int, app: str | None, as_json: bool) -> int:
    """Show one dead letter in full: its message, metadata and traceback.

    ID is the letter's id, as `messagebus dead-letters list` shows it.
    """
    return _show(app, letter_id, as_json)


@dead_letters.command("retry", context_settings=_CONTEXT)
@click.argument("ids", type=int, nargs=-1, metavar="[ID]...")
@_app_option
@click.option(
    "--type", "message_name", metavar="NAME", help="every pending letter of this message name"
)
@click.option("--all", "everything", is_flag=True, help="every pending letter")
def retry_command(
    ids: tuple[int, ...], app: str | None, message_name: str | None, everything: bool
) -> int:
    """Hand letters to their handler again; a success marks the letter resolved.

    ID is a letter's id, as `messagebus dead-letters list` shows it: give ids,
    --type NAME or --all.
    """
    if sum([bool(ids), message_name is not None, everything]) != 1:
        raise click.UsageError("give letter ids, --type NAME or --all (one of them)")
    return _retry(app, list(ids), message_name, everything)


@dead_letters.command("purge", context_settings=_CONTEXT)
@click.argument("ids", type=int, nargs=-1, metavar="[ID]...")
@_app_option
@click.option("--type", "message_name", metavar="NAME", help="letters of this message name")
@click.option("--resolved", is_flag=True, help="resolved letters only")
@click.option("--all", "everything", is_flag=True, help="every letter")
def purge_command(
    ids: tuple[int, ...],
    app: str | None,
    message_name: str | None,
    resolved: bool,
    everything: bool,
) -> int:
    """Delete dead letters for good: those matching every filter.

    ID is a letter's id, as `messagebus dead-letters list` shows it.
    """
    if everything and (ids or message_name is not None or resolved):
        raise click.UsageError("--all deletes every letter: give it alone")
    if not (everything or ids or message_name is not None or resolved):
        raise click.UsageError("give letter ids, --type NAME, --resolved or --all")
    return _purge(app, list(ids), message_name, resolved, everything)


# -- graph ---------------------------------------------------------------------------


def _wiring(app: str | None) -> Registry | Bus:
    """The registry or bus that ``--app`` names (a registry needs no database to draw)."""
    spec = app or os.environ.get("MESSAGEBUS_APP")
    if not spec:
        raise CannotStart("which application? give --app module:factory (or MESSAGEBUS_APP)")
    value = _load(spec)
    if isinstance(value, Registry):
        return value
    return load_app(spec)


@cli.command("graph", context_settings=_CONTEXT)
@_app_option
@click.option(
    "--format",
    "output_format",
    type=click.Choice(["mermaid", "dot", "svg"]),
    default="mermaid",
    show_default=True,
    help="Mermaid text, Graphviz DOT, or SVG (needs Graphviz's dot)",
)
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False, writable=True),
    help="write to this file instead of stdout",
)
def graph_command(app: str | None, output_format: str, output: str | None) -> int:
    """Draw who handles what: commands, handlers, events, and what leaves the process.

    From the wiring alone: what a handler raises is what it declared with
    register(raises=[...]). A command sent that nothing handles, and an event
    handler whose event nothing raises, stand out. --app may also name a
    Registry (module:registry).
    """
    from . import _graph  # drawn only here

    wiring = _wiring(app)
    try:
        text = wiring.graph(output_format)  # type: ignore[arg-type]
    except _graph.GraphvizNotFoundError as exc:
        raise CannotStart(str(exc)) from None
    if output is None:
        sys.stdout.write(text)
    else:
        Path(output).write_text(text, encoding="utf-8")
    return OK


add_relay_commands(cli, app_option=_app_option, context_settings=_CONTEXT)
add_consume_command(
    cli, app_option=_app_option, load_app=lambda args: _app(args.app), context_settings=_CONTEXT
)


@dead_letters.command("import", context_settings=_CONTEXT)
@click.argument("source", metavar="FILE")
@_app_option
def import_command(source: str, app: str | None) -> int:
    """Bring back the dead letters the store could not write.

    FILE is the store's spool file, or a log of the bus's JSON lines (its
    dead_letter_store_failed lines), or - for stdin. A letter already in the
    store is not added twice, so a file can be imported again.
    """
    return _import(app, source)


if __name__ == "__main__":
    raise SystemExit(main())
