"""Messages: commands, events, their names and versions, and their metadata.

Users write messages as frozen attrs classes::

    @attrs.frozen
    class Allocate(Command[str]):   # the handler returns a str
        orderid: str
        sku: str
        qty: int

    @attrs.frozen
    class Allocated(Event, name="allocation.Allocated", version=2):
        orderid: str
        batchref: str
"""

from __future__ import annotations

import datetime as _dt
import enum
import itertools
import os
import random
import typing
import uuid
from collections.abc import Mapping
from typing import Any, ClassVar, Generic, TypeVar

import attrs

from ._sensitive import REDACTED, field_types, holds_sensitive, is_sensitive

__all__ = [
    "Command",
    "Event",
    "Message",
    "Metadata",
    "message_name",
    "message_version",
]

R_co = TypeVar("R_co", covariant=True)


class Message:
    """Base of every message. Subclass :class:`Command` or :class:`Event` instead.

    A subclass may give a stable name and a version as class keywords; the
    name defaults to the class's qualified name (``__qualname__``), the
    version to 1. Give a name when a class may be renamed or moved, so that
    stored and logged messages keep working.
    """

    __slots__ = ()

    __message_name__: ClassVar[str]
    __message_version__: ClassVar[int]

    def __init_subclass__(
        cls, *, name: str | None = None, version: int | None = None, **kwargs: Any
    ) -> None:
        super().__init_subclass__(**kwargs)
        if name is not None:
            if not isinstance(name, str) or not name.strip():
                raise TypeError(f"message name of {cls.__qualname__} must be a non-empty str")
            cls.__message_name__ = name
        elif "__message_name__" not in cls.__dict__:
            # attrs rebuilds slotted classes; the rebuilt class keeps the name it was given.
            cls.__message_name__ = cls.__qualname__
        if version is not None:
            if not isinstance(version, int) or isinstance(version, bool) or version < 1:
                raise TypeError(
                    f"message version of {cls.__qualname__} must be an int >= 1, not {version!r}"
                )
            cls.__message_version__ = version
        elif "__message_version__" not in cls.__dict__:
            cls.__message_version__ = 1

    @classmethod
    def __attrs_init_subclass__(cls) -> None:
        # Called by attrs once it has built the class. Its generated repr shows
        # an enum member as <Colour.RED: 'red'>; this one pastes back into a
        # shell, and never shows a sensitive field in clear (tracebacks print
        # reprs). A repr the user wrote is left alone.
        if _generated_by_attrs(cls.__dict__.get("__repr__")):
            cls.__repr__ = _message_repr  # type: ignore[assignment,method-assign]


def _shown_name(cls: type) -> str:
    # As attrs does: a class defined in a function is shown without "<locals>".
    return cls.__qualname__.rsplit(">.", 1)[-1]


def _python_repr(value: object) -> str:
    if isinstance(value, enum.Enum):
        return f"{_shown_name(type(value))}.{value.name}"
    if isinstance(value, (tuple, list)) and type(value) in (tuple, list):
        items = ", ".join(_python_repr(item) for item in value)
        if isinstance(value, tuple):
            return f"({items},)" if len(value) == 1 else f"({items})"
        return f"[{items}]"
    if type(value) is frozenset:
        return (
            f"frozenset({{{', '.join(_python_repr(item) for item in value)}}})"
            if value
            else "frozenset()"
        )
    if type(value) is dict:
        return (
            "{" + ", ".join(f"{_python_repr(k)}: {_python_repr(v)}" for k, v in value.items()) + "}"
        )
    if attrs.has(type(value)) and _generated_by_attrs(type(value).__dict__.get("__repr__")):
        # A nested attrs class: its generated repr would show its sensitive fields.
        return _attrs_repr(value)
    return repr(value)


def _attrs_repr(value: Any) -> str:
    fields = attrs.fields(type(value))
    shown = ", ".join(
        f"{field.name}="
        + (f"'{REDACTED}'" if is_sensitive(field) else _python_repr(getattr(value, field.name)))
        for field in fields
        if field.repr
    )
    return f"{_shown_name(type(value))}({shown})"


def _message_repr(self: Message) -> str:
    return _attrs_repr(self)


def hide_sensitive_reprs(cls: type) -> None:
    """Give ``cls``, and every attrs class it holds that has a sensitive field and the
    repr attrs generated, a repr that hides sensitive fields (as a message's does)."""
    seen: set[type] = set()
    pending = [cls]
    while pending:
        current = pending.pop()
        if current in seen or not attrs.has(current):
            continue
        seen.add(current)
        if (
            current is not cls
            and not issubclass(current, Message)
            and holds_sensitive(current)
            and _generated_by_attrs(current.__dict__.get("__repr__"))
        ):
            current.__repr__ = _attrs_repr  # type: ignore[method-assign]
        hints = field_types(current)
        for field in attrs.fields(current):
            pending.extend(_classes_in(hints.get(field.name)))


def _classes_in(tp: Any) -> list[type]:
    found: list[type] = [tp] if isinstance(tp, type) and attrs.has(tp) else []
    for arg in typing.get_args(tp):
        found.extend(_classes_in(arg))
    return found


def _generated_by_attrs(method: object) -> bool:
    code = getattr(method, "__code__", None)
    return code is not None and code.co_filename.startswith("<attrs generated")


class Command(Message, Generic[R_co]):
    """A request to change the system, handled by exactly one handler.

    Name commands in the imperative (``Allocate``). The type parameter is the
    handler's result type, which ``bus.handle()`` returns: ``Command[str]``.
    A command that returns nothing is a ``Command[None]``.
    """

    __slots__ = ()


class Event(Message):
    """A fact that happened, handled by zero or more handlers, each isolated.

    Name events in the past tense (``Allocated``).
    """

    __slots__ = ()


def message_name(message_type: type[Message] | Message) -> str:
    """The stable name of a message type (or of a message's type)."""
    return message_type.__message_name__


def message_version(message_type: type[Message] | Message) -> int:
    """The schema version of a message type (or of a message's type)."""
    return message_type.__message_version__


def _utc_from_ns(ns: int) -> _dt.datetime:
    """The UTC datetime of a ``time.time_ns()`` reading, to the microsecond (truncated)."""
    return _dt.datetime.fromtimestamp(ns // 1_000_000_000, _dt.timezone.utc).replace(
        microsecond=ns // 1000 % 1_000_000
    )


# The ISO text of the last second formatted: log lines made in the same second
# share it, and formatting a datetime is slow next to the rest of a log line.
_last_second: tuple[int, str] = (-1, "")


def _iso_from_ns(ns: int, utc_suffix: str = "+00:00") -> str:
    """``_utc_from_ns(ns).isoformat()`` (with another suffix for UTC if asked), quicker."""
    global _last_second
    second, nano = divmod(ns, 1_000_000_000)
    cached_second, text = _last_second
    if cached_second != second:
        text = _dt.datetime.fromtimestamp(second, _dt.timezone.utc).isoformat()[:19]
        _last_second = (second, text)
    micro = nano // 1000
    if micro:
        # Six digits, zeros first: str() of a seventh digit's worth, less that
        # digit, is quicker here than a format specification.
        return f"{text}.{str(micro + 1_000_000)[1:]}{utc_suffix}"
    return text + utc_suffix


def _check_aware(instance: object, attribute: attrs.Attribute[Any], value: _dt.datetime) -> None:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{attribute.name} must be a timezone-aware datetime, not {value!r}")


#: A trace context larger than this came from no propagator: refused, not kept.
_TRACE_CONTEXT_ENTRIES = 16
_TRACE_CONTEXT_TEXT = 8192


class _TraceContextError(ValueError):
    """A trace context that no propagator made; its text says what is wrong."""


def _check_trace_context(
    instance: object, attribute: attrs.Attribute[Any], value: Mapping[str, str] | None
) -> None:
    if value is None:
        return
    if not isinstance(value, Mapping):
        raise TypeError(f"trace_context must be a mapping of str to str, not {value!r}")
    if len(value) > _TRACE_CONTEXT_ENTRIES:
        raise _TraceContextError(
            f"trace_context has {len(value)} entries; at most {_TRACE_CONTEXT_ENTRIES} are kept"
        )
    for key, text in value.items():
        if type(key) is not str or type(text) is not str:
            raise TypeError(f"trace_context must map str to str, not {key!r}: {text!r}")
        if len(key) + len(text) > _TRACE_CONTEXT_TEXT:
            raise _TraceContextError(f"trace_context entry {key[:40]!r} is too long")


@attrs.frozen
class Metadata:
    """What the bus knows of one dispatch of a message, kept beside its payload.

    A handler that wants it asks for a parameter annotated ``Metadata``.

    Attributes:
        message_id: Unique for each message; the same for every handler of the
            message and for every retry attempt.
        correlation_id: Shared by a message and everything that follows from it.
        causation_id: The id of the message whose handling raised this one;
            ``None`` for a message given to ``bus.handle()``.
        created_at: When the message was dispatched (aware, UTC). When nothing
            could look at it yet (attempts not logged, a handler needing
            nothing per attempt or only its ``Context``), it is fixed when
            first needed, during the handling; always before the creation
            time of the events that follow from the message.
        trace_context: The trace the message belongs to, as W3C Trace Context
            headers (``traceparent``, and ``tracestate`` when there is one);
            ``None`` when it was made outside any trace or without
            :mod:`messagebus.otel`. It travels with the message out of the
            process, and the handling of the message continues that trace.
            It is not inherited: each message gets the context of the span
            that raised or sent it.
    """

    message_id: uuid.UUID
    correlation_id: uuid.UUID
    causation_id: uuid.UUID | None
    created_at: _dt.datetime = attrs.field(validator=_check_aware)
    # Left out of the hash (a mapping has none); compared as the other fields are.
    trace_context: Mapping[str, str] | None = attrs.field(
        default=None, kw_only=True, hash=False, validator=_check_trace_context
    )

    @classmethod
    def new(
        cls,
        *,
        correlation_id: uuid.UUID | None = None,
        causation_id: uuid.UUID | None = None,
    ) -> Metadata:
        """Metadata for a new message, e.g. to carry a web request's correlation id."""
        message_id = new_message_id()
        return cls(
            message_id,
            correlation_id if correlation_id is not None else message_id,
            causation_id,
            _dt.datetime.now(_dt.timezone.utc),
        )

    def caused(self, message_id: uuid.UUID, created_at: _dt.datetime) -> Metadata:
        """The metadata of a message raised while handling the message this describes."""
        return Metadata(message_id, self.correlation_id, self.message_id, created_at)


# Message ids are version-4 UUIDs made from a random base and a counter: unique
# within a process by construction, across processes by the 66 random bits of the
# base (drawn again in a forked child), and about twice as cheap as uuid4().
_LOW_BITS = (1 << 62) - 1
_V4_BITS = (0x4 << 76) | (0x2 << 62)
_V4_MASK = ~((0xF << 76) | (0x3 << 62)) & ((1 << 128) - 1)
_base = 0
#: Never replaced (only the base is drawn again after a fork), so that the
#: dispatch loop can keep a reference to its ``__next__``.
_sequence = itertools.count(1)


def _reseed() -> None:
    global _base, _id_text_prefix
    _base = (random.SystemRandom().getrandbits(128) & _V4_MASK) | _V4_BITS
    # Only the low 62 bits of an id vary: its first 16 hex digits are the base's.
    high = "%016x" % (_base >> 64)
    _id_text_prefix = f"{high[:8]}-{high[8:12]}-{high[12:]}-"


_id_text_prefix = ""


_reseed()
if hasattr(os, "register_at_fork"):  # pragma: no branch - absent only on Windows
    os.register_at_fork(after_in_child=_reseed)


# An odd multiplier is a bijection on the low 62 bits: ids stay unique, and
# consecutive ones do not look consecutive.
_SPREAD = 0x9E3779B97F4A7C15
_BIT_64 = 1 << 64


def _id_from_sequence(sequence: int) -> uuid.UUID:
    return uuid.UUID(int=_base ^ ((sequence * _SPREAD) & _LOW_BITS))


def _id_text_from_sequence(sequence: int) -> str:
    """``str(_id_from_sequence(sequence))``, without making the UUID (for log lines)."""
    # hex() of the low 64 bits with a 65th set: "0x1" and exactly 16 digits,
    # zeros kept, quicker than two format specifications.
    digits = hex((_base ^ ((sequence * _SPREAD) & _LOW_BITS)) & 0xFFFF_FFFF_FFFF_FFFF | _BIT_64)
    return f"{_id_text_prefix}{digits[3:7]}-{digits[7:]}"


def new_message_id() -> uuid.UUID:
    """A new message id (a random version-4 UUID, cheap to make)."""
    return _id_from_sequence(next(_sequence))
