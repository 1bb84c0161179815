"""The unit of work: one transaction per handler attempt.

The bus opens a fresh unit of work for each handler attempt, from the factory
the application gives it. After the handler returns, the bus commits; if the
handler or the commit fails, it rolls back; it always closes. New events are
collected from the aggregates the unit of work has seen, and only after its
commit succeeded: an event of a rolled-back attempt is never dispatched.

Any object with the four methods of :class:`UnitOfWork` will do.
:class:`AbstractUnitOfWork` is a convenient base that tracks the aggregates a
repository hands out and collects their events.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any, Protocol, TypeVar, runtime_checkable

from .messages import Event

__all__ = [
    "AbstractAsyncUnitOfWork",
    "AbstractUnitOfWork",
    "AsyncUnitOfWork",
    "HasEvents",
    "UnitOfWork",
]

A = TypeVar("A")


@runtime_checkable
class HasEvents(Protocol):
    """An aggregate that records the events its changes raise in ``events``."""

    events: list[Event]


@runtime_checkable
class UnitOfWork(Protocol):
    """What the bus needs of a unit of work."""

    def commit(self) -> None:
        """Make the attempt's changes permanent."""

    def rollback(self) -> None:
        """Discard the attempt's changes (and the events they raised)."""

    def close(self) -> None:
        """Release what the unit of work holds; called after every attempt."""

    def collect_new_events(self) -> Sequence[Event]:
        """Take the new events of the aggregates seen; called only after commit."""
        ...


class _Tracking:
    """Tracks the aggregates a unit of work has seen, and takes their events."""

    def __init__(self) -> None:
        self._seen: dict[int, Any] = {}

    @property
    def seen(self) -> tuple[Any, ...]:
        """The aggregates this unit of work has handed out or received, in order."""
        return tuple(self._seen.values())

    def track(self, aggregate: A) -> A:
        """Remember an aggregate, so that its new events are collected; returns it."""
        self._seen.setdefault(id(aggregate), aggregate)
        return aggregate

    def collect_new_events(self) -> list[Event]:
        """Take (and clear) the pending events of every aggregate seen, in order."""
        collected: list[Event] = []
        for aggregate in self._seen.values():
            events = getattr(aggregate, "events", None)
            if events:
                collected.extend(events)
                events.clear()
        return collected

    def __repr__(self) -> str:
        return f"<{type(self).__qualname__} {' '.join(self._repr_fields())}>"

    def _repr_fields(self) -> list[str]:
        """What the repr shows, as ``name=value``; subclasses add theirs."""
        # A subclass that forgot super().__init__() still gets a repr.
        return [f"seen={len(self.__dict__.get('_seen', ()))}"]

    def _discard_events(self) -> None:
        for aggregate in self._seen.values():
            events = getattr(aggregate, "events", None)
            if isinstance(events, list):
                events.clear()


class AbstractUnitOfWork(_Tracking, abc.ABC):
    """A base for units of work that tracks the aggregates it has seen.

    Repositories call :meth:`track` for every aggregate they hand out or
    receive. Subclasses implement :meth:`_commit` and :meth:`_rollback`, and
    may override :meth:`close`. It can also be used as a context manager that
    rolls back on an exception, as in "Architecture Patterns with Python".
    """

    def commit(self) -> None:
        """Commit the transaction."""
        self._commit()

    def rollback(self) -> None:
        """Roll the transaction back and drop the events its aggregates raised."""
        try:
            self._rollback()
        finally:
            self._discard_events()

    def close(self) -> None:
        """Release resources; nothing by default."""

    @abc.abstractmethod
    def _commit(self) -> None:
        """Commit the underlying transaction."""

    @abc.abstractmethod
    def _rollback(self) -> None:
        """Roll back the underlying transaction."""

    def __enter__(self: A) -> A:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is not None:
            self.rollback()


@runtime_checkable
class AsyncUnitOfWork(Protocol):
    """What the async bus needs of a unit of work."""

    async def commit(self) -> None:
        """Make the attempt's changes permanent."""

    async def rollback(self) -> None:
        """Discard the attempt's changes (and the events they raised)."""

    async def close(self) -> None:
        """Release what the unit of work holds; awaited after every attempt."""

    def collect_new_events(self) -> Sequence[Event]:
        """Take the new events of the aggregates seen; called only after commit."""
        ...


class AbstractAsyncUnitOfWork(_Tracking, abc.ABC):
    """The async twin of :class:`AbstractUnitOfWork`, for :class:`~messagebus.AsyncMessageBus`."""

    async def commit(self) -> None:
        """Commit the transaction."""
        await self._commit()

    async def rollback(self) -> None:
        """Roll the transaction back and drop the events its aggregates raised."""
        try:
            await self._rollback()
        finally:
            self._discard_events()

    async def close(self) -> None:
        """Release resources; nothing by default."""

    @abc.abstractmethod
    async def _commit(self) -> None:
        """Commit the underlying transaction."""

    @abc.abstractmethod
    async def _rollback(self) -> None:
        """Roll back the underlying transaction."""

    async def __aenter__(self: A) -> A:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is not None:
            await self.rollback()


def _repository(unit_of_work: object, repositories: Mapping[str, Any], name: str) -> Any:
    """A unit of work's repository called ``name``, or an AttributeError naming those it has."""
    try:
        return repositories[name]
    except KeyError:
        raise AttributeError(
            f"{type(unit_of_work).__name__} has no repository {name!r}; "
            f"it has: {', '.join(repositories) or 'none'}"
        ) from None
