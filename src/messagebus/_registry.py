"""Which handlers handle which message types."""

from __future__ import annotations

import inspect
import types
import typing
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, Literal, ParamSpec, Protocol, TypeVar, overload

import attrs

from .exceptions import (
    ConfigurationError,
    DuplicateHandlerError,
    FrozenRegistryError,
    MissingAnnotationError,
)
from .messages import Command, Event, Message
from .retry import RetryPolicy
from .routing import Key, Route

__all__ = ["Registration", "Registry"]

F = TypeVar("F", bound=Callable[..., Any])
R = TypeVar("R")
P = ParamSpec("P")


class _CommandHandlerDecorator(Protocol[R]):
    """What ``register(message=SomeCommand)`` returns: it takes a handler whose
    result is the command's, plain or awaited (for the async bus)."""

    @overload
    def __call__(self, handler: Callable[P, R], /) -> Callable[P, R]: ...

    @overload
    def __call__(self, handler: Callable[P, Awaitable[R]], /) -> Callable[P, Awaitable[R]]: ...


def handler_name(handler: object) -> str:
    """A handler's name as logs and errors show it: ``module.qualname``."""
    module = getattr(handler, "__module__", None)
    qualname = getattr(handler, "__qualname__", None) or repr(handler)
    return f"{module}.{qualname}" if module else qualname


@attrs.frozen
class Registration:
    """One handler registered for one message type."""

    handler: Callable[..., Any]
    message_type: type[Message]
    retry: RetryPolicy | None
    uow: bool
    #: What the handler says it may raise (events) or send (commands): for the graph.
    raises: tuple[type[Message], ...] = ()

    @property
    def name(self) -> str:
        return handler_name(self.handler)


def _resolve(handler: Callable[..., Any], parameter: inspect.Parameter) -> Any:
    """The first parameter's annotation, evaluated on its own.

    Only this one: another parameter's annotation may name something that is
    imported only under ``TYPE_CHECKING``, which must not stop registration.
    """
    annotation = parameter.annotation
    if not isinstance(annotation, str):
        return annotation
    namespace = dict(getattr(inspect.unwrap(handler), "__globals__", {}))
    try:
        return eval(annotation, namespace)  # the handler's own source text, not data
    except Exception as exc:
        raise MissingAnnotationError(
            handler,
            f"the annotation of {parameter.name!r}, {annotation!r}, cannot be resolved ({exc})",
        ) from None


def _message_types_of(handler: Callable[..., Any]) -> tuple[type[Message], ...]:
    try:
        signature = inspect.signature(handler)
    except (TypeError, ValueError) as exc:
        raise MissingAnnotationError(handler, f"its signature cannot be read ({exc})") from None
    parameters = list(signature.parameters.values())
    if not parameters or parameters[0].kind not in (
        inspect.Parameter.POSITIONAL_ONLY,
        inspect.Parameter.POSITIONAL_OR_KEYWORD,
    ):
        raise MissingAnnotationError(
            handler, "a handler takes the message as its first positional parameter"
        )
    first = parameters[0]
    if first.annotation is inspect.Parameter.empty:
        raise MissingAnnotationError(
            handler,
            f"its first parameter {first.name!r} has no type annotation; annotate it with "
            "the message type or pass message=... to register()",
        )
    annotation = _resolve(handler, first)
    candidates = (
        typing.get_args(annotation)
        if typing.get_origin(annotation) in (typing.Union, types.UnionType)
        else (annotation,)
    )
    found: list[type[Message]] = []
    for candidate in candidates:
        origin = typing.get_origin(candidate) or candidate
        if not (isinstance(origin, type) and issubclass(origin, (Command, Event))):
            raise MissingAnnotationError(
                handler,
                f"the annotation of {first.name!r}, {candidate!r}, is not a Command or Event type",
            )
        found.append(origin)
    return tuple(found)


class Registry:
    """The handlers of an application, by message type.

    Register plain functions; the message type comes from the annotation of
    the first parameter (a union registers the handler for each member)::

        registry = Registry()

        @registry.register
        def allocate(cmd: Allocate, uow: AbstractUnitOfWork) -> str: ...

        @registry.register(retry=RetryPolicy.no_retries(), uow=False)
        def send_email(event: OutOfStock, notifications: Notifications) -> None: ...

        registry.register(legacy_handler, message=Deallocated)

    A command has exactly one handler: a second is refused at once.
    An event has any number, run in registration order.

    A bus resolves its handlers once, when it is built: a handler registered
    later would never be called by it. :meth:`freeze` makes registering one an
    error that says so (:class:`~messagebus.FrozenRegistryError`).
    """

    def __init__(self) -> None:
        self._commands: dict[type[Message], Registration] = {}
        self._events: dict[type[Message], list[Registration]] = {}
        self._frozen = False
        self._routes: dict[type[Message], Route] = {}

    def freeze(self) -> None:
        """Refuse any further registration; calling it again does nothing.

        For a registry that a bus was built from: a handler registered in it
        later would not be that bus's.
        """
        self._frozen = True

    @property
    def frozen(self) -> bool:
        """Whether :meth:`freeze` was called: registration is then refused."""
        return self._frozen

    def __repr__(self) -> str:
        events = sum(len(registrations) for registrations in self._events.values())
        handlers = sorted(
            {r.name for r in self._commands.values()}
            | {r.name for rs in self._events.values() for r in rs}
        )
        frozen = ", frozen" if self._frozen else ""
        return (
            f"<Registry: {len(self._commands)} command handler"
            f"{'' if len(self._commands) == 1 else 's'}, {events} event handler"
            f"{'' if events == 1 else 's'}{frozen}: {', '.join(handlers) or 'none'}>"
        )

    @overload
    def register(
        self,
        handler: F,
        /,
        *,
        message: type[Message] | Iterable[type[Message]] | None = None,
        retry: RetryPolicy | None = None,
        uow: bool = True,
        raises: Iterable[type[Message]] = (),
    ) -> F: ...

    @overload
    def register(
        self,
        handler: None = None,
        /,
        *,
        message: type[Command[R]],
        retry: RetryPolicy | None = None,
        uow: bool = True,
        raises: Iterable[type[Message]] = (),
    ) -> _CommandHandlerDecorator[R]: ...

    @overload
    def register(
        self,
        handler: None = None,
        /,
        *,
        message: type[Event] | Iterable[type[Message]] | None = None,
        retry: RetryPolicy | None = None,
        uow: bool = True,
        raises: Iterable[type[Message]] = (),
    ) -> Callable[[F], F]: ...

    def register(
        self,
        handler: F | None = None,
        /,
        *,
        message: type[Message] | Iterable[type[Message]] | None = None,
        retry: RetryPolicy | None = None,
        uow: bool = True,
        raises: Iterable[type[Message]] = (),
    ) -> Any:
        """Register a handler, directly or as a decorator.

        Naming a command type in ``message`` lets mypy check that the handler
        returns the command's result type.

        Args:
            handler: A function whose first parameter is the message.
            message: The message type (or types) it handles, when its first
                parameter is not annotated with it.
            retry: This handler's retry policy instead of the bus's default.
            uow: False for a handler that does no storage work: it runs
                without a unit of work.
            raises: The events it may raise and the commands it may send.
                Nothing checks or enforces this (what a handler raises
                cannot be read from it): it is what ``messagebus graph``
                draws from the handler.

        Raises:
            MissingAnnotationError: The message type can be found neither in
                ``message`` nor in the annotation.
            DuplicateHandlerError: The command already has a handler.
            FrozenRegistryError: The registry is frozen.
        """

        def decorate(fn: F) -> F:
            self._add(fn, message, retry, uow, raises)
            return fn

        if handler is None:
            return decorate
        return decorate(handler)

    def _add(
        self,
        handler: Callable[..., Any],
        message: type[Message] | Iterable[type[Message]] | None,
        retry: RetryPolicy | None,
        uow: bool,
        raises: Iterable[type[Message]] = (),
    ) -> None:
        if self._frozen:
            raise FrozenRegistryError(handler)
        if not callable(handler):
            raise MissingAnnotationError(handler, "a handler must be callable")
        if retry is not None and not isinstance(retry, RetryPolicy):
            raise TypeError(f"retry must be a RetryPolicy, not {retry!r}")
        if message is None:
            message_types = _message_types_of(handler)
        elif isinstance(message, type):
            message_types = (message,)
        elif isinstance(message, Message) or not isinstance(message, Iterable):
            raise MissingAnnotationError(
                handler, f"message= takes a message type (or types), not {message!r}"
            )
        else:
            message_types = tuple(message)
        for message_type in message_types:
            if not (isinstance(message_type, type) and issubclass(message_type, (Command, Event))):
                raise MissingAnnotationError(
                    handler, f"{message_type!r} is not a Command or Event type"
                )
        message_types = tuple(dict.fromkeys(message_types))
        if isinstance(raises, type) or not isinstance(raises, Iterable):
            raise ConfigurationError(
                f"raises= of {handler_name(handler)} takes a list of message types, not {raises!r}"
            )
        raised = tuple(dict.fromkeys(raises))
        for raised_type in raised:
            if not (isinstance(raised_type, type) and issubclass(raised_type, (Command, Event))):
                raise ConfigurationError(
                    f"raises= of {handler_name(handler)} takes Command and Event types, "
                    f"not {raised_type!r}"
                )
        # Check every type before changing anything, so a refused call leaves no trace.
        for message_type in message_types:
            self._refuse_duplicate(message_type, handler)
        for message_type in message_types:
            registration = Registration(handler, message_type, retry, uow, raised)
            if issubclass(message_type, Command):
                self._commands[message_type] = registration
            else:
                self._events.setdefault(message_type, []).append(registration)

    def _refuse_duplicate(self, message_type: type[Message], handler: Callable[..., Any]) -> None:
        if issubclass(message_type, Command):
            if message_type in self._commands:
                raise DuplicateHandlerError(
                    message_type, self._commands[message_type].handler, handler
                )
        elif any(r.handler is handler for r in self._events.get(message_type, ())):
            raise DuplicateHandlerError(message_type, handler, handler)

    def include(self, other: Registry) -> None:
        """Add every handler of another registry (e.g. one per module).

        All or nothing: if one of its commands already has a handler here, or
        one of its event handlers is already registered for the same event,
        nothing is added.

        Its routes come along too.

        Raises:
            DuplicateHandlerError: A command has a handler in both registries.
            FrozenRegistryError: The registry is frozen.
            ConfigurationError: A message type is routed in both, to different places.
        """
        if self._frozen:
            raise FrozenRegistryError(other)
        if other is self:
            return
        for message_type, route in other._routes.items():
            mine = self._routes.get(message_type)
            if mine is not None and mine != route:
                raise ConfigurationError(
                    f"{message_type.__qualname__} is routed to {mine.destination!r} here "
                    f"and to {route.destination!r} in the registry included"
                )
        for message_type, registration in other._commands.items():
            self._refuse_duplicate(message_type, registration.handler)
        for message_type, registrations in other._events.items():
            for registration in registrations:
                self._refuse_duplicate(message_type, registration.handler)
        self._commands.update(other._commands)
        for message_type, registrations in other._events.items():
            self._events.setdefault(message_type, []).extend(list(registrations))
        self._routes.update(other._routes)

    def route(self, message_type: type[Message], *, to: str, key: Key | None = None) -> Route:
        """Send every message of this type out of the process, to ``to``.

        A routed event is handled here too, and sent; a routed command is only
        sent (its owner handles it). See :mod:`messagebus.routing`.

        Args:
            message_type: A Command or Event type.
            to: The destination (a stream, or a queue).
            key: The partition key: a field's name or a function of the
                message; by default the correlation id.

        Raises:
            FrozenRegistryError: A bus was built from this registry already.
            ConfigurationError: Not a message type, an empty destination, a key
                that is not one of its fields, or a second route for it.
        """
        if self._frozen:
            raise FrozenRegistryError(message_type)
        if not (isinstance(message_type, type) and issubclass(message_type, (Command, Event))):
            raise ConfigurationError(
                f"only Command and Event types are routed, not {message_type!r}"
            )
        if not isinstance(to, str) or not to.strip():
            raise ConfigurationError(
                f"the destination of {message_type.__qualname__} must be a non-empty name, "
                f"not {to!r}"
            )
        routed = typing.cast(type[Message], message_type)
        if isinstance(key, str) and attrs.has(message_type):
            fields = [field.name for field in attrs.fields(message_type)]
            if key not in fields:
                raise ConfigurationError(
                    f"{message_type.__qualname__} has no field {key!r} to use as its key "
                    f"(its fields: {', '.join(fields)})"
                )
        elif key is not None and not isinstance(key, str) and not callable(key):
            raise ConfigurationError(f"a key is a field's name or a function, not {key!r}")
        if message_type in self._routes:
            raise ConfigurationError(
                f"{message_type.__qualname__} is routed already, "
                f"to {self._routes[message_type].destination!r}"
            )
        route = self._routes[routed] = Route(routed, to, key)
        return route

    @property
    def routes(self) -> Mapping[type[Message], Route]:
        """The routes by message type (a read-only view)."""
        return types.MappingProxyType(self._routes)

    @property
    def commands(self) -> Mapping[type[Message], Registration]:
        """The command handlers by command type (a read-only view)."""
        return types.MappingProxyType(self._commands)

    @property
    def events(self) -> Mapping[type[Message], tuple[Registration, ...]]:
        """The event handlers by event type, in registration order."""
        return types.MappingProxyType({k: tuple(v) for k, v in self._events.items()})

    def graph(self, format: Literal["mermaid", "dot", "svg"] = "mermaid") -> str:
        """The message-flow graph of these handlers and routes, as ``messagebus graph`` draws it.

        Commands -> their handler -> the events it declares it raises
        (``register(raises=...)``) -> their handlers, and where routed messages
        go. A command sent that nothing handles, and an event handler whose
        event nothing raises, stand out.

        Args:
            format: ``"mermaid"`` (Mermaid text), ``"dot"`` (Graphviz), or
                ``"svg"`` (drawn by Graphviz's ``dot``, which must be installed).

        Raises:
            ValueError: An unknown format.
            RuntimeError: SVG was asked for and ``dot`` is not installed.
        """
        from . import _graph  # only when drawn

        return _graph.render(self, format)
