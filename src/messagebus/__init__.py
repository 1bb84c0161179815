"""messagebus: an in-process message bus for service layers.

Commands go to exactly one handler and fail loudly; events go to every
interested handler and fail one at a time, logged and isolated; each handler
attempt runs in a unit of work, with tenacity retries for what is worth retrying.
"""

from ._async_bus import AsyncMessageBus
from ._bus import MessageBus
from ._context import Context
from ._registry import Registry
from ._version import __version__ as __version__
from .exceptions import (
    ConcurrencyError,
    ConfigurationError,
    DispatchError,
    DuplicateHandlerError,
    Expected,
    FrozenRegistryError,
    InvalidMessageDataError,
    MessageBusError,
    MessageNameConflictError,
    MissingAnnotationError,
    MissingHandlersError,
    NoHandlerError,
    NotAMessageError,
    SerializationError,
    TooManyEventsError,
    Transient,
    UnknownMessageError,
    UnresolvedDependencyError,
    UnusedDependencyError,
)
from .messages import Command, Event, Message, Metadata, message_name, message_version
from .retry import RetryPolicy, is_transient, retry_if_transient
from .serialization import Serializer, allow_nonfinite, make_converter, sensitive
from .unit_of_work import (
    AbstractAsyncUnitOfWork,
    AbstractUnitOfWork,
    AsyncUnitOfWork,
    HasEvents,
    UnitOfWork,
)

__all__ = [
    "AbstractAsyncUnitOfWork",
    "AbstractUnitOfWork",
    "AsyncMessageBus",
    "AsyncUnitOfWork",
    "Command",
    "ConcurrencyError",
    "ConfigurationError",
    "Context",
    "DispatchError",
    "DuplicateHandlerError",
    "Event",
    "Expected",
    "FrozenRegistryError",
    "HasEvents",
    "InvalidMessageDataError",
    "Message",
    "MessageBus",
    "MessageBusError",
    "MessageNameConflictError",
    "Metadata",
    "MissingAnnotationError",
    "MissingHandlersError",
    "NoHandlerError",
    "NotAMessageError",
    "Registry",
    "RetryPolicy",
    "SerializationError",
    "Serializer",
    "TooManyEventsError",
    "Transient",
    "UnitOfWork",
    "UnknownMessageError",
    "UnresolvedDependencyError",
    "UnusedDependencyError",
    "allow_nonfinite",
    "is_transient",
    "make_converter",
    "message_name",
    "message_version",
    "retry_if_transient",
    "sensitive",
]
