"""Redis Streams: the relay's publisher and the consumer (the ``redis`` extra).

Importing :mod:`messagebus` does not import redis-py; importing this package does::

    import redis
    from messagebus.redis import RedisPublisher
    from messagebus.relay import Relay
    from messagebus.sqlalchemy import SqlAlchemyOutbox

    relay = Relay(SqlAlchemyOutbox(engine), RedisPublisher(redis.Redis.from_url(url)))

Every message is an entry of the stream its route names, with the fields of
:mod:`messagebus.transport`. Redis 7.0 is enough; features of later versions
are used only where :func:`redis_version` finds them.
"""

from ._consumer import AsyncRedisStreamReader, RedisStreamReader
from ._publisher import AsyncRedisPublisher, RedisPublisher, redis_version, trim_stream

__all__ = [
    "AsyncRedisPublisher",
    "AsyncRedisStreamReader",
    "RedisPublisher",
    "RedisStreamReader",
    "redis_version",
    "trim_stream",
]
