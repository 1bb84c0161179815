"""``messagebus consume``: a consumer process over Redis streams.

::

    messagebus consume --app module:factory --group G --stream S [--stream S ...]
                       [--redis URL] [--consumer NAME] [--batch N] [--claim-idle SECONDS]
                       [--max-deliveries N] [--block SECONDS]

It runs until SIGTERM or SIGINT: the batch in hand is handled and
acknowledged, a summary is printed, and it exits 0. Start more processes with
the same ``--group`` to share the work.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import os
import signal
from collections.abc import Callable
from typing import Any

__all__ = ["add_consume_command"]

#: Where the Redis URL comes from when --redis is not given.
REDIS_URL_VARIABLE = "MESSAGEBUS_REDIS_URL"


def add_consume_command(
    commands: Any,
    app: argparse.ArgumentParser,
    *,
    load_app: Callable[[argparse.Namespace], Any],
    cannot_start: type[Exception],
) -> None:
    """Add ``consume`` to the ``messagebus`` command's subcommands.

    ``load_app`` gives the bus of ``--app``; ``cannot_start`` is the error
    the command raises when it cannot start (given by the command line, whose
    module may run as ``__main__``).
    """
    consume = commands.add_parser(
        "consume",
        parents=[app],
        help="handle the messages of Redis streams, in a consumer group",
        description="Read streams in a consumer group and handle each message through the "
        "application's bus; acknowledge it after its handlers committed. Entries that "
        "cannot be handled become dead letters in the bus's store. Stops on SIGTERM.",
    )
    consume.add_argument("--group", required=True, help="the consumer group")
    consume.add_argument(
        "--stream",
        dest="streams",
        action="append",
        required=True,
        metavar="STREAM",
        help="a stream to read (repeat for more)",
    )
    consume.add_argument(
        "--redis", metavar="URL", help=f"the Redis server (default: ${REDIS_URL_VARIABLE})"
    )
    consume.add_argument(
        "--consumer", metavar="NAME", help="this process's name in the group (default: host-pid)"
    )
    consume.add_argument(
        "--batch", type=_positive, default=10, metavar="N", help="messages in flight (default 10)"
    )
    consume.add_argument(
        "--claim-idle",
        type=_seconds,
        default=60.0,
        metavar="SECONDS",
        help="take over entries pending this long (a crashed consumer's; default 60)",
    )
    consume.add_argument(
        "--max-deliveries",
        type=_positive,
        default=5,
        metavar="N",
        help="deliveries before an entry is a dead letter (default 5)",
    )
    consume.add_argument(
        "--block",
        type=_seconds,
        default=1.0,
        metavar="SECONDS",
        help="how long a read waits for new entries (default 1; also the longest stop delay)",
    )
    consume.set_defaults(
        command=functools.partial(_consume, load_app=load_app, cannot_start=cannot_start)
    )


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"not a positive integer: {text!r}")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0:  # NaN too
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}")
    return value


def _consume(
    args: argparse.Namespace,
    *,
    load_app: Callable[[argparse.Namespace], Any],
    cannot_start: type[Exception],
) -> int:
    from ._async_bus import AsyncMessageBus

    CannotStart = cannot_start

    url = args.redis or os.environ.get(REDIS_URL_VARIABLE)
    if not url:
        raise CannotStart(f"which Redis? give --redis URL (or {REDIS_URL_VARIABLE})")
    try:
        import redis
        import redis.asyncio
    except ImportError:
        raise CannotStart("consume needs redis-py: pip install 'messagebus[redis]'") from None
    from .consumer import Consumer, ConsumerSummary
    from .exceptions import ConfigurationError
    from .redis import RedisStreamReader

    bus = load_app(args)
    options: dict[str, Any] = {
        "group": args.group,
        "streams": args.streams,
        "consumer": args.consumer,
        "batch": args.batch,
        "block": args.block,
        "claim_idle": args.claim_idle,
    }
    summary: ConsumerSummary
    try:
        if isinstance(bus, AsyncMessageBus):
            summary = asyncio.run(_run_async(bus, url, options, args.max_deliveries))
        else:
            client = redis.Redis.from_url(url)
            try:
                reader = RedisStreamReader(client, **options)
                consumer = Consumer(bus, reader, max_deliveries=args.max_deliveries)
                reader.setup()
                for signum in (signal.SIGTERM, signal.SIGINT):
                    signal.signal(signum, lambda *_: consumer.stop())
                _ready(reader)  # after the handlers: from now on, SIGTERM stops it cleanly
                summary = consumer.run()
            finally:
                client.close()
    except ConfigurationError as exc:
        raise CannotStart(str(exc)) from exc
    except redis.ConnectionError as exc:
        raise CannotStart(f"cannot reach Redis at {url}: {exc}") from exc
    print(
        f"stopped: read {summary.read}, handled {summary.handled}, "
        f"dead letters {summary.dead_lettered}, failed (left pending) {summary.failed}",
        flush=True,
    )
    return 0


def _ready(reader: Any) -> None:
    print(
        f"consuming {', '.join(reader.streams)} as {reader.consumer} in {reader.group}",
        flush=True,
    )


async def _run_async(bus: Any, url: str, options: dict[str, Any], max_deliveries: int) -> Any:
    import redis.asyncio

    from .consumer import AsyncConsumer
    from .redis import AsyncRedisStreamReader

    client = redis.asyncio.Redis.from_url(url)
    try:
        reader = AsyncRedisStreamReader(client, **options)
        consumer = AsyncConsumer(bus, reader, max_deliveries=max_deliveries)
        await reader.setup()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, consumer.stop)
        _ready(reader)
        return await consumer.run()
    finally:
        await client.aclose()
