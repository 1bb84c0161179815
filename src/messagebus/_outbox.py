"""What an attempt sends out of the process, staged in its unit of work.

Made by the bus when its registry has routes (:meth:`Registry.route`); an
attempt with a unit of work gives it the envelopes of what it raised and sent,
before it commits, and the routed ones are staged with
``uow.stage_outgoing(...)``: written to the outbox in the same transaction.
Their ids are fixed here, so that the message a relay publishes and the one
handled here are the same message.

The trace context of what is sent comes from a *creation hook*, which
:mod:`messagebus.otel` installs when it is used (so that nothing here imports
OpenTelemetry): given where a message goes and its metadata, it returns the
context to send with it, or None.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import attrs

from ._context import MESSAGE, Envelope, metadata_of
from .exceptions import ConfigurationError, DispatchError
from .messages import Command, Message, Metadata, message_name, message_version
from .routing import Route
from .serialization import Serializer
from .transport import OutgoingMessage

#: ``hook(destination, message_name, metadata) -> trace context or None``.
CreationHook = Callable[[str, str, Metadata], "Mapping[str, str] | None"]

#: The creation hook in use, if any (a list, so that it is set in one place).
_creation_hook: list[CreationHook | None] = [None]


def set_creation_hook(hook: CreationHook | None) -> None:
    """Install (or, with None, remove) the hook that gives outgoing messages a trace context."""
    _creation_hook[0] = hook


class Outbox:
    """The routes of a bus, and how to stage what they send."""

    __slots__ = ("_routes", "_serializer")

    def __init__(self, routes: Mapping[type[Message], Route], serializer: Serializer) -> None:
        self._routes = dict(routes)
        self._serializer = serializer

    def routes(self) -> dict[type[Message], Route]:
        return dict(self._routes)

    def route(self, message_type: type[Message]) -> Route | None:
        return self._routes.get(message_type)

    def outgoing(self, envelope: Envelope, route: Route) -> OutgoingMessage:
        """The message of ``envelope`` as the outbox keeps it; its id is fixed now."""
        message = envelope[MESSAGE]
        metadata = metadata_of(envelope)
        name = message_name(type(message))
        hook = _creation_hook[0]
        if hook is not None and metadata.trace_context is None:
            # A context the application gave is kept as it is; else the hook's.
            trace_context = hook(route.destination, name, metadata)
            if trace_context:
                metadata = attrs.evolve(metadata, trace_context=trace_context)
        serializer = self._serializer
        return OutgoingMessage(
            message_id=str(metadata.message_id),
            name=name,
            version=message_version(type(message)),
            payload=json.dumps(serializer.dump_payload(message), separators=(",", ":")),
            metadata=json.dumps(serializer.dump_metadata(metadata), separators=(",", ":")),
            destination=route.destination,
            key=route.key_of(message, metadata.correlation_id),
        )

    def stage(self, uow: Any, raised: Sequence[Envelope], sent: Sequence[Envelope]) -> None:
        """Stage the routed messages among ``raised`` (events) and all of ``sent`` (commands).

        Raises:
            DispatchError: A command sent is not routed.
            ConfigurationError: The unit of work cannot stage outgoing messages.
        """
        messages = []
        for envelope in raised:
            route = self._routes.get(envelope[MESSAGE].__class__)
            if route is not None:
                messages.append(self.outgoing(envelope, route))
        for envelope in sent:
            route = self._routes.get(envelope[MESSAGE].__class__)
            if route is None:
                raise DispatchError(
                    f"{type(envelope[MESSAGE]).__qualname__} is not routed: say where it goes "
                    "with registry.route(...) before sending it"
                )
            messages.append(self.outgoing(envelope, route))
        if messages:
            stage_outgoing(uow, messages)


def stage_outgoing(uow: Any, messages: Sequence[OutgoingMessage]) -> None:
    stage = getattr(uow, "stage_outgoing", None)
    if not callable(stage):
        raise ConfigurationError(
            f"{type(uow).__qualname__} cannot send messages out of the process: routed "
            "messages need a unit of work with an outbox (stage_outgoing), such as "
            "messagebus.sqlalchemy.SqlAlchemyUnitOfWork or the testing kit's fakes"
        )
    stage(messages)


def refuse_routed_commands_with_handlers(
    routes: Mapping[type[Message], Route], handled: Sequence[type[Message]]
) -> None:
    """A routed command belongs to another service: this one must not handle it too."""
    both = sorted(t.__qualname__ for t in handled if t in routes and issubclass(t, Command))
    if both:
        raise ConfigurationError(
            f"these commands are routed out of the process and also handled here: "
            f"{', '.join(both)}; a command has one owner: route it, or handle it"
        )
