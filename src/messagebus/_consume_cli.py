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

import asyncio
import os
import signal
import types
from collections.abc import Callable
from typing import Any

import click

__all__ = ["add_consume_command"]

#: Where the Redis URL comes from when --redis is not given.
REDIS_URL_VARIABLE = "MESSAGEBUS_REDIS_URL"


def add_consume_command(
    group: click.Group,
    *,
    app_option: Callable[[Any], Any],
    load_app: Callable[[Any], Any],
    context_settings: dict[str, Any],
) -> None:
    """Add ``consume`` to the ``messagebus`` command.

    ``load_app`` gives the bus of the options' ``app``; ``app_option`` is the
    command line's ``--app`` option.
    """

    @group.command("consume", context_settings=context_settings)
    @app_option
    @click.option("--group", "group_name", required=True, help="the consumer group")
    @click.option(
        "--stream",
        "streams",
        multiple=True,
        required=True,
        metavar="STREAM",
        help="a stream to read (repeat for more)",
    )
    @click.option(
        "--redis", metavar="URL", help=f"the Redis server (default: ${REDIS_URL_VARIABLE})"
    )
    @click.option(
        "--consumer", metavar="NAME", help="this process's name in the group (default: host-pid)"
    )
    @click.option(
        "--batch",
        callback=_positive,
        default="10",
        metavar="N",
        help="messages in flight (default 10)",
    )
    @click.option(
        "--claim-idle",
        callback=_seconds,
        default="60",
        metavar="SECONDS",
        help="take over entries pending this long (a crashed consumer's; default 60)",
    )
    @click.option(
        "--max-deliveries",
        callback=_positive,
        default="5",
        metavar="N",
        help="deliveries before an entry is a dead letter (default 5)",
    )
    @click.option(
        "--block",
        callback=_seconds,
        default="1",
        metavar="SECONDS",
        help="how long a read waits for new entries (default 1; also the longest stop delay)",
    )
    def consume_command(group_name: str, streams: tuple[str, ...], **options: Any) -> int:
        """Read streams in a consumer group and handle each message through the bus.

        Each message is acknowledged after its handlers committed; entries that
        cannot be handled become dead letters in the bus's store. Stops on
        SIGTERM, after the batch in hand, with a summary.
        """
        args = types.SimpleNamespace(group=group_name, streams=list(streams), **options)
        return _consume(args, load_app=load_app)


def _positive(ctx: click.Context, param: click.Parameter, value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        raise click.BadParameter(f"not a positive integer: {value!r}")
    return number


def _seconds(ctx: click.Context, param: click.Parameter, value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        number = -1.0
    if not number >= 0:  # NaN too
        raise click.BadParameter(f"not a number of seconds: {value!r}")
    return number


def _consume(args: Any, *, load_app: Callable[[Any], Any]) -> int:
    from ._async_bus import AsyncMessageBus
    from .cli import CannotStart

    url = args.redis or os.environ.get(REDIS_URL_VARIABLE)
    if not url:
        raise CannotStart(f"which Redis? give --redis URL (or {REDIS_URL_VARIABLE})")
    try:
        import redis
        import redis.asyncio
    except ImportError:
        raise CannotStart(
            "consume needs redis-py: pip install 'service-messagebus[redis]'"
        ) from None
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
