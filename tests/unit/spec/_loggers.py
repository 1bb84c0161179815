"""Loggers of the set-ups the specification runs in, besides the default one."""

from __future__ import annotations

import logging
from typing import Any

import structlog


def quiet_logger() -> Any:
    """A logger with INFO filtered out: successes are not logged, failures printed."""
    return structlog.wrap_logger(
        structlog.PrintLogger(), wrapper_class=structlog.make_filtering_bound_logger(40)
    )


def filtered_at_warning() -> Any:
    """A logger with INFO filtered out that writes through structlog's configuration.

    Unlike :func:`quiet_logger`, what it writes is seen by ``capture_logs`` (the ``logs``
    fixture).
    """
    return structlog.wrap_logger(
        None, wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING)
    )


def unwritable_logger() -> Any:
    """A logger whose every line fails, as one writing to a file closed under it."""

    def broken(logger: Any, method: str, event: Any) -> Any:
        raise OSError("the log file is closed")

    return structlog.wrap_logger(structlog.PrintLogger(), processors=[broken])


class PlainLogger:
    """A logger with neither bind() nor a level to ask: given every field on each call."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, str, dict[str, Any]]] = []

    def info(self, event: str, **fields: Any) -> None:
        self.lines.append(("info", event, fields))

    def warning(self, event: str, **fields: Any) -> None:
        self.lines.append(("warning", event, fields))

    def error(self, event: str, **fields: Any) -> None:
        self.lines.append(("error", event, fields))
