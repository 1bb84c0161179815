"""The log lines of handler attempts, and where they go when nothing is configured.

Each attempt gives one event: ``message_handled`` (INFO), ``message_attempt_failed``
(WARNING, it will be retried), ``message_failed`` (ERROR, given up) or
``message_rejected`` (INFO, an expected outcome), with the
message's name, ids, handler, attempt, outcome, duration and redacted payload.

Which logger: the one given to the bus; else structlog's, when the application
configured structlog; else the standard library's ``logging.getLogger("messagebus")``
through :class:`_PlainLines`, so that an application that configures nothing
gets no line for a success and one concise line, with a traceback that leaves
out the library's own frames, for a failure (Python's last-resort handler
writes WARNING and above to stderr).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import sys
import traceback
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import attrs
import structlog

from ._context import MESSAGE, Envelope, log_ids, metadata_of
from .observe import Attempt, DeadLetter, Listener, Outcome
from .serialization import Serializer

if TYPE_CHECKING:
    from ._core import HandlerPlan

#: The log events of a handler attempt, one per attempt.
EVENT_SUCCEEDED = "message_handled"
EVENT_RETRYING = "message_attempt_failed"
EVENT_FAILED = "message_failed"
EVENT_REJECTED = "message_rejected"

_PACKAGE = os.path.dirname(os.path.abspath(__file__)) + os.sep


def default_logger() -> Any:
    """structlog's logger when the application configured structlog; plain lines otherwise."""
    if structlog.is_configured():
        return structlog.get_logger("messagebus").bind()
    return _PlainLines(logging.getLogger("messagebus"), {})


def info_gate(logger: Any) -> bool | Callable[[], bool]:
    """Whether successes are logged: fixed (a bool), or asked (a callable) once per ``handle()``.

    structlog's filtering loggers fix their level when configured; a standard
    library logger's level can change at run time, so it is asked each time.
    The bus's own default (nothing configured) is asked once, when the bus is
    built: the quiet library runs at full speed, and an application that sets
    ``logging`` up at INFO before building the bus sees its successes.
    """
    if isinstance(logger, _PlainLines):
        return logger.logger.isEnabledFor(logging.INFO)
    if isinstance(logger, structlog.stdlib.BoundLogger):
        # Its level is its standard-library logger's: ask that one, a call fewer.
        return functools.partial(logging.getLogger(logger.name).isEnabledFor, logging.INFO)
    stdlib_check = getattr(logger, "isEnabledFor", None)
    if callable(stdlib_check):
        return functools.partial(stdlib_check, logging.INFO)
    structlog_check = getattr(logger, "is_enabled_for", None)
    if callable(structlog_check):
        return bool(structlog_check(logging.INFO))
    return True


class AttemptLog:
    """Writes the log event of each handler attempt, and tells the listeners."""

    __slots__ = ("_clock", "_listeners", "_logger", "_serializer", "gate")

    def __init__(
        self,
        logger: Any,
        serializer: Serializer,
        listeners: tuple[Listener, ...],
        perf_counter: Callable[[], float],
    ) -> None:
        self._logger = default_logger() if logger is None else logger
        self._serializer = serializer
        self._listeners = listeners
        self._clock = perf_counter
        #: Whether successes are logged: fixed, or asked once per handle().
        self.gate = info_gate(self._logger)

    def bind(self, plan: HandlerPlan) -> Any:
        """A logger with the fields of all of a handler's attempts bound."""
        fields = {
            "message_name": plan.message_name,
            "message_kind": plan.kind,
            "message_version": plan.message_version,
            "handler": plan.name,
        }
        logger = self._logger
        bind = getattr(logger, "bind", None)
        return bind(**fields) if callable(bind) else _WithFields(logger, fields)

    def _fields(
        self, envelope: Envelope, attempt: int, started: float | None, outcome: str
    ) -> dict[str, Any]:
        """The fields of one attempt's event, beyond those bound to the handler's logger."""
        message_id, correlation_id, causation_id, created_at = log_ids(envelope)
        try:
            payload: Any = self._serializer.dump_payload(envelope[MESSAGE], redact=True)
        except Exception:  # a log line must never break handling
            payload = repr(envelope[MESSAGE])
        return {
            "outcome": outcome,
            "message_id": message_id,
            "correlation_id": correlation_id,
            "causation_id": causation_id,
            "created_at": created_at,
            "attempt": attempt,
            # To the microsecond: int() and a division cost a fraction of round().
            "duration_ms": (
                None if started is None else int((self._clock() - started) * 1e6) / 1000.0
            ),
            "payload": payload,
        }

    def tell(
        self,
        plan: HandlerPlan,
        envelope: Envelope,
        attempt: int,
        started: float | None,
        outcome: Outcome,
        error: BaseException | None = None,
    ) -> None:
        """Tell the listeners of an attempt that finished."""
        record = Attempt(
            message=envelope[MESSAGE],
            metadata=metadata_of(envelope),
            handler=plan.name,
            attempt=attempt,
            outcome=outcome,
            error=error,
            duration_s=None if started is None else self._clock() - started,
        )
        for listener in self._listeners:
            try:
                listener.attempt_finished(record)
            except Exception as exc:  # told after the fact: it changes no outcome
                _unwritable(f"attempt_finished of {listener!r}", exc)

    def succeeded(
        self, plan: HandlerPlan, envelope: Envelope, attempt: int, started: float
    ) -> None:
        try:
            plan.logger.info(
                EVENT_SUCCEEDED, **self._fields(envelope, attempt, started, "succeeded")
            )
        except Exception as exc:  # the attempt succeeded (and committed) all the same
            _unwritable(EVENT_SUCCEEDED, exc)

    def retrying(
        self,
        plan: HandlerPlan,
        envelope: Envelope,
        attempt: int,
        started: float | None,
        error: BaseException,
        wait: float,
    ) -> None:
        try:
            plan.logger.warning(
                EVENT_RETRYING,
                **self._fields(envelope, attempt, started, "retrying"),
                error=f"{type(error).__qualname__}: {error}",
                retry_in_s=round(wait, 3),
            )
        except Exception as exc:
            _unwritable(EVENT_RETRYING, exc)
        if self._listeners:
            self.tell(plan, envelope, attempt, started, "retrying", error)

    def failed(
        self,
        plan: HandlerPlan,
        envelope: Envelope,
        attempt: int,
        started: float | None,
        error: BaseException,
    ) -> None:
        try:
            plan.logger.error(
                EVENT_FAILED,
                **self._fields(envelope, attempt, started, "failed"),
                error=f"{type(error).__qualname__}: {error}",
                exc_info=error,
            )
        except Exception as exc:
            _unwritable(EVENT_FAILED, exc)
        if self._listeners:
            self.tell(plan, envelope, attempt, started, "failed", error)

    def rejected(
        self,
        plan: HandlerPlan,
        envelope: Envelope,
        attempt: int,
        started: float | None,
        error: BaseException,
    ) -> None:
        """An expected outcome (see :class:`~messagebus.Expected`): INFO, no traceback."""
        try:
            plan.logger.info(
                EVENT_REJECTED,
                **self._fields(envelope, attempt, started, "rejected"),
                error=f"{type(error).__qualname__}: {error}",
            )
        except Exception as exc:
            _unwritable(EVENT_REJECTED, exc)
        if self._listeners:
            self.tell(plan, envelope, attempt, started, "failed", error)

    def unused_dependencies(self, error: Exception) -> None:
        """Say once, when the bus is built, that some dependencies go to no handler."""
        try:
            self._logger.warning("unused_dependencies", error=str(error))
        except Exception as exc:
            _unwritable("unused_dependencies", exc)

    def store_failed(self, letter: DeadLetter) -> None:
        """The dead-letter store refused a letter: log all of it, so nothing is lost.

        Its sensitive fields are redacted here as in every log line; a store with
        a spool keeps the letter whole.
        """
        with contextlib.suppress(Exception):  # an unknown name: the payload as it is
            letter = attrs.evolve(
                letter,
                payload=self._serializer.redact_payload(letter.message_name, letter.payload),
            )
        try:
            self._logger.exception(
                "dead_letter_store_failed",
                message_name=letter.message_name,
                handler=letter.handler,
                payload=letter.payload,
                metadata=letter.metadata,
                error=letter.error,
            )
        except Exception as exc:  # nor logged: the letter goes to stderr, whole
            _unwritable("dead_letter_store_failed", exc)
            with contextlib.suppress(Exception):
                sys.stderr.write(f"messagebus: the dead letter: {letter!r}\n")


def _unwritable(event: str, error: Exception) -> None:
    """A log line could not be written (a processor raised, the file is closed).

    Handling goes on as if it had been: the attempt's outcome does not depend
    on its log line. As the standard library's ``Handler.handleError`` does,
    say so on stderr, the last place left.
    """
    with contextlib.suppress(Exception):  # no stderr either: nothing left to tell
        sys.stderr.write(
            f"messagebus: could not write the log line {event!r}: "
            f"{type(error).__qualname__}: {error}\n"
        )


class _WithFields:
    """A logger without ``bind()``, given fixed fields on every call."""

    __slots__ = ("_fields", "_logger")

    def __init__(self, logger: Any, fields: dict[str, Any]) -> None:
        self._logger = logger
        self._fields = fields

    def info(self, event: str, **fields: Any) -> None:
        self._logger.info(event, **self._fields, **fields)

    def warning(self, event: str, **fields: Any) -> None:
        self._logger.warning(event, **self._fields, **fields)

    def error(self, event: str, **fields: Any) -> None:
        self._logger.error(event, **self._fields, **fields)


class _PlainLines:
    """The bus's events as one readable line each, through a standard-library logger.

    What an application that configured no logging gets: its level decides
    (WARNING by default, so successes are not written), and its handlers, or
    Python's last-resort handler on stderr, write the lines.
    """

    __slots__ = ("_bound", "_logger")

    def __init__(self, logger: logging.Logger, bound: dict[str, Any]) -> None:
        self._logger = logger
        self._bound = bound

    @property
    def logger(self) -> logging.Logger:
        """The standard library's logger the lines go to."""
        return self._logger

    def bind(self, **fields: Any) -> _PlainLines:
        return _PlainLines(self._logger, {**self._bound, **fields})

    def isEnabledFor(self, level: int) -> bool:
        return self._logger.isEnabledFor(level)

    def info(self, event: str, **fields: Any) -> None:
        if self._logger.isEnabledFor(logging.INFO):
            self._logger.info("%s", self._line(event, fields))

    def warning(self, event: str, **fields: Any) -> None:
        if self._logger.isEnabledFor(logging.WARNING):
            self._logger.warning("%s", self._line(event, fields))

    def error(self, event: str, *, exc_info: BaseException | None = None, **fields: Any) -> None:
        if self._logger.isEnabledFor(logging.ERROR):
            text = self._line(event, fields)
            if exc_info is not None:
                text += "\n" + format_user_traceback(exc_info)
            self._logger.error("%s", text)

    def exception(self, event: str, **fields: Any) -> None:
        error = sys.exc_info()[1]
        self.error(event, exc_info=error, **fields)

    def _line(self, event: str, fields: dict[str, Any]) -> str:
        every = {**self._bound, **fields}
        handler = every.pop("handler", None)
        head = f"messagebus: {event}" if handler is None else f"messagebus: {event}: {handler}"
        name = every.pop("message_name", None)
        if name is not None:
            head += f" on {name}"
        error = every.pop("error", None)
        keep = ("message_id", "attempt", "retry_in_s", "duration_ms")
        details = ", ".join(f"{key}={every[key]}" for key in keep if every.get(key) is not None)
        line = f"{head} ({details})" if details else head
        return f"{line}: {error}" if error else line


def format_user_traceback(error: BaseException) -> str:
    """The traceback of ``error`` without this library's own frames (nor tenacity's)."""
    summary = traceback.TracebackException.from_exception(error)
    _drop_library_frames(summary, set())
    return "".join(summary.format()).rstrip("\n")


def _drop_library_frames(summary: traceback.TracebackException, seen: set[int]) -> None:
    if id(summary) in seen:
        return
    seen.add(id(summary))
    kept = [frame for frame in summary.stack if not _is_library(frame.filename)]
    summary.stack = traceback.StackSummary.from_list(kept)
    for chained in (summary.__cause__, summary.__context__):
        if chained is not None:
            _drop_library_frames(chained, seen)


def _is_library(filename: str) -> bool:
    return filename.startswith(_PACKAGE) or f"{os.sep}tenacity{os.sep}" in filename
