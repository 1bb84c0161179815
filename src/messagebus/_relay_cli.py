"""``messagebus relay`` and ``messagebus outbox``: run a relay; look after parked rows.

::

    messagebus relay  --db URL --redis URL [--app module:factory] [--table NAME]
                      [--batch-size N] [--poll-interval SECONDS] [--retention-days DAYS]
                      [--maxlen N] [--once] [--quiet]
    messagebus outbox parked --db URL [--table NAME] [--limit N] [--json]
    messagebus outbox retry  (ID ... | --all) --db URL [--table NAME]

The relay moves rows that are already serialised: it needs the database
(``--db``, or ``$MESSAGEBUS_DATABASE_URL``) and Redis (``--redis``, or
``$MESSAGEBUS_REDIS_URL``), not the bus. ``--app``, when given, is loaded
first (its factory called), so that the application's own set-up runs (its
logging, say) and an application that cannot start stops the relay before it
starts. An async driver in the URL (``sqlite+aiosqlite``, ``postgresql+asyncpg``)
is replaced by its sync twin: the command runs the sync relay.

SIGTERM or Ctrl-C stop the relay after the batch in hand; it then prints a
summary. Progress is printed every ten seconds unless ``--quiet``.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import signal
import sys
import time
import types
from collections.abc import Callable
from typing import Any

import click

__all__ = ["add_relay_commands"]

#: The exit statuses (as in messagebus.cli).
OK, NOT_DONE, CANNOT_START = 0, 1, 2

#: Seconds between progress lines.
PROGRESS_EVERY = 10.0

_SYNC_DRIVERS = {"sqlite+aiosqlite": "sqlite", "postgresql+asyncpg": "postgresql+psycopg"}


class _CannotStart(Exception):
    pass


def _say(text: str, *, err: bool = False) -> None:
    print(text, file=sys.stderr if err else sys.stdout, flush=True)


def _engine(args: Any) -> Any:
    url = args.db or os.environ.get("MESSAGEBUS_DATABASE_URL")
    if not url:
        raise _CannotStart("which database? give --db URL (or MESSAGEBUS_DATABASE_URL)")
    try:
        import sqlalchemy as sa
        from sqlalchemy.engine import make_url
    except ImportError:  # pragma: no cover - the sqlalchemy extra is missing
        raise _CannotStart(
            "the outbox needs SQLAlchemy: pip install 'service-messagebus[sqlalchemy]'"
        ) from None
    try:
        parsed = make_url(url)
    except sa.exc.ArgumentError as exc:
        raise _CannotStart(f"--db is not a database URL: {exc}") from None
    driver = _SYNC_DRIVERS.get(parsed.drivername)
    if driver is not None:
        parsed = parsed.set(drivername=driver)
    try:
        return sa.create_engine(parsed)
    except (ImportError, sa.exc.ArgumentError) as exc:
        raise _CannotStart(f"cannot use the database {parsed!r}: {exc}") from None


def _outbox(args: Any) -> Any:
    import sqlalchemy as sa

    from messagebus.sqlalchemy import SqlAlchemyOutbox, outbox_table

    engine = _engine(args)
    table = outbox_table(sa.MetaData(), name=args.table)
    outbox = SqlAlchemyOutbox(engine, table=table)
    try:
        with engine.connect() as connection:
            exists = sa.inspect(connection).has_table(args.table)
    except sa.exc.SQLAlchemyError as exc:
        raise _CannotStart(f"cannot reach the database: {exc}") from None
    if not exists:
        raise _CannotStart(
            f"the database has no outbox table {args.table!r} "
            "(create it with the application's tables: messagebus.sqlalchemy.outbox_table)"
        )
    return outbox


def _publisher(args: Any) -> Any:
    url = args.redis or os.environ.get("MESSAGEBUS_REDIS_URL")
    if not url:
        raise _CannotStart("which Redis? give --redis URL (or MESSAGEBUS_REDIS_URL)")
    try:
        import redis

        from messagebus.redis import RedisPublisher
    except ImportError:  # pragma: no cover - the redis extra is missing
        raise _CannotStart(
            "the relay needs redis-py: pip install 'service-messagebus[redis]'"
        ) from None
    try:
        client = redis.Redis.from_url(url)
    except ValueError as exc:
        raise _CannotStart(f"--redis is not a Redis URL: {exc}") from None
    return RedisPublisher(client, maxlen=args.maxlen)


def _relay(args: Any) -> int:
    from messagebus.relay import BrokerUnavailable, Relay, RelayStats

    spec = args.app or os.environ.get("MESSAGEBUS_APP")
    if spec:
        from messagebus.cli import load_app

        load_app(spec)  # raises the command's CannotStart
    outbox = _outbox(args)
    publisher = _publisher(args)
    last_report = [time.monotonic()]

    def progress(stats: RelayStats) -> None:
        if not args.quiet and time.monotonic() - last_report[0] >= PROGRESS_EVERY:
            last_report[0] = time.monotonic()
            _say(f"relay: {stats.summary()}", err=True)

    retention = None if args.retention_days < 0 else _dt.timedelta(days=args.retention_days)
    relay = Relay(
        outbox,
        publisher,
        batch_size=args.batch_size,
        poll_interval=args.poll_interval,
        retention=retention,
        on_batch=progress,
    )
    previous = {
        signum: signal.signal(signum, lambda *_: relay.stop())
        for signum in (signal.SIGTERM, signal.SIGINT)
    }
    if not args.quiet:
        _say(
            f"relay: {outbox.table.fullname} on {outbox.engine.url!r} -> {args.redis_shown}",
            err=True,
        )
    try:
        stats = relay.run_until_idle() if args.once else relay.run()
    except BrokerUnavailable as exc:
        _say(f"messagebus: {exc}", err=True)
        return NOT_DONE
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        outbox.engine.dispose()
    _say(f"relay stopped: {stats.summary()}")
    return OK


def _parked(args: Any) -> int:
    outbox = _outbox(args)
    entries = outbox.list_parked(limit=args.limit)
    outbox.engine.dispose()
    if args.json:
        for entry in entries:
            _say(
                json.dumps(
                    {
                        "id": entry.id,
                        "message_id": entry.message.message_id,
                        "name": entry.message.name,
                        "version": entry.message.version,
                        "destination": entry.message.destination,
                        "key": entry.message.key,
                        "created_at": entry.created_at.isoformat(),
                        "tries": entry.tries,
                        "last_error": entry.last_error,
                    }
                )
            )
        return OK
    for entry in entries:
        message = entry.message
        _say(
            f"{entry.id}\t{message.name} v{message.version} -> {message.destination} "
            f"(key {message.key!r}), {entry.tries} tries: {entry.last_error}"
        )
    _say(f"{len(entries)} parked row{'' if len(entries) == 1 else 's'}")
    return OK


def _retry(args: Any) -> int:
    if bool(args.ids) == bool(args.all):
        _say("messagebus: give row ids or --all (one of them)", err=True)
        return CANNOT_START
    outbox = _outbox(args)
    count = outbox.retry_parked(None if args.all else args.ids)
    outbox.engine.dispose()
    _say(f"{count} parked row{'' if count == 1 else 's'} back in line")
    missing = 0 if args.all else len(set(args.ids)) - count
    if missing:
        _say(f"messagebus: {missing} of the ids given were not parked rows", err=True)
        return NOT_DONE
    return OK


def _redacted(url: str | None) -> str:
    if not url:
        return ""
    scheme, sep, rest = url.partition("://")
    if "@" in rest:
        rest = "***@" + rest.rpartition("@")[2]
    return f"{scheme}{sep}{rest}"


def add_relay_commands(
    group: click.Group, *, app_option: Callable[[Any], Any], context_settings: dict[str, Any]
) -> None:
    """Add ``relay`` and ``outbox`` to the ``messagebus`` command."""

    def database(command: Any) -> Any:
        command = click.option(
            "--table",
            default="messagebus_outbox",
            show_default=True,
            help="the outbox table",
        )(command)
        return click.option(
            "--db", metavar="URL", help="the database's URL (default: $MESSAGEBUS_DATABASE_URL)"
        )(command)

    @group.command("relay", context_settings=context_settings)
    @app_option
    @database
    @click.option("--redis", metavar="URL", help="Redis's URL (default: $MESSAGEBUS_REDIS_URL)")
    @click.option("--batch-size", type=click.IntRange(min=1), default=500, metavar="N")
    @click.option(
        "--poll-interval",
        type=click.FloatRange(min=0),
        default=5.0,
        show_default=True,
        metavar="SECONDS",
        help="look at the table this often when nothing woke the relay",
    )
    @click.option(
        "--retention-days",
        type=float,
        default=7.0,
        show_default=True,
        metavar="DAYS",
        help="delete rows sent longer ago (negative: keep them)",
    )
    @click.option(
        "--maxlen",
        type=click.IntRange(min=1),
        default=None,
        metavar="N",
        help="trim streams to about N entries, never past what a group still needs",
    )
    @click.option("--once", is_flag=True, help="publish what is pending, then exit")
    @click.option("--quiet", is_flag=True, help="no progress lines")
    def relay_command(**options: Any) -> int:
        """Publish the outbox's rows to their Redis streams.

        Claim the pending rows, publish them, mark them sent: at least once, in
        order per partition key. Stops on SIGTERM, after the batch in hand.
        """
        return _run(_relay)(types.SimpleNamespace(**options))

    @group.group("outbox", context_settings=context_settings, invoke_without_command=True)
    @click.pass_context
    def outbox_group(ctx: click.Context) -> None:
        """List or retry the outbox's parked rows (those the broker refused too often)."""
        if ctx.invoked_subcommand is None:
            click.echo(ctx.get_help())
            ctx.exit(CANNOT_START)

    @outbox_group.command("parked", context_settings=context_settings)
    @database
    @click.option("--limit", type=click.IntRange(min=1), metavar="N", help="at most N rows")
    @click.option("--json", "as_json", is_flag=True, help="one JSON object a line")
    def parked_command(as_json: bool, **options: Any) -> int:
        """List the parked rows."""
        return _run(_parked)(types.SimpleNamespace(json=as_json, **options))

    @outbox_group.command("retry", context_settings=context_settings)
    @click.argument("ids", type=int, nargs=-1, metavar="[ID]...")
    @database
    @click.option("--all", "everything", is_flag=True, help="every parked row")
    def retry_command(ids: tuple[int, ...], everything: bool, **options: Any) -> int:
        """Put parked rows back in line to be published.

        ID is a row's id, as `messagebus outbox parked` shows it.
        """
        return _run(_retry)(types.SimpleNamespace(ids=list(ids), all=everything, **options))


def _run(command: Callable[[Any], int]) -> Callable[[Any], int]:
    def run(args: Any) -> int:
        args.redis_shown = _redacted(getattr(args, "redis", None))
        try:
            result: int = command(args)
        except _CannotStart as exc:
            _say(f"messagebus: {exc}", err=True)
            return CANNOT_START
        return result

    return run
