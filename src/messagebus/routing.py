"""Routing: which messages leave the process, where to, and in what order.

Declared once per message type on the registry::

    registry.route(Allocated, to="allocation.events", key="sku")
    registry.route(ChargeCustomer, to="payments.commands", key=lambda c: c.customer_id)

A routed **event** is still handled by this process's handlers, and is also
sent. A routed **command** is never handled here: it belongs to the service
that consumes its destination (many senders, one owner), and is sent with
``bus.send(command)`` or, from a handler, ``context.send(command)``.

What is sent is written to the outbox by the attempt's unit of work, in the
same transaction as the change that raised it (``stage_outgoing``); a relay
publishes it (see :mod:`messagebus.relay`). Messages with the same partition
key are published in the order they were committed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs

from .messages import Message

__all__ = ["Route"]

#: A partition key: a field's name, or a function of the message.
Key = str | Callable[[Any], object]


@attrs.frozen
class Route:
    """Where one message type goes when it leaves the process.

    Attributes:
        message_type: The command or event type.
        destination: The stream (or queue) it is sent to.
        key: Its partition key: the name of one of its fields, or a function
            of the message; messages with the same key keep their order. None:
            the correlation id, so that what follows from one request keeps
            its order.
    """

    message_type: type[Message]
    destination: str
    key: Key | None = None

    def key_of(self, message: Message, correlation_id: object) -> str:
        """The partition key of one message, as text."""
        key = self.key
        if key is None:
            value: object = correlation_id
        elif isinstance(key, str):
            value = getattr(message, key)
        else:
            value = key(message)
        return str(value)
