"""The ``messagebus`` command: replay logs, and look after dead letters.

::

    messagebus replay LOG --app module:factory [--type NAME] [--since TIME] [--until TIME]
                          [--failed-only] [--include-events] [--dry-run] [--strict]
    messagebus dead-letters list  --app module:factory [--type NAME] [--handler NAME]
                                  [--resolved | --all] [--limit N] [--json]
    messagebus dead-letters show  ID --app module:factory [--json]
    messagebus dead-letters retry (ID ... | --type NAME | --all) --app module:factory
    messagebus dead-letters purge (ID ... | --type NAME | --resolved | --all) --app module:factory
    messagebus relay --db URL --redis URL [--app module:factory] [--once] [...]
    messagebus outbox parked --db URL  |  messagebus outbox retry (ID ... | --all) --db URL
    messagebus consume --app module:factory --group G --stream S [--stream S ...] [--redis URL]

``--app module:factory`` names the application's own code (trusted, unlike a
log): a function that takes no arguments and returns a
:class:`~messagebus.MessageBus` or an :class:`~messagebus.AsyncMessageBus`
(or an object whose ``bus`` attribute is one), or such a bus itself. The
current directory is importable, as it is for ``python -m``. ``MESSAGEBUS_APP``
gives it when ``--app`` is not given.

Exit status: 0 when the command did what it was asked (a replay that
reported bad lines included); 1 when something could not be done (``--strict``
and a problem; a dead letter not found, or a retry that failed); 2 when the
command could not start (wrong arguments, an application or a log that cannot
be loaded).

The progress bar and tables need ``rich``: ``pip install 'messagebus[cli]'``.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as _dt
import importlib
import json
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ._async_bus import AsyncMessageBus
from ._bus import MessageBus
from ._consume_cli import add_consume_command
from ._relay_cli import add_relay_commands
from .dead_letters import (
    AsyncDeadLetters,
    DeadLetterNotFoundError,
    DeadLetters,
    ManagedDeadLetterStore,
    RetryResult,
    StoredDeadLetter,
)
from .replay import ReplayReport, replay

__all__ = ["load_app", "main"]

Bus = MessageBus | AsyncMessageBus

#: The exit statuses.
OK, NOT_DONE, CANNOT_START = 0, 1, 2

_SKIP_LABELS = {
    "repeat": "further lines of a message",
    "raised_event": "raised events",
    "not_a_record": "not attempt records",
    "blank": "blank lines",
    "type": "other message types",
    "time": "outside the time range",
    "not_failed": "not failed",
}


class CannotStart(Exception):
    """The command cannot start: its application, store or log cannot be had."""


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``messagebus`` command; returns its exit status."""
    parser = _parser()
    try:
        args = parser.parse_args(argv)
        check = getattr(args, "check", None)
        problem = check(args) if check is not None else None
        if problem:
            args.parser.error(problem)
    except SystemExit as exit:  # argparse: --help, or wrong arguments
        return exit.code if isinstance(exit.code, int) else CANNOT_START
    command: Callable[[argparse.Namespace], int] = args.command
    try:
        return command(args)
    except CannotStart as exc:
        print(f"messagebus: {exc}", file=sys.stderr)
        return CANNOT_START
    except KeyboardInterrupt:
        print("messagebus: interrupted", file=sys.stderr)
        return 130


# -- the application ---------------------------------------------------------------


def load_app(spec: str) -> Bus:
    """The bus that ``module:factory`` makes (the application's own, trusted code).

    Raises:
        CannotStart: The module or the factory cannot be found, the factory
            fails, or it returns something other than a bus.
    """
    module_name, colon, attribute = spec.partition(":")
    if not (colon and module_name and attribute):
        raise CannotStart(
            f"--app takes module:factory (e.g. myapp.bootstrap:make_bus), not {spec!r}"
        )
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
    value = target
    if not isinstance(target, (MessageBus, AsyncMessageBus)) and callable(target):
        try:
            value = target()
        except Exception as exc:
            detail = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
            raise CannotStart(f"the factory {spec} failed:\n{detail}") from exc
    if not isinstance(value, (MessageBus, AsyncMessageBus)):
        value = getattr(value, "bus", value)
    if not isinstance(value, (MessageBus, AsyncMessageBus)):
        raise CannotStart(
            f"--app {spec} gave {type(value).__qualname__}, not a MessageBus or AsyncMessageBus"
        )
    return value


def _app(args: argparse.Namespace) -> Bus:
    spec = args.app or os.environ.get("MESSAGEBUS_APP")
    if not spec:
        raise CannotStart("which application? give --app module:factory (or MESSAGEBUS_APP)")
    return load_app(spec)


def _rich() -> Any:
    try:
        import rich.console
        import rich.progress
        import rich.table
        import rich.text
    except ImportError:
        raise CannotStart("the command line needs rich: pip install 'messagebus[cli]'") from None
    return rich


def _consoles() -> tuple[Any, Any]:
    """Rich consoles for tables and the progress bar; text goes through :func:`_say`."""
    rich = _rich()
    out = rich.console.Console(file=sys.stdout, highlight=False)
    err = rich.console.Console(file=sys.stderr, highlight=False)
    for console in (out, err):
        if not console.is_terminal:  # a file or a pipe: lines are not cut at 80 columns
            console.width = 160
    return out, err


def _say(text: str, *, err: bool = False) -> None:
    # Plain lines, never wrapped nor read as markup: they quote logs and errors.
    print(text, file=sys.stderr if err else sys.stdout)


# -- replay -------------------------------------------------------------------------


def _time(text: str) -> _dt.datetime:
    """An ISO 8601 time; without a UTC offset, it is UTC."""
    value = text.strip()
    if value.endswith(("Z", "z")):
        value = value[:-1] + "+00:00"
    try:
        moment = _dt.datetime.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not an ISO 8601 time: {text!r} (e.g. 2024-05-01 or 2024-05-01T12:30:00+02:00)"
        ) from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=_dt.timezone.utc)


def _types(values: list[str] | None) -> list[str] | None:
    if not values:
        return None
    return [name.strip() for value in values for name in value.split(",") if name.strip()]


def _replay(args: argparse.Namespace) -> int:
    out, err = _consoles()
    rich = _rich()
    bus = _app(args)
    source: Any
    if args.log == "-":
        source = sys.stdin.buffer
    else:
        path = Path(args.log)
        if not path.is_file():
            raise CannotStart(f"no log file {args.log!r}")
        source = path
    columns = (
        rich.progress.TextColumn("{task.description}"),
        rich.progress.BarColumn(),
        rich.progress.TaskProgressColumn(),
        rich.progress.DownloadColumn(),
        rich.progress.TimeRemainingColumn(),
    )
    show = err.is_terminal and not args.no_progress
    with rich.progress.Progress(*columns, console=err, disable=not show, transient=True) as bar:
        task = bar.add_task("dry run" if args.dry_run else "replaying", total=None)

        def progress(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total or None)

        try:
            report = replay(
                source,
                bus,
                types=_types(args.types),
                since=args.since,
                until=args.until,
                failed_only=args.failed_only,
                include_events=args.include_events,
                dry_run=args.dry_run,
                strict=args.strict,
                progress=progress,
                keep_messages=False,
            )
        except (ValueError, OSError) as exc:
            raise CannotStart(str(exc)) from exc
    for problem in report.problems:
        _say(str(problem), err=True)
    out.print(_summary(rich, report, args.log))
    if report.stopped_at is not None:
        _say(f"stopped at line {report.stopped_at} (--strict)", err=True)
    return NOT_DONE if args.strict and report.problems else OK


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


def _letters(args: argparse.Namespace) -> DeadLetters | AsyncDeadLetters:
    bus = _app(args)
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


def _list(args: argparse.Namespace) -> int:
    out, _ = _consoles()
    rich = _rich()
    letters = _letters(args)
    resolved = None if args.all else bool(args.resolved)
    found = letters.list(
        message_name=args.type, handler=args.handler, resolved=resolved, limit=args.limit
    )
    if args.json:
        print(json.dumps([_as_data(stored, full=False) for stored in found], indent=2))
        return OK
    which = "all" if args.all else ("resolved" if args.resolved else "pending")
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


def _show(args: argparse.Namespace) -> int:
    letters = _letters(args)
    try:
        stored = letters.show(args.id)
    except DeadLetterNotFoundError as exc:
        _say(f"messagebus: {exc}", err=True)
        return NOT_DONE
    data = _as_data(stored, full=True)
    if args.json:
        print(json.dumps(data, indent=2))
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


def _retry(args: argparse.Namespace) -> int:
    letters = _letters(args)
    try:
        results = _run_retries(letters, args)
    except DeadLetterNotFoundError as exc:
        _say(f"messagebus: {exc}", err=True)
        return NOT_DONE
    for result in results:
        if result.outcome == "failed":
            _say(f"{result.letter_id}: failed again: {result.error}", err=True)
        else:
            _say(f"{result.letter_id}: {result.outcome.replace('_', ' ')}")
    resolved = sum(1 for result in results if result.outcome == "resolved")
    failed = sum(1 for result in results if not result.ok)
    _say(f"retried {len(results)}: {resolved} resolved, {failed} failed")
    return NOT_DONE if failed else OK


def _run_retries(
    letters: DeadLetters | AsyncDeadLetters, args: argparse.Namespace
) -> list[RetryResult]:
    if isinstance(letters, AsyncDeadLetters):
        return asyncio.run(_run_retries_async(letters, args))
    if args.all:
        return letters.retry_all()
    if args.type is not None:
        return letters.retry_type(args.type)
    return [letters.retry(letter_id) for letter_id in args.ids]


async def _run_retries_async(
    letters: AsyncDeadLetters, args: argparse.Namespace
) -> list[RetryResult]:
    if args.all:
        return await letters.retry_all()
    if args.type is not None:
        return await letters.retry_type(args.type)
    return [await letters.retry(letter_id) for letter_id in args.ids]


def _purge(args: argparse.Namespace) -> int:
    letters = _letters(args)
    count = letters.purge(
        args.ids or None,
        message_name=args.type,
        resolved=True if args.resolved else None,
        everything=args.all,
    )
    _say(f"purged {count} dead letter{'' if count == 1 else 's'}")
    return OK


# -- arguments ----------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="messagebus", description="Replay logged messages; look after dead letters."
    )
    commands = parser.add_subparsers(title="commands", required=True, metavar="COMMAND")

    app = argparse.ArgumentParser(add_help=False)
    app.add_argument(
        "--app",
        metavar="MODULE:FACTORY",
        help="the application: a function that returns its bus (default: $MESSAGEBUS_APP)",
    )

    add_consume_command(commands, app, load_app=_app, cannot_start=CannotStart)

    add_relay_commands(commands, app)

    replay_ = commands.add_parser(
        "replay",
        parents=[app],
        help="handle the messages of a JSON-lines log again",
        description="Handle the messages of a log again: each message once, root messages "
        "only unless --include-events, with their original ids. Bad lines are reported "
        "by number and the rest goes on.",
    )
    replay_.add_argument("log", metavar="LOG", help="a JSON-lines log file, or - for stdin")
    replay_.add_argument(
        "--type",
        dest="types",
        action="append",
        metavar="NAME",
        help="only messages of this name (repeat, or separate with commas)",
    )
    replay_.add_argument(
        "--since",
        type=_time,
        help="only messages created at or after (ISO 8601; UTC unless an offset is given)",
    )
    replay_.add_argument("--until", type=_time, help="only messages created before (ISO 8601)")
    replay_.add_argument(
        "--failed-only", action="store_true", help="only messages whose handling failed"
    )
    replay_.add_argument(
        "--include-events",
        action="store_true",
        help="replay raised events too, not only root messages",
    )
    replay_.add_argument("--dry-run", action="store_true", help="check every message; handle none")
    replay_.add_argument(
        "--strict", action="store_true", help="stop at the first problem, and exit 1"
    )
    replay_.add_argument("--no-progress", action="store_true", help="no progress bar")
    replay_.set_defaults(command=_replay)

    letters = commands.add_parser(
        "dead-letters",
        help="list, show, retry or purge dead letters",
        description="The handlings the bus gave up on, kept in its dead-letter store.",
    )
    actions = letters.add_subparsers(title="actions", required=True, metavar="ACTION")

    list_ = actions.add_parser("list", parents=[app], help="list dead letters (pending by default)")
    list_.add_argument("--type", metavar="NAME", help="only letters of this message name")
    list_.add_argument("--handler", metavar="NAME", help="only letters of this handler")
    which = list_.add_mutually_exclusive_group()
    which.add_argument("--resolved", action="store_true", help="resolved letters instead")
    which.add_argument("--all", action="store_true", help="pending and resolved letters")
    list_.add_argument("--limit", type=int, metavar="N", help="at most N letters")
    list_.add_argument("--json", action="store_true", help="JSON instead of a table")
    list_.set_defaults(command=_list)

    show = actions.add_parser("show", parents=[app], help="show one dead letter in full")
    show.add_argument("id", type=int, metavar="ID")
    show.add_argument("--json", action="store_true", help="JSON instead of text")
    show.set_defaults(command=_show)

    retry_ = actions.add_parser(
        "retry",
        parents=[app],
        help="hand letters to their handler again; a success marks the letter resolved",
    )
    retry_.add_argument("ids", type=int, nargs="*", metavar="ID")
    retry_.add_argument("--type", metavar="NAME", help="every pending letter of this message name")
    retry_.add_argument("--all", action="store_true", help="every pending letter")
    retry_.set_defaults(command=_retry, check=_check_retry, parser=retry_)

    purge = actions.add_parser(
        "purge", parents=[app], help="delete dead letters for good: those matching every filter"
    )
    purge.add_argument("ids", type=int, nargs="*", metavar="ID")
    purge.add_argument("--type", metavar="NAME", help="letters of this message name")
    purge.add_argument("--resolved", action="store_true", help="resolved letters only")
    purge.add_argument("--all", action="store_true", help="every letter")
    purge.set_defaults(command=_purge, check=_check_purge, parser=purge)

    return parser


def _check_retry(args: argparse.Namespace) -> str | None:
    chosen = sum([bool(args.ids), args.type is not None, args.all])
    if chosen != 1:
        return "give letter ids, --type NAME or --all (one of them)"
    return None


def _check_purge(args: argparse.Namespace) -> str | None:
    if args.all and (args.ids or args.type is not None or args.resolved):
        return "--all deletes every letter: give it alone"
    if not (args.all or args.ids or args.type is not None or args.resolved):
        return "give letter ids, --type NAME, --resolved or --all"
    return None


if __name__ == "__main__":
    raise SystemExit(main())
