"""Publishing events to other services (Redis pub/sub in the book).

A publisher is a function ``publish(channel, event)``, injected into the
handlers that need one. The example's real ones write JSON lines (the wire
form of :class:`messagebus.Serializer`) to a file or to the log; a broker
client would take their place in production.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from pathlib import Path

import structlog

from messagebus import Event, Serializer

Publish = Callable[[str, Event], None]


class FilePublisher:
    """Appends each event to a file as ``{"channel": ..., "name": ..., "payload": ...}``."""

    def __init__(self, path: Path, serializer: Serializer) -> None:
        self.path = path
        self._serializer = serializer
        self._lock = threading.Lock()

    def __call__(self, channel: str, event: Event) -> None:
        line = json.dumps({"channel": channel, **self._serializer.dump(event)})
        with self._lock, self.path.open("a", encoding="utf-8") as file:
            file.write(line + "\n")


class LogPublisher:
    """Logs each event instead of publishing it."""

    def __init__(self, serializer: Serializer) -> None:
        self._serializer = serializer
        self._log = structlog.get_logger("allocation.publisher")

    def __call__(self, channel: str, event: Event) -> None:
        self._log.info("event_published", channel=channel, **self._serializer.dump(event))
