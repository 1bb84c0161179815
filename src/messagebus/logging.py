"""Setting up structlog for an application: JSON lines in production, a console in development.

The bus writes one structlog event per handler attempt (``message_handled``,
``message_attempt_failed``, ``message_failed``) with the message's name, ids,
handler, attempt, outcome, duration and its payload, sensitive fields redacted.
:func:`configure_logging` sets structlog and the standard library's
:mod:`logging` up together, so that these events, and the records of every
other library (SQLAlchemy, a web server), come out in one format::

    from messagebus.logging import configure_logging

    configure_logging(json=True, path="app.log")   # production: one JSON object a line
    configure_logging(json=False)                    # development: a readable console

Each line of a JSON log is an object that ``messagebus replay`` reads back
(see :mod:`messagebus.replay`). Call it once, at start-up, before the bus is
built: the bus binds its logger when it is built.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence
from typing import Any, TextIO

import structlog
from structlog.typing import Processor

__all__ = ["configure_logging", "reset_logging"]

#: Set on the handler that :func:`configure_logging` installs, so that a
#: second call replaces it rather than adding another; its value is the root
#: logger's level before the first call, which :func:`reset_logging` restores.
_OWNED = "_messagebus_configure_logging"


def _console_exceptions(terminal: bool) -> Any:
    # Tracebacks without local variables: a handler's locals hold the message,
    # sensitive fields in clear, and the console must not show them.
    if terminal:
        try:
            import rich  # noqa: F401
        except ImportError:
            pass
        else:
            return structlog.dev.RichTracebackFormatter(show_locals=False)
    return structlog.dev.plain_traceback


def configure_logging(
    *,
    json: bool | None = None,
    level: int | str = logging.INFO,
    stream: TextIO | None = None,
    path: str | os.PathLike[str] | None = None,
    processors: Sequence[Processor] = (),
    cache_loggers: bool = True,
) -> logging.Handler:
    """Send structlog's events and the standard library's records to one place, in one format.

    structlog is configured to hand its events to :mod:`logging` (so levels,
    handlers and filters work as usual), and one handler on the root logger
    renders every record: structlog's own and those of other libraries.

    Args:
        json: One JSON object a line (production, and what ``messagebus replay``
            reads) when True; a readable, coloured console when False. By
            default JSON, unless the output is a terminal.
        level: The root logger's level; the bus logs successful attempts at
            INFO, retries at WARNING, and handlings given up on at ERROR.
        stream: Where lines go; by default ``sys.stderr``.
        path: Append lines to this file instead of a stream (UTF-8).
        processors: structlog processors to run on each event before it is
            rendered, after the standard ones (to add fields of your own).
        cache_loggers: structlog's ``cache_logger_on_first_use``: quicker, but
            a logger used once keeps this configuration; tests that configure
            logging more than once pass False.

    Returns:
        The handler installed on the root logger. A second call replaces it
        (handlers installed by others are left alone).

    Fields every line has: ``event``, ``level``, ``logger`` and ``timestamp``
    (ISO 8601, UTC), plus whatever the event carries and what is bound with
    :mod:`structlog.contextvars`. An exception is rendered as a plain traceback
    in the ``exception`` field, without local variables.
    """
    if stream is not None and path is not None:
        raise TypeError("configure_logging() takes a stream or a path, not both")
    handler: logging.Handler
    if path is not None:
        handler = logging.FileHandler(os.fspath(path), encoding="utf-8")
        terminal = False
    else:
        target = stream if stream is not None else sys.stderr
        handler = logging.StreamHandler(target)
        terminal = _is_terminal(target)
    as_json = (not terminal) if json is None else json

    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
        *processors,
    ]
    renderer: Processor
    if as_json:
        renderer = structlog.processors.JSONRenderer()
        final: list[Processor] = [structlog.processors.format_exc_info, renderer]
    else:
        renderer = structlog.dev.ConsoleRenderer(
            colors=terminal, exception_formatter=_console_exceptions(terminal)
        )
        final = [renderer]

    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            # Records of other libraries get the same fields as structlog's events.
            foreign_pre_chain=[structlog.stdlib.ExtraAdder(), *shared],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *final],
        )
    )
    root = logging.getLogger()
    previous_level = root.level
    for old in _installed(root):
        previous_level = getattr(old, _OWNED)
        root.removeHandler(old)
        old.close()
    setattr(handler, _OWNED, previous_level)
    root.addHandler(handler)
    root.setLevel(level)

    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.stdlib.PositionalArgumentsFormatter(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        context_class=dict,
        cache_logger_on_first_use=cache_loggers,
    )
    return handler


def reset_logging() -> None:
    """Undo :func:`configure_logging`: for a test suite, or a tool that configured logging.

    Removes (and closes) the handler it installed, gives the root logger back
    the level it had before, and structlog its defaults.
    """
    root = logging.getLogger()
    for handler in _installed(root):
        root.removeHandler(handler)
        handler.close()
        root.setLevel(getattr(handler, _OWNED))
    structlog.reset_defaults()


def _installed(root: logging.Logger) -> list[logging.Handler]:
    return [h for h in root.handlers if hasattr(h, _OWNED)]


def _is_terminal(stream: TextIO) -> bool:
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty()) if callable(isatty) else False
    except ValueError:  # a closed stream
        return False
