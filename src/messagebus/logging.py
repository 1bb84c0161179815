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

With ``stdlib=False`` structlog writes the lines itself, without the standard
library's :mod:`logging` in between: a logged attempt then costs a few
microseconds instead of a few tens (with orjson installed, the ``orjson``
extra, JSON is rendered by it), and records of other libraries are left to
whatever handles them.

Each line of a JSON log is an object that ``messagebus replay`` reads back
(see :mod:`messagebus.replay`). Call it once, at start-up, before the bus is
built: the bus binds its logger when it is built.

An application that configures neither this nor structlog gets a quiet bus:
its lines go to the standard library's ``logging.getLogger("messagebus")``,
one readable line each, so that by default (WARNING) a success writes
nothing and a failure one line with its traceback (the library's own frames
left out) on stderr.
"""

from __future__ import annotations

import json as _json
import logging
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import IO, Any, Literal, TextIO, overload

import structlog
from structlog.typing import Processor

from .messages import _iso_from_ns

__all__ = ["configure_logging", "reset_logging"]

#: Set on the handler that :func:`configure_logging` installs, so that a
#: second call replaces it rather than adding another; its value is the root
#: logger's level before the first call, which :func:`reset_logging` restores.
_OWNED = "_messagebus_configure_logging"

#: The file that ``configure_logging(path=..., stdlib=False)`` opened, closed
#: by the next call or by :func:`reset_logging`.
_direct_file: IO[Any] | _Appender | None = None


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


@overload
def configure_logging(
    *,
    json: bool | None = ...,
    level: int | str = ...,
    stream: TextIO | None = ...,
    path: str | os.PathLike[str] | None = ...,
    processors: Sequence[Processor] = ...,
    cache_loggers: bool = ...,
    stdlib: Literal[True] = ...,
) -> logging.Handler: ...


@overload
def configure_logging(
    *,
    json: bool | None = ...,
    level: int | str = ...,
    stream: TextIO | None = ...,
    path: str | os.PathLike[str] | None = ...,
    processors: Sequence[Processor] = ...,
    cache_loggers: bool = ...,
    stdlib: Literal[False],
) -> None: ...


@overload
def configure_logging(
    *,
    json: bool | None = ...,
    level: int | str = ...,
    stream: TextIO | None = ...,
    path: str | os.PathLike[str] | None = ...,
    processors: Sequence[Processor] = ...,
    cache_loggers: bool = ...,
    stdlib: bool,
) -> logging.Handler | None: ...


def configure_logging(
    *,
    json: bool | None = None,
    level: int | str = logging.INFO,
    stream: TextIO | None = None,
    path: str | os.PathLike[str] | None = None,
    processors: Sequence[Processor] = (),
    cache_loggers: bool = True,
    stdlib: bool = True,
) -> logging.Handler | None:
    """Send structlog's events and the standard library's records to one place, in one format.

    structlog is configured to hand its events to :mod:`logging` (so levels,
    handlers and filters work as usual), and one handler on the root logger
    renders every record: structlog's own and those of other libraries.

    Args:
        json: One JSON object a line (production, and what ``messagebus replay``
            reads) when True; a readable, coloured console when False. By
            default JSON, unless the output is a terminal.
        level: The root logger's level (structlog's own with ``stdlib=False``);
            the bus logs successful attempts at INFO, retries at WARNING, and
            handlings given up on at ERROR.
        stream: Where lines go; by default ``sys.stderr``.
        path: Append lines to this file instead of a stream (UTF-8).
        processors: structlog processors to run on each event before it is
            rendered, after the standard ones (to add fields of your own).
        cache_loggers: structlog's ``cache_logger_on_first_use``: quicker, but
            a logger used once keeps this configuration; tests that configure
            logging more than once pass False.
        stdlib: True (the default) to go through the standard library's
            :mod:`logging`, as described above. False for structlog to write
            the lines itself, several times quicker: ``level`` is then fixed
            when this is called, the lines have no ``logger`` field, and the
            root logger gets no handler: records of other libraries go where
            they went before (a handler an earlier call installed is removed,
            as :func:`reset_logging` does). JSON is rendered by orjson when it is installed
            (then values JSON has no type for, bound by an application, are
            written as orjson writes them, an enum or a UUID as its value,
            rather than as their ``repr``).

    Returns:
        The handler installed on the root logger (None when ``stdlib`` is
        False). A second call replaces it (handlers installed by others are
        left alone).

    Fields every line has: ``event``, ``level``, ``logger`` and ``timestamp``
    (ISO 8601, UTC), plus whatever the event carries and what is bound with
    :mod:`structlog.contextvars`. An exception is rendered as a plain traceback
    in the ``exception`` field, without local variables.
    """
    if stream is not None and path is not None:
        raise TypeError("configure_logging() takes a stream or a path, not both")
    number = _level_number(level)  # checked before anything is undone
    _close_direct_file()
    if not stdlib:
        _uninstall(logging.getLogger())
        _configure_direct(json, number, stream, path, processors, cache_loggers)
        return None
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
    previous_level = _uninstall(root)
    setattr(handler, _OWNED, previous_level)
    root.addHandler(handler)
    root.setLevel(number)

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
    _uninstall(logging.getLogger())
    _close_direct_file()
    structlog.reset_defaults()


def _uninstall(root: logging.Logger) -> int:
    """Remove the handler :func:`configure_logging` installed; the level from before it."""
    level = root.level
    for handler in _installed(root):
        root.removeHandler(handler)
        handler.close()
        level = getattr(handler, _OWNED)
        root.setLevel(level)
    return level


def _close_direct_file() -> None:
    global _direct_file
    if _direct_file is not None:
        _direct_file.close()
        _direct_file = None


def _level_number(level: int | str) -> int:
    if isinstance(level, int):
        return level
    number = logging.getLevelName(level.upper())
    if not isinstance(number, int):
        raise ValueError(
            f"unknown log level {level!r}: use DEBUG, INFO, WARNING, ERROR or CRITICAL"
        )
    return number


def _json_dumps(*, text: bool) -> Callable[..., str | bytes]:
    """A serializer for structlog's JSONRenderer: orjson's when installed, else the stdlib's."""
    try:
        import orjson
    except ImportError:
        if text:
            return _json.dumps
        return lambda obj, **options: _json.dumps(obj, **options).encode()
    orjson_dumps = orjson.dumps

    def dumps(obj: Any, default: Callable[[Any], Any] | None = None, **_: Any) -> str | bytes:
        try:
            data = orjson_dumps(obj, default=default)
        except TypeError:  # what orjson refuses (an int beyond 64 bits): the stdlib takes it
            data = _json.dumps(obj, default=default).encode()
        return data.decode() if text else data

    return dumps


class _Appender:
    """A file that each JSON line is appended to with one ``write(2)``.

    Opened with ``O_APPEND``, so lines from several threads or processes never
    interleave, and each is in the file (the operating system's) when the
    call returns: nothing is left in a buffer of this process to lose.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self._fd = os.open(os.fspath(path), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o666)

    def logger(self, *args: Any) -> _Appender:
        """structlog's logger factory: every logger writes to this file."""
        return self

    def msg(self, line: bytes) -> None:
        data = line + b"\n"
        written = os.write(self._fd, data)
        while written < len(data):  # a short write (a full disk, a signal): write the rest
            data = data[written:]
            written = os.write(self._fd, data)

    log = debug = info = warn = warning = error = err = critical = exception = fatal = msg

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def _add_timestamp(logger: Any, method: str, event_dict: Any) -> Any:
    """structlog's ``TimeStamper(fmt="iso", utc=True)``, the same text made quicker."""
    event_dict["timestamp"] = _iso_from_ns(time.time_ns(), "Z")
    return event_dict


def _format_exc_info(logger: Any, method: str, event_dict: Any) -> Any:
    """structlog's ``format_exc_info``, called only for the events it changes."""
    if "exc_info" in event_dict:
        return structlog.processors.format_exc_info(logger, method, event_dict)
    return event_dict


def _configure_direct(
    json: bool | None,
    level: int,
    stream: TextIO | None,
    path: str | os.PathLike[str] | None,
    processors: Sequence[Processor],
    cache_loggers: bool,
) -> None:
    """structlog writing its lines itself, without the standard library's logging."""
    global _direct_file
    binary = False
    factory: Any
    if path is not None:
        binary = json is not False
        if binary:
            appender = _direct_file = _Appender(path)
            factory = appender.logger
        else:
            file: Any = open(os.fspath(path), "a", encoding="utf-8")  # noqa: SIM115 - closed by reset
            _direct_file = file
            factory = structlog.WriteLoggerFactory(file=file)
        terminal = False
    else:
        stream = stream if stream is not None else sys.stderr
        factory = structlog.WriteLoggerFactory(file=stream)
        terminal = _is_terminal(stream)
    as_json = (not terminal) if json is None else json
    renderer: list[Processor]
    if as_json:
        renderer = [
            _format_exc_info,
            structlog.processors.JSONRenderer(serializer=_json_dumps(text=not binary)),
        ]
    else:
        renderer = [
            structlog.dev.ConsoleRenderer(
                colors=terminal, exception_formatter=_console_exceptions(terminal)
            )
        ]
    chain: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        _add_timestamp,
        structlog.processors.StackInfoRenderer(),
        *processors,
        *renderer,
    ]
    structlog.configure(
        processors=chain,
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=factory,
        context_class=dict,
        cache_logger_on_first_use=cache_loggers,
    )


def _installed(root: logging.Logger) -> list[logging.Handler]:
    return [h for h in root.handlers if hasattr(h, _OWNED)]


def _is_terminal(stream: TextIO) -> bool:
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty()) if callable(isatty) else False
    except ValueError:  # a closed stream
        return False
