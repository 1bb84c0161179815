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
from collections.abc import Sequence
from types import TracebackType
from typing import Any, Protocol, TypeVar, runtime_checkable

from .messages import Event

__all__ = ["AbstractUnitOfWork", "HasEvents", "UnitOfWork"]

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


class AbstractUnitOfWork(abc.ABC):
    """A base for units of work that tracks the aggregates it has seen.

    Repositories call :meth:`track` for every aggregate they hand out or
    receive. Subclasses implement :meth:`_commit` and :meth:`_rollback`, and
    may override :meth:`close`. It can also be used as a context manager that
    rolls back on an exception, as in "Architecture Patterns with Python".
    """

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

    def commit(self) -> None:
        """Commit the transaction."""
        self._commit()

    def rollback(self) -> None:
        """Roll the transaction back and drop the events its aggregates raised."""
        try:
            self._rollback()
        finally:
            for aggregate in self._seen.values():
                events = getattr(aggregate, "events", None)
                if isinstance(events, list):
                    events.clear()

    def close(self) -> None:  # noqa: B027 - optional hook with nothing to do by default
        """Release resources; nothing by default."""

    def collect_new_events(self) -> list[Event]:
        """Take (and clear) the pending events of every aggregate seen, in order."""
        collected: list[Event] = []
        for aggregate in self._seen.values():
            events = getattr(aggregate, "events", None)
            if events:
                collected.extend(events)
                events.clear()
        return collected

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
