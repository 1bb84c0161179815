"""Replaying logged messages into a bus: from a shell session, or ``messagebus replay``.

The bus logs one JSON object per handler attempt (see :mod:`messagebus.logging`):
the message's name, ids, creation time and payload. :func:`replay` reads such
a log and hands each message to a bus again::

    from messagebus.replay import replay

    report = replay("app.log", bus, types=["Allocate"], dry_run=True)
    print(report.replayed, report.problems)

What is replayed:

- **Each message once.** A log has a line per handler *attempt*, so a message
  with three handlers, or retried twice, has several lines. The first line of
  each message id is the one replayed; the others are skipped as ``repeat``.
- **Root messages only, by default**: those given to ``bus.handle()`` (no
  causation id). The events that followed from them are raised again by their
  handlers when they are replayed. ``include_events=True`` replays logged
  raised events too (with every handler of the event).
- **Filters**: ``types`` (message names), ``since`` / ``until`` (on the
  message's ``created_at``: ``since <= created_at < until``), ``failed_only``
  (messages for which some line has the outcome ``failed``).

Each replayed message keeps its original metadata: message id, correlation
id, causation id and creation time, so the events it raises are caused by the
original message id. While it is handled, the structlog context carries
``replay_line`` (the line it came from) and ``replay_log`` (the file), so every
log line of the replay points at the record it came from; the report lists
the line of every message replayed.

Logs are untrusted input. Nothing named by a log line is imported or
evaluated: a message is constructed only by the bus's
:class:`~messagebus.Serializer`, and only if its name is registered there. A
malformed line, an unknown name or a payload that does not fit is reported
with its line number and the rest goes on (``strict=True`` stops at the first).
A payload whose sensitive fields were redacted in the log cannot be replayed,
and is reported as such rather than replayed with ``"[redacted]"`` in them.

**Resuming.** With ``checkpoint=path``, the replay notes in that file the line
of each message once its handling has returned (or raised). A replay killed
midway and run again with ``resume=True`` reads the log as before, and skips
(``replayed_before``) every line up to the last one noted: what was handled is
not handled again, except the one message, at most, whose handling was under
way at the kill. ``messagebus replay`` keeps such a checkpoint by default (see
its ``--checkpoint`` and ``--resume``). The checkpoint is by line, not by
message id: an application that must never handle a message twice records
message ids in its own inbox as well.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as _dt
import json
import os
import re
import uuid
from collections.abc import Awaitable, Callable, Iterable, Iterator
from types import TracebackType
from typing import Any, Literal

import attrs
import structlog

from ._async_bus import AsyncMessageBus
from ._bus import MessageBus
from .exceptions import InvalidMessageDataError, UnknownMessageError, shorten
from .messages import Message, Metadata, message_name
from .serialization import REDACTED, Serializer, _has_sensitive

__all__ = [
    "CheckpointError",
    "LineProblem",
    "ProblemKind",
    "ReplayReport",
    "ReplayedMessage",
    "SkipReason",
    "checkpoint_of",
    "replay",
    "replay_async",
]

#: Why a line could not be replayed.
#:
#: - ``malformed``: not a JSON object.
#: - ``invalid_record``: an attempt record whose ids or time are not valid.
#: - ``unknown_message``: its message name is not registered with the bus.
#: - ``invalid_payload``: its payload does not fit its message type (or version).
#: - ``redacted``: its payload holds sensitive fields that the log redacted.
#: - ``handling_failed``: the message was dispatched, and ``bus.handle()`` raised.
ProblemKind = Literal[
    "malformed",
    "invalid_record",
    "unknown_message",
    "invalid_payload",
    "redacted",
    "handling_failed",
]

#: Why a line was read and not replayed.
#:
#: - ``blank``: an empty line.
#: - ``not_a_record``: a JSON object that is not an attempt record (another
#:   log event, without ``message_name`` and ``message_id``).
#: - ``repeat``: another line of a message already seen (another handler or attempt).
#: - ``raised_event``: a message raised by a handler (it has a causation id),
#:   without ``include_events``.
#: - ``type``, ``time``, ``not_failed``: left out by a filter.
#: - ``replayed_before``: up to the line where a resumed replay's checkpoint ends.
SkipReason = Literal[
    "blank",
    "not_a_record",
    "repeat",
    "raised_event",
    "type",
    "time",
    "not_failed",
    "replayed_before",
]

Line = str | bytes
Source = str | os.PathLike[str] | Iterable[Line]
Progress = Callable[[int, int], object]

_MARKER = REDACTED
_MARKER_BYTES = REDACTED.encode()
#: How many lines between two calls of the ``progress`` callback.
_PROGRESS_EVERY = 1024
_EXCERPT = 160
_decode = json.JSONDecoder().decode
#: Control characters but the tab: what a quoted line must not send to a terminal.
_CONTROL = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f]")


@attrs.frozen
class LineProblem:
    """A line that could not be replayed, or a replayed message whose handling failed.

    Attributes:
        line: Its line number, from 1.
        kind: What went wrong (see :data:`ProblemKind`).
        detail: What went wrong, for a person.
        message_name: The message name the line gives, when it gives one.
        message_id: The message id the line gives, as written there.
    """

    line: int
    kind: ProblemKind
    detail: str
    message_name: str | None = None
    message_id: str | None = None

    def __str__(self) -> str:
        return f"line {self.line}: {self.detail}"


@attrs.frozen
class ReplayedMessage:
    """A message replayed (or, in a dry run, to be replayed), and the line it came from.

    Attributes:
        line: The line number of the log record it was built from.
        message: The message, built by the bus's serializer.
        metadata: Its metadata, as logged: the original ids and creation time.
    """

    line: int
    message: Message
    metadata: Metadata


@attrs.define
class ReplayReport:
    """What a replay did. Every line read is counted once:
    ``read == replayed + skipped + failed``.

    Attributes:
        dry_run: Messages were built and checked, not dispatched.
        read: Lines read.
        replayed: Messages handed to the bus, whose ``handle()`` returned (in a
            dry run: messages that would be).
        skipped: Lines left out on purpose; why, in ``skipped_by_reason``.
        bad_lines: Lines that could not be replayed (malformed, unknown, not fitting).
        handling_failed: Messages whose ``handle()`` raised (a command's handler
            failed, after its retries). An event handler's failure is isolated
            by the bus (logged, and stored as a dead letter where a store is
            configured), so it is not counted here.
        stopped_at: With ``strict``, the line of the first problem, where the
            replay stopped; otherwise None.
        problems: Every bad line and failed handling, by line number.
        messages: Every message replayed, with its line number, in order
            (empty with ``keep_messages=False``).
        skipped_by_reason: Lines skipped, by :data:`SkipReason`.
    """

    dry_run: bool = False
    read: int = 0
    replayed: int = 0
    skipped: int = 0
    bad_lines: int = 0
    handling_failed: int = 0
    stopped_at: int | None = None
    problems: list[LineProblem] = attrs.Factory(list)
    messages: list[ReplayedMessage] = attrs.Factory(list)
    skipped_by_reason: dict[str, int] = attrs.Factory(dict)

    @property
    def failed(self) -> int:
        """Lines that could not be replayed plus messages whose handling failed."""
        return self.bad_lines + self.handling_failed

    @property
    def ok(self) -> bool:
        """No problem at all."""
        return not self.problems


class CheckpointError(ValueError):
    """A checkpoint cannot be used: there is none to resume, or it is of another log."""


class _Checkpoint:
    """The file that notes the lines of a log whose messages were handled.

    Its first line names the log and the size read; then one line number per
    message handled, appended and flushed as each handling ends.
    """

    def __init__(self, path: str | os.PathLike[str], log: str, size: int, resume: bool) -> None:
        self.path = os.fspath(path)
        self.upto = 0
        self.size = size
        log = os.path.abspath(log)
        if resume:
            self.size, self.upto = _read_checkpoint(self.path, log)
            if os.stat(log).st_size < self.size:
                raise CheckpointError(
                    f"{log} is shorter than when the replay of checkpoint {self.path} began"
                )
            with open(self.path, "r+b") as raw:  # a line cut by the kill is not noted: drop it
                raw.truncate(raw.read().rfind(b"\n") + 1)
            self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - closed on exit
        else:
            self._file = open(self.path, "w", encoding="utf-8")  # noqa: SIM115
            self._file.write(json.dumps({"log": log, "size": size}) + "\n")
            self._file.flush()

    def handled(self, line: int) -> None:
        self._file.write(f"{line}\n")
        self._file.flush()

    def __enter__(self) -> _Checkpoint:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._file.close()


def _read_checkpoint(path: str, log: str) -> tuple[int, int]:
    """The size read and the last line handled, from a checkpoint of ``log``."""
    try:
        with open(path, encoding="utf-8") as file:
            header = file.readline()
            last = 0
            for line in file:
                if line.endswith("\n") and line.strip().isdigit():  # a cut last line: not noted
                    last = int(line)
    except FileNotFoundError:
        raise CheckpointError(f"no checkpoint {path} to resume from") from None
    try:
        data = json.loads(header)
        size, of = int(data["size"]), data["log"]
    except (ValueError, KeyError, TypeError):
        raise CheckpointError(f"{path} is not a checkpoint of messagebus replay") from None
    if of != log:
        raise CheckpointError(f"{path} is the checkpoint of another log: {of}")
    return size, last


def checkpoint_of(path: str | os.PathLike[str]) -> int | None:
    """The last line that the checkpoint at ``path`` notes as handled; None without one."""
    try:
        with open(path, encoding="utf-8") as file:
            file.readline()
            last = 0
            for line in file:
                if line.endswith("\n") and line.strip().isdigit():
                    last = int(line)
    except FileNotFoundError:
        return None
    return last


def _open_checkpoint(
    run: _Run, checkpoint: str | os.PathLike[str] | None, resume: bool, dry_run: bool
) -> _Checkpoint | contextlib.nullcontext[None]:
    if checkpoint is None:
        if resume:
            raise CheckpointError("resume=True needs the checkpoint to resume from")
        return contextlib.nullcontext()
    if run.path is None:
        raise CheckpointError("a checkpoint is kept for a log file, not for lines given")
    if dry_run:
        raise CheckpointError("a dry run handles nothing: it keeps no checkpoint")
    kept = _Checkpoint(checkpoint, run.path, run.size, resume)
    run.size = kept.size  # a resumed replay reads what the first one read
    run.resumed_upto = kept.upto
    return kept


def replay(
    source: Source,
    bus: MessageBus | AsyncMessageBus,
    *,
    types: Iterable[str | type[Message]] | None = None,
    since: _dt.datetime | None = None,
    until: _dt.datetime | None = None,
    failed_only: bool = False,
    include_events: bool = False,
    dry_run: bool = False,
    strict: bool = False,
    progress: Progress | None = None,
    keep_messages: bool = True,
    checkpoint: str | os.PathLike[str] | None = None,
    resume: bool = False,
) -> ReplayReport:
    """Read a log of the bus's attempt records and handle each message again.

    Args:
        source: A log file's path, or the lines of a log (str or bytes).
        bus: The bus to replay into. An :class:`~messagebus.AsyncMessageBus` is
            run with ``asyncio.run()``; inside a running event loop, await
            :func:`replay_async` instead.
        types: Replay only these messages (names as logged, or message types).
        since: Replay only messages created at or after this time (aware).
        until: Replay only messages created before this time (aware).
        failed_only: Replay only messages whose handling ended in the outcome
            ``failed`` (reads the log twice).
        include_events: Replay raised events too, not only root messages.
        dry_run: Build and check every message; dispatch none.
        strict: Stop at the first problem.
        progress: Called now and then with ``(bytes read, bytes in all)``; the
            total is 0 when unknown (lines given rather than a file).
        keep_messages: List every message replayed in the report's
            ``messages``; False keeps only the counts and problems (for logs
            too large to hold their messages in memory).
        checkpoint: A file in which to note each message handled (a log file
            only; not in a dry run), so that a replay killed midway can be resumed.
        resume: Go on from ``checkpoint``, written by an earlier replay of the
            same log: the lines it notes as handled are skipped.

    Returns:
        What was read, replayed, skipped and failed; every problem by line number.

    Raises:
        ValueError: A name in ``types`` is not registered with the bus, or
            ``since`` / ``until`` is a naive datetime.
        CheckpointError: ``resume`` without a checkpoint of this log.
        OSError: The log file (or the checkpoint) cannot be read or written.
    """
    if isinstance(bus, AsyncMessageBus):
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass
        else:
            raise RuntimeError(
                "replay() runs an AsyncMessageBus with asyncio.run(), and an event loop "
                "is running here: `await replay_async(...)` instead"
            )
        return asyncio.run(
            replay_async(
                source,
                bus,
                types=types,
                since=since,
                until=until,
                failed_only=failed_only,
                include_events=include_events,
                dry_run=dry_run,
                strict=strict,
                progress=progress,
                keep_messages=keep_messages,
                checkpoint=checkpoint,
                resume=resume,
            )
        )
    run = _Run(
        source,
        bus.serializer,
        types=types,
        since=since,
        until=until,
        failed_only=failed_only,
        include_events=include_events,
        dry_run=dry_run,
        strict=strict,
        progress=progress,
    )
    report = run.report
    handle: Callable[..., Any] = bus.handle
    with run.bound(), _open_checkpoint(run, checkpoint, resume, dry_run) as kept:
        for number, message, metadata in run.selected():
            if not dry_run:
                structlog.contextvars.bind_contextvars(replay_line=number)
                try:
                    handle(message, metadata=metadata)
                except Exception as exc:
                    if kept is not None:
                        kept.handled(number)
                    if run.failed(number, message, metadata, exc):
                        break
                    continue
                if kept is not None:
                    kept.handled(number)
            report.replayed += 1
            if keep_messages:
                report.messages.append(ReplayedMessage(number, message, metadata))
    return report


async def replay_async(
    source: Source,
    bus: AsyncMessageBus,
    *,
    types: Iterable[str | type[Message]] | None = None,
    since: _dt.datetime | None = None,
    until: _dt.datetime | None = None,
    failed_only: bool = False,
    include_events: bool = False,
    dry_run: bool = False,
    strict: bool = False,
    progress: Progress | None = None,
    keep_messages: bool = True,
    checkpoint: str | os.PathLike[str] | None = None,
    resume: bool = False,
) -> ReplayReport:
    """As :func:`replay`, into an :class:`~messagebus.AsyncMessageBus`, awaited.

    The log is read with blocking file reads, between dispatches.
    """
    if not isinstance(bus, AsyncMessageBus):
        raise TypeError(f"replay_async() replays into an AsyncMessageBus, not {bus!r}")
    run = _Run(
        source,
        bus.serializer,
        types=types,
        since=since,
        until=until,
        failed_only=failed_only,
        include_events=include_events,
        dry_run=dry_run,
        strict=strict,
        progress=progress,
    )
    report = run.report
    handle: Callable[..., Awaitable[Any]] = bus.handle
    with run.bound(), _open_checkpoint(run, checkpoint, resume, dry_run) as kept:
        for number, message, metadata in run.selected():
            if not dry_run:
                structlog.contextvars.bind_contextvars(replay_line=number)
                try:
                    await handle(message, metadata=metadata)
                except Exception as exc:
                    if kept is not None:
                        kept.handled(number)
                    if run.failed(number, message, metadata, exc):
                        break
                    continue
                if kept is not None:
                    kept.handled(number)
            report.replayed += 1
            if keep_messages:
                report.messages.append(ReplayedMessage(number, message, metadata))
    return report


# -- reading and choosing ------------------------------------------------------------


class _BadLine(Exception):
    def __init__(self, kind: ProblemKind, detail: str) -> None:
        super().__init__(detail)
        self.kind: ProblemKind = kind
        self.detail = detail


class _Run:
    """One replay: the options, the report, and the choice of lines (bus-independent)."""

    def __init__(
        self,
        source: Source,
        serializer: Serializer,
        *,
        types: Iterable[str | type[Message]] | None,
        since: _dt.datetime | None,
        until: _dt.datetime | None,
        failed_only: bool,
        include_events: bool,
        dry_run: bool,
        strict: bool,
        progress: Progress | None,
    ) -> None:
        if isinstance(source, (bytes, bytearray)):
            raise TypeError("replay() takes a path or an iterable of lines, not bytes")
        self.serializer = serializer
        self.names = _names(types, serializer)
        self.since = _aware("since", since)
        self.until = _aware("until", until)
        self.failed_only = failed_only
        self.include_events = include_events
        self.strict = strict
        self.progress = progress
        self.report = ReplayReport(dry_run=dry_run)
        self.seen: set[str] = set()
        #: A resumed replay skips the lines up to this one.
        self.resumed_upto = 0
        self.path: str | None = None
        self.size = 0
        self.lines: Iterable[Line] | None = None
        if isinstance(source, (str, os.PathLike)):
            self.path = os.fspath(source)
            # Read up to the size the file has now: a bus that logs the replay
            # into the same file must not feed it its own lines.
            self.size = os.stat(self.path).st_size
        elif failed_only and not isinstance(source, (list, tuple)):
            self.lines = list(source)  # read twice
        else:
            self.lines = source

    def bound(self) -> Any:
        """The structlog context of the replay: every log line of it names its source."""
        if self.path is None:
            return structlog.contextvars.bound_contextvars(replay_line=None)
        return structlog.contextvars.bound_contextvars(replay_log=self.path, replay_line=None)

    def _read(self, offset: int, total: int) -> Iterator[Line]:
        lines: Iterable[Line]
        if self.path is None:
            assert self.lines is not None
            lines = self.lines
            if self.progress is None:
                yield from lines
                return
            yield from _counted(lines, self.progress, offset, total)
            return
        with open(self.path, "rb") as file:
            lines = _upto(file, self.size)
            if self.progress is not None:
                lines = _counted(lines, self.progress, offset, total)
            yield from lines

    def selected(self) -> Iterator[tuple[int, Message, Metadata]]:
        """The messages to replay, with their line numbers; problems and skips are reported."""
        passes = 2 if self.failed_only else 1
        total = self.size * passes
        failed: set[str] | None = None
        if self.failed_only:
            failed = _failed_ids(self._read(0, total))
        report = self.report
        skip = report.skipped_by_reason
        offset = self.size if self.failed_only else 0
        for number, line in enumerate(self._read(offset, total), start=1):
            report.read += 1
            try:
                chosen = self._choose(line, failed)
                if number <= self.resumed_upto and not isinstance(chosen, str):
                    chosen = "replayed_before"
            except _BadLine as bad:
                if number <= self.resumed_upto:  # reported by the replay that got there
                    report.skipped += 1
                    skip["replayed_before"] = skip.get("replayed_before", 0) + 1
                    continue
                report.bad_lines += 1
                name, message_id = _names_in(line)
                report.problems.append(LineProblem(number, bad.kind, bad.detail, name, message_id))
                if self.strict:
                    report.stopped_at = number
                    return
                continue
            if isinstance(chosen, str):
                report.skipped += 1
                skip[chosen] = skip.get(chosen, 0) + 1
                continue
            yield number, chosen[0], chosen[1]

    def _choose(self, line: Line, failed: set[str] | None) -> str | tuple[Message, Metadata]:
        """The message of this line, or why it is skipped; raises _BadLine."""
        try:
            # Bytes are decoded here rather than by json.loads: a line that is not
            # UTF-8 is a bad line, and the rest of the file is read as usual.
            record = _decode(line.decode() if isinstance(line, bytes) else line)
        except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
            if not line.strip():
                return "blank"
            raise _BadLine("malformed", f"not JSON ({exc}): {_excerpt(line)}") from None
        if type(record) is not dict:
            raise _BadLine("malformed", f"not a JSON object: {_excerpt(line)}")
        raw_id = record.get("message_id")
        name = record.get("message_name")
        if raw_id is None or name is None:
            return "not_a_record"
        if type(raw_id) is not str or type(name) is not str:
            raise _BadLine("invalid_record", "message_id and message_name must be strings")
        seen = self.seen
        if raw_id in seen:
            return "repeat"
        seen.add(raw_id)
        # The cheap choices first: most lines of a log are not replayed.
        raw_causation = record.get("causation_id")
        if raw_causation is not None and not self.include_events:
            return "raised_event"
        if self.names is not None and name not in self.names:
            return "type"
        if failed is not None and raw_id not in failed:
            return "not_failed"
        metadata = _metadata(record, raw_id, raw_causation)
        if (self.since is not None and metadata.created_at < self.since) or (
            self.until is not None and metadata.created_at >= self.until
        ):
            return "time"
        return self._message(name, record, line), metadata

    def _message(self, name: str, record: dict[str, Any], line: Line) -> Message:
        version = record.get("message_version")
        if version is not None and type(version) is not int:
            raise _BadLine("invalid_record", f"message_version {shorten(version)} is not an int")
        payload = record.get("payload")
        serializer = self.serializer
        # Only a line that holds the marker at all can be a redacted one: the cheap test first.
        marked = _MARKER_BYTES in line if isinstance(line, bytes) else _MARKER in line
        message_type: Any = serializer.names.get(name)  # None when unknown: nothing sensitive
        suspect = marked and _has_sensitive(message_type)
        try:
            message = serializer.load_payload(name, payload, version=version)
        except UnknownMessageError:
            raise _BadLine(
                "unknown_message", f"message name {shorten(name)} is not registered with the bus"
            ) from None
        except InvalidMessageDataError as exc:
            if suspect and _holds_marker(payload):  # e.g. "[redacted]" for an int
                raise _BadLine("redacted", _redacted(name)) from None
            raise _BadLine("invalid_payload", str(exc)) from None
        # Redacted when the payload is exactly what the bus logs for this message: its
        # sensitive fields hold the marker, not their values.
        if suspect and serializer.dump_payload(message, redact=True) == payload:
            raise _BadLine("redacted", _redacted(name))
        return message

    def failed(self, number: int, message: Message, metadata: Metadata, error: Exception) -> bool:
        """Record a failed handling; True when the replay stops there."""
        report = self.report
        report.handling_failed += 1
        report.problems.append(
            LineProblem(
                number,
                "handling_failed",
                f"{message_name(message)} failed: {type(error).__qualname__}: {error}",
                message_name(message),
                str(metadata.message_id),
            )
        )
        if self.strict:
            report.stopped_at = number
            return True
        return False


def _redacted(name: str) -> str:
    return f"{name}: the log redacted its sensitive fields, so it cannot be replayed"


def _names(
    types: Iterable[str | type[Message]] | None, serializer: Serializer
) -> frozenset[str] | None:
    if types is None:
        return None
    if isinstance(types, (str, type)):
        types = [types]
    names = frozenset(t if isinstance(t, str) else message_name(t) for t in types)
    unknown = sorted(names - serializer.names.keys())
    if unknown:
        known = ", ".join(sorted(serializer.names)) or "none"
        raise ValueError(
            f"not a message name the bus knows: {', '.join(unknown)} (it knows: {known})"
        )
    return names


def _aware(name: str, value: _dt.datetime | None) -> _dt.datetime | None:
    if value is not None and (value.tzinfo is None or value.utcoffset() is None):
        raise ValueError(f"{name} must be a timezone-aware datetime, not {value!r}")
    return value


def _metadata(record: dict[str, Any], raw_id: str, raw_causation: object) -> Metadata:
    raw_correlation = record.get("correlation_id")
    raw_created = record.get("created_at")
    try:
        try:
            message_id = uuid.UUID(raw_id)
        except ValueError:
            raise ValueError(f"message_id {shorten(raw_id)} is not a UUID") from None
        if raw_correlation == raw_id:
            correlation_id = message_id
        elif type(raw_correlation) is str:
            correlation_id = uuid.UUID(raw_correlation)
        else:
            raise ValueError(f"correlation_id {shorten(raw_correlation)} is not a UUID")
        causation_id: uuid.UUID | None = None
        if raw_causation is not None:
            if type(raw_causation) is not str:
                raise ValueError(f"causation_id {shorten(raw_causation)} is not a UUID")
            causation_id = uuid.UUID(raw_causation)
        if type(raw_created) is not str:
            raise ValueError(f"created_at {shorten(raw_created)} is not an ISO datetime")
        if raw_created.endswith("Z"):  # other tools write UTC so; Python 3.10 cannot read it
            raw_created = raw_created[:-1] + "+00:00"
        created_at = _dt.datetime.fromisoformat(raw_created)
        if created_at.tzinfo is None:
            raise ValueError(f"created_at {shorten(raw_created)} has no UTC offset")
    except ValueError as exc:
        raise _BadLine("invalid_record", str(exc)) from None
    return Metadata(message_id, correlation_id, causation_id, created_at)


def _holds_marker(value: object) -> bool:
    if value == _MARKER:
        return True
    if isinstance(value, dict):
        return any(_holds_marker(item) for item in value.values())
    if isinstance(value, list):
        return any(_holds_marker(item) for item in value)
    return False


def _failed_ids(lines: Iterable[Line]) -> set[str]:
    """The ids of the messages that some line says ended in the outcome ``failed``."""
    failed: set[str] = set()
    for line in lines:
        if not (b"failed" in line if isinstance(line, bytes) else "failed" in line):
            continue
        try:
            record = json.loads(line)
        except (ValueError, RecursionError):
            continue
        if type(record) is dict and record.get("outcome") == "failed":
            message_id = record.get("message_id")
            if type(message_id) is str:
                failed.add(message_id)
    return failed


def _names_in(line: Line) -> tuple[str | None, str | None]:
    """The message name and id of a bad line, where it has them, for its report."""
    try:
        record = json.loads(line)
    except (ValueError, RecursionError):
        return None, None
    if type(record) is not dict:
        return None, None
    name, message_id = record.get("message_name"), record.get("message_id")
    return (
        name if type(name) is str else None,
        message_id if type(message_id) is str else None,
    )


def _excerpt(line: Line) -> str:
    """The start of a line, to quote in a problem; binary data is never echoed."""
    try:
        text = line.decode("utf-8") if isinstance(line, bytes) else line
    except UnicodeDecodeError:
        return f"<binary data: {len(line.strip()):,} bytes that are not UTF-8 text>"
    text = text.strip()
    if _CONTROL.search(text):  # terminal escapes, NUL bytes: printing them is unsafe
        return f"<binary data: {len(text):,} characters with control codes>"
    return text if len(text) <= _EXCERPT else text[: _EXCERPT - 3] + "..."


def _upto(file: Iterable[bytes], size: int) -> Iterator[bytes]:
    done = 0
    for line in file:
        if done >= size:
            return
        done += len(line)
        yield line


def _counted(lines: Iterable[Line], progress: Progress, offset: int, total: int) -> Iterator[Line]:
    done = offset
    for count, line in enumerate(lines, start=1):
        done += len(line)
        if count % _PROGRESS_EVERY == 0:
            progress(done, total)
        yield line
    progress(done, total)
