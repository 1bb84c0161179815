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

import argparse
import datetime as _dt
import json
import os
import signal
import sys
import time
from typing import Any

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


def _engine(args: argparse.Namespace) -> Any:
    url = args.db or os.environ.get("MESSAGEBUS_DATABASE_URL")
    if not url:
        raise _CannotStart("which database? give --db URL (or MESSAGEBUS_DATABASE_URL)")
    try:
        import sqlalchemy as sa
        from sqlalchemy.engine import make_url
    except ImportError:  # pragma: no cover - the sqlalchemy extra is missing
        raise _CannotStart(
            "the outbox needs SQLAlchemy: pip install 'messagebus[sqlalchemy]'"
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


def _outbox(args: argparse.Namespace) -> Any:
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


def _publisher(args: argparse.Namespace) -> Any:
    url = args.redis or os.environ.get("MESSAGEBUS_REDIS_URL")
    if not url:
        raise _CannotStart("which Redis? give --redis URL (or MESSAGEBUS_REDIS_URL)")
    try:
        import redis

        from messagebus.redis import RedisPublisher
    except ImportError:  # pragma: no cover - the redis extra is missing
        raise _CannotStart("the relay needs redis-py: pip install 'messagebus[redis]'") from None
    try:
        client = redis.Redis.from_url(url)
    except ValueError as exc:
        raise _CannotStart(f"--redis is not a Redis URL: {exc}") from None
    return RedisPublisher(client, maxlen=args.maxlen)


def _relay(args: argparse.Namespace) -> int:
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


def _parked(args: argparse.Namespace) -> int:
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


def _retry(args: argparse.Namespace) -> int:
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


def add_relay_commands(commands: Any, app: argparse.ArgumentParser) -> None:
    """Add ``relay`` and ``outbox`` to the ``messagebus`` command's subparsers."""
    database = argparse.ArgumentParser(add_help=False)
    database.add_argument(
        "--db", metavar="URL", help="the database's URL (default: $MESSAGEBUS_DATABASE_URL)"
    )
    database.add_argument(
        "--table", default="messagebus_outbox", help="the outbox table (default: %(default)s)"
    )

    relay = commands.add_parser(
        "relay",
        parents=[app, database],
        help="publish the outbox's rows to Redis streams",
        description="Claim the outbox's pending rows, publish them to their Redis streams, "
        "mark them sent; at least once, in order per partition key. Stops on SIGTERM.",
    )
    relay.add_argument(
        "--redis", metavar="URL", help="Redis's URL (default: $MESSAGEBUS_REDIS_URL)"
    )
    relay.add_argument("--batch-size", type=_positive, default=500, metavar="N")
    relay.add_argument(
        "--poll-interval",
        type=float,
        default=5.0,
        metavar="SECONDS",
        help="look at the table this often when nothing woke the relay (default: %(default)s)",
    )
    relay.add_argument(
        "--retention-days",
        type=float,
        default=7.0,
        metavar="DAYS",
        help="delete rows sent longer ago (default: %(default)s; negative: keep them)",
    )
    relay.add_argument(
        "--maxlen",
        type=_positive,
        default=None,
        metavar="N",
        help="trim streams to about N entries, never past what a group still needs",
    )
    relay.add_argument("--once", action="store_true", help="publish what is pending, then exit")
    relay.add_argument("--quiet", action="store_true", help="no progress lines")
    relay.set_defaults(command=_run(_relay))

    outbox = commands.add_parser(
        "outbox",
        help="list or retry the outbox's parked rows",
        description="Rows the broker refused too many times are parked: left aside until retried.",
    )
    actions = outbox.add_subparsers(title="actions", required=True, metavar="ACTION")
    parked = actions.add_parser("parked", parents=[database], help="list the parked rows")
    parked.add_argument("--limit", type=_positive, metavar="N", help="at most N rows")
    parked.add_argument("--json", action="store_true", help="one JSON object a line")
    parked.set_defaults(command=_run(_parked))
    retry = actions.add_parser(
        "retry", parents=[database], help="put parked rows back in line to be published"
    )
    retry.add_argument("ids", type=int, nargs="*", metavar="ID")
    retry.add_argument("--all", action="store_true", help="every parked row")
    retry.set_defaults(command=_run(_retry))


def _run(command: Any) -> Any:
    def run(args: argparse.Namespace) -> int:
        args.redis_shown = _redacted(getattr(args, "redis", None))
        try:
            result: int = command(args)
        except _CannotStart as exc:
            _say(f"messagebus: {exc}", err=True)
            return CANNOT_START
        return result

    return run


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value
