"""The exceptions that messagebus raises.

Every exception is a :class:`MessageBusError`. Configuration errors are raised
while an application wires its handlers (at registration or when the bus is
built), never at dispatch; runtime errors are raised while messages are handled
or deserialised::

    MessageBusError
    ├── ConfigurationError
    │   ├── MissingAnnotationError
    │   ├── DuplicateHandlerError
    │   ├── UnresolvedDependencyError
    │   ├── UnusedDependencyError
    │   ├── MessageNameConflictError
    │   ├── MissingHandlersError
    │   └── FrozenRegistryError
    ├── DispatchError
    │   ├── NotAMessageError
    │   ├── NoHandlerError
    │   └── TooManyEventsError
    ├── SerializationError
    │   ├── UnknownMessageError
    │   └── InvalidMessageDataError
    └── ConcurrencyError  (also Transient: retried by the default policy)

Errors raised by handlers themselves are never wrapped: a command's failure
reaches the caller as the handler's own exception.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = [
    "ConcurrencyError",
    "ConfigurationError",
    "DispatchError",
    "DuplicateHandlerError",
    "Expected",
    "FrozenRegistryError",
    "InvalidMessageDataError",
    "MessageBusError",
    "MessageNameConflictError",
    "MissingAnnotationError",
    "MissingHandlersError",
    "NoHandlerError",
    "NotAMessageError",
    "SerializationError",
    "TooManyEventsError",
    "Transient",
    "UnknownMessageError",
    "UnresolvedDependencyError",
    "UnusedDependencyError",
]


def _describe(obj: object) -> str:
    module = getattr(obj, "__module__", None)
    qualname = getattr(obj, "__qualname__", None)
    if qualname is None:
        return repr(obj)
    return f"{module}.{qualname}" if module else qualname


#: The longest one problem of :class:`InvalidMessageDataError` may be.
_LINE = 400
#: The longest a value quoted in an error may be: data is untrusted, and may be huge.
_SHOWN = 80


def shorten(value: object, limit: int = _SHOWN) -> str:
    """``repr(value)``, cut to ``limit`` characters; never raises (an int too long to
    print, a repr that fails)."""
    try:
        text = repr(value)
    except Exception:  # e.g. ValueError: an int of more digits than Python prints
        bits = value.bit_length() if isinstance(value, int) else None
        return f"<{type(value).__name__}{'' if bits is None else f' of {bits} bits'}>"
    if len(text) <= limit:
        return text
    return f"{text[: limit - 3]}... ({len(text):,} characters)"


def _kind(message_type: type) -> str:
    names = [base.__name__ for base in message_type.__mro__]
    return "Command" if "Command" in names else "Event"


class Transient(Exception):
    """Base for an application's own errors that are worth retrying.

    The default retry policy retries any exception that derives from this
    class (for example a remote service that answered "busy")::

        class StockServiceBusy(messagebus.Transient):
            pass
    """


class Expected(Exception):
    """Base for an application's own errors that are expected outcomes, not failures.

    A rejected command (an invalid sku, an order already paid) still reaches
    the caller, but it is not retried, is logged at INFO as ``message_rejected``
    without a traceback, and never becomes a dead letter::

        class InvalidSku(messagebus.Expected):
            pass

    For exceptions the application does not own, ``MessageBus(expected=[...])``.
    """


class MessageBusError(Exception):
    """The root of every exception that messagebus raises."""


class ConfigurationError(MessageBusError):
    """The handlers or dependencies given to the bus do not fit together."""


class MissingAnnotationError(ConfigurationError):
    """A handler's message type could not be found.

    Attributes:
        handler: The handler being registered.
    """

    def __init__(self, handler: object, reason: str) -> None:
        self.handler = handler
        super().__init__(f"cannot register {_describe(handler)}: {reason}")


class DuplicateHandlerError(ConfigurationError):
    """A second handler was registered for a command (or one handler twice for an event).

    Attributes:
        message_type: The command type.
        existing: The handler registered first.
        duplicate: The handler that was refused.
    """

    def __init__(self, message_type: type, existing: object, duplicate: object) -> None:
        self.message_type = message_type
        self.existing = existing
        self.duplicate = duplicate
        if existing is duplicate:
            text = (
                f"{_describe(existing)} is already registered for event "
                f"{message_type.__qualname__}; it would run twice"
            )
        else:
            text = (
                f"command {message_type.__qualname__} already has a handler, "
                f"{_describe(existing)}; refusing a second one, {_describe(duplicate)}: "
                "a command goes to exactly one handler"
            )
        super().__init__(text)


class UnresolvedDependencyError(ConfigurationError):
    """A handler asks for a parameter that no dependency provides.

    Attributes:
        handler: The handler.
        parameter: The name of the parameter.
    """

    def __init__(self, handler: object, parameter: str, reason: str) -> None:
        self.handler = handler
        self.parameter = parameter
        super().__init__(
            f"handler {_describe(handler)} asks for parameter {parameter!r}, but {reason}"
        )


class UnusedDependencyError(ConfigurationError):
    """Dependencies were given to the bus that no handler asks for.

    Often a typo in a parameter's name, or a handler that was never
    registered. Its text is also what the bus says when it only warns.

    Attributes:
        names: The names of the unused dependencies.
    """

    def __init__(self, names: Sequence[str]) -> None:
        self.names = tuple(names)
        listed = ", ".join(repr(name) for name in self.names)
        super().__init__(
            f"no handler asks for the dependenc{'y' if len(self.names) == 1 else 'ies'} "
            f"{listed}: check the handlers' parameter names, or remove "
            f"{'it' if len(self.names) == 1 else 'them'}"
        )


class MessageNameConflictError(ConfigurationError):
    """Two different message types share one name.

    Attributes:
        name: The shared name.
        types: The two types.
    """

    def __init__(self, name: str, first: type, second: type) -> None:
        self.name = name
        self.types = (first, second)
        super().__init__(
            f"message name {name!r} is used by both {_describe(first)} and "
            f"{_describe(second)}; give one of them another name, "
            f"e.g. class {second.__name__}({_kind(second)}, name='...')"
        )


class MissingHandlersError(ConfigurationError):
    """Commands that the application requires handlers for have none.

    Attributes:
        message_types: The commands without a handler.
    """

    def __init__(self, message_types: Sequence[type]) -> None:
        self.message_types = tuple(message_types)
        names = ", ".join(sorted(_describe(t) for t in self.message_types))
        super().__init__(f"no handler is registered for these commands: {names}")


class FrozenRegistryError(ConfigurationError):
    """A handler was registered in a frozen registry (see ``Registry.freeze``).

    A bus resolves its handlers when it is built: one registered later would
    never be called.

    Attributes:
        handler: The handler refused (or the registry, for ``include``).
    """

    def __init__(self, handler: object) -> None:
        self.handler = handler
        what = (
            "another registry's handlers"
            if type(handler).__name__ == "Registry"
            else _describe(handler)
        )
        super().__init__(
            f"cannot register {what}: the registry is frozen (a bus built from it takes its "
            "handlers when it is built, and would never call one registered later); register "
            "every handler before building the bus, or build another bus from a new Registry"
        )


class DispatchError(MessageBusError):
    """A message could not be dispatched."""


class NotAMessageError(DispatchError, TypeError):
    """Something that is not a Command or an Event was given to the bus.

    Attributes:
        value: What was given.
    """

    def __init__(self, value: object, where: str = "bus.handle()") -> None:
        self.value = value
        super().__init__(
            f"{where} takes a Command or an Event, not {type(value).__qualname__}: {value!r}"
        )


class NoHandlerError(DispatchError, LookupError):
    """A command was dispatched that no handler is registered for.

    Attributes:
        message: The command.
    """

    def __init__(self, message: object) -> None:
        self.message = message
        super().__init__(f"no handler is registered for command {message!r}")


class TooManyEventsError(DispatchError):
    """One ``handle()`` raised more events than the bus allows: most often a chain
    in which handlers raise, in the end, the event that started it.

    What was handled and committed stays so; the events still queued are dropped.

    Attributes:
        limit: The bus's ``max_events``.
        chain: The names of the message types that led to the last event, oldest first.
    """

    def __init__(self, limit: int, chain: Sequence[str]) -> None:
        self.limit = limit
        self.chain = tuple(chain)
        super().__init__(
            f"one handle() raised more than {limit} events (max_events); the last came "
            f"from {' -> '.join(self.chain)}: is a handler raising an event that leads "
            "back to itself?"
        )


class SerializationError(MessageBusError):
    """A message could not be turned into data or back."""


class UnknownMessageError(SerializationError, LookupError):
    """Data names a message type that is not registered.

    Attributes:
        name: The name found in the data.
    """

    def __init__(self, name: object, known: Sequence[str] = ()) -> None:
        self.name = name
        hint = f"; registered names: {', '.join(sorted(known))}" if known else ""
        super().__init__(f"unknown message name {shorten(name)}{hint}")


class InvalidMessageDataError(SerializationError, ValueError):
    """Data does not fit the message type it names.

    Attributes:
        name: The message name.
        errors: One line per problem, each naming the field (``Allocate.qty``).
    """

    def __init__(self, name: str, errors: Sequence[str], data: Any = None) -> None:
        self.name = name
        self.errors = tuple(errors)
        self.data = data
        super().__init__(
            f"invalid data for message {shorten(name)}: "
            + "; ".join(
                shorten(line, _LINE)[1:-1] if len(line) > _LINE else line for line in self.errors
            )
        )


class ConcurrencyError(MessageBusError, Transient):
    """An aggregate was changed by someone else since it was read.

    Transient: the default retry policy retries the attempt in a fresh unit of work.

    Attributes:
        aggregate: A description of the aggregate concerned.
    """

    def __init__(self, aggregate: str) -> None:
        self.aggregate = aggregate
        super().__init__(f"{aggregate} was changed by another unit of work since it was read")
