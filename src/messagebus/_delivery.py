"""How a consumer hands a delivered message to the bus.

A message read from a broker is handled as ``bus.handle(message,
metadata=metadata)`` would handle it, with the metadata it carried. The
handlers' units of work claim it in their inbox (``claim_incoming``), so that
a message delivered twice is handled once; the bus does that for the
messages given here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._async_bus import AsyncMessageBus
    from ._bus import MessageBus
    from .messages import Message, Metadata

__all__ = ["deliver", "deliver_async"]


def deliver(bus: MessageBus, message: Message, metadata: Metadata) -> None:
    """Handle a delivered message with its metadata; a command's failure is raised."""
    bus._handle_delivered(message, metadata)


async def deliver_async(bus: AsyncMessageBus, message: Message, metadata: Metadata) -> None:
    """Handle a delivered message with its metadata on the async bus."""
    await bus._handle_delivered(message, metadata)
