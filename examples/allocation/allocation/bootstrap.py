"""Wiring: the one place that builds the bus, with its unit of work and adapters.

Call :func:`bootstrap` once per process, at start-up, and share what it
returns: the bus keeps no per-dispatch state, so every request and every
thread can use the same one. :func:`bootstrap_async` builds the async bus of
the FastAPI entry point, shared in the same way by every task of its process.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Awaitable, Callable
from typing import Any

import attrs
from sqlalchemy import Engine
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker
from sqlalchemy.orm import sessionmaker

from allocation.adapters import orm
from allocation.adapters.notifications import LogNotifications, Notifications
from allocation.adapters.publisher import LogPublisher, Publish
from allocation.domain import commands, events, model
from allocation.service_layer import async_handlers, handlers
from allocation.views import (
    AllocationsView,
    AsyncAllocationsView,
    AsyncSqlAlchemyAllocationsView,
    SqlAlchemyAllocationsView,
)
from messagebus import AsyncMessageBus, MessageBus, RetryPolicy, Serializer
from messagebus.sqlalchemy import (
    AsyncSqlAlchemyRepository,
    AsyncSqlAlchemyUnitOfWork,
    SqlAlchemyRepository,
    SqlAlchemyUnitOfWork,
)


@attrs.frozen
class Service:
    """What an entry point needs: the bus for writes, the view for reads."""

    bus: MessageBus
    views: AllocationsView


def bootstrap(
    engine: Engine | None = None,
    *,
    uow: Callable[[], Any] | None = None,
    views: AllocationsView | None = None,
    notifications: Notifications | None = None,
    publish: Publish | None = None,
    retry: RetryPolicy | None = None,
    sleep: Callable[[float], object] = time.sleep,
) -> Service:
    """Build the service's bus.

    Args:
        engine: The database; the unit of work and the read model use it
            unless ``uow`` and ``views`` are given (tests give fakes instead).
            The caller owns it (and disposes of it).
        uow: A factory of units of work with a ``products`` repository.
        views: The read model.
        notifications: By default, notifications are logged.
        publish: By default, published events are logged.
        retry: The bus's default retry policy (see messagebus.RetryPolicy).
        sleep: How retries wait (tests pass one that does not).
    """
    if uow is None or views is None:
        if engine is None:
            raise TypeError("bootstrap() needs an engine, unless both uow and views are given")
        orm.start_mappers()
        if uow is None:
            uow = functools.partial(
                SqlAlchemyUnitOfWork,
                sessionmaker(engine),
                products=SqlAlchemyRepository(model.Product, key="sku"),
            )
        if views is None:
            views = SqlAlchemyAllocationsView(engine)
    if notifications is None:
        notifications = LogNotifications()
    if publish is None:
        publish = LogPublisher(Serializer([events.Allocated]))
    bus = MessageBus(
        handlers.registry,
        uow=uow,
        dependencies={"notifications": notifications, "publish": publish, "views": views},
        retry=retry,
        sleep=sleep,
        require_handlers=[commands],
    )
    return Service(bus, views)


@attrs.frozen
class AsyncService:
    """What the async entry point needs: the async bus for writes, the view for reads."""

    bus: AsyncMessageBus
    views: AsyncAllocationsView


def bootstrap_async(
    engine: AsyncEngine | None = None,
    *,
    uow: Callable[[], Any] | None = None,
    views: AsyncAllocationsView | None = None,
    notifications: Notifications | None = None,
    publish: Publish | None = None,
    retry: RetryPolicy | None = None,
    sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
) -> AsyncService:
    """Build the service's async bus: :func:`bootstrap`, for asyncio.

    The handlers are those of ``service_layer/async_handlers.py``; the unit of
    work is an ``AsyncSqlAlchemyUnitOfWork`` whose repository loads a product
    whole (batches and allocations), since the domain model cannot await a
    lazy load. The notifications and publishing adapters are the sync ones:
    the handlers run them in a thread.

    Args:
        engine: The database (an async engine, see ``orm.make_async_engine``);
            used unless ``uow`` and ``views`` are given. The caller owns it.
        uow: A factory of async units of work with a ``products`` repository.
        views: The read model (async).
        notifications: By default, notifications are logged.
        publish: By default, published events are logged.
        retry: The bus's default retry policy.
        sleep: How retries wait (awaited; tests pass one that does not).
    """
    if uow is None or views is None:
        if engine is None:
            raise TypeError(
                "bootstrap_async() needs an engine, unless both uow and views are given"
            )
        orm.start_mappers()
        if uow is None:
            uow = functools.partial(
                AsyncSqlAlchemyUnitOfWork,
                # Aggregates stay readable after commit: nothing is loaded again lazily.
                async_sessionmaker(engine, expire_on_commit=False),
                products=AsyncSqlAlchemyRepository(
                    model.Product, key="sku", options=orm.whole_product()
                ),
            )
        if views is None:
            views = AsyncSqlAlchemyAllocationsView(engine)
    if notifications is None:
        notifications = LogNotifications()
    if publish is None:
        publish = LogPublisher(Serializer([events.Allocated]))
    bus = AsyncMessageBus(
        async_handlers.registry,
        uow=uow,
        dependencies={"notifications": notifications, "publish": publish, "views": views},
        retry=retry,
        sleep=sleep,
        require_handlers=[commands],
    )
    return AsyncService(bus, views)
