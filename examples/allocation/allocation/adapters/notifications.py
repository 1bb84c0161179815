"""Notifications: how the service tells people things (e-mail in the book).

The example never sends mail: :class:`FileNotifications` writes each message
as a JSON line to a file (what the demo shows), :class:`LogNotifications`
logs it. Tests use a fake that remembers what was sent.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Protocol

import structlog


class Notifications(Protocol):
    """Sends a message to a destination (an e-mail address)."""

    def send(self, destination: str, message: str) -> None: ...


class FileNotifications:
    """Appends each message to a file, one JSON object a line (an outbox to read)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()

    def send(self, destination: str, message: str) -> None:
        line = json.dumps({"to": destination, "message": message})
        with self._lock, self.path.open("a", encoding="utf-8") as file:
            file.write(line + "\n")


class LogNotifications:
    """Logs each message instead of sending it."""

    def __init__(self) -> None:
        self._log = structlog.get_logger("allocation.notifications")

    def send(self, destination: str, message: str) -> None:
        self._log.info("notification_sent", to=destination, message=message)
