"""Wiring: the one place that builds the bus, with its unit of work and adapters.

Call :func:`bootstrap` once per process, at start-up, and share what it
returns: the bus keeps no per-dispatch state, so every request and every
thread can use the same one.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import Any

import attrs
from sqlalchemy import Engine
from sqlalchemy.orm import sessionmaker

from allocation.adapters import orm
from allocation.adapters.notifications import LogNotifications, Notifications
from allocation.adapters.publisher import LogPublisher, Publish
from allocation.domain import commands, events, model
from allocation.service_layer import handlers
from allocation.views import AllocationsView, SqlAlchemyAllocationsView
from messagebus import MessageBus, RetryPolicy, Serializer
from messagebus.sqlalchemy import SqlAlchemyRepository, SqlAlchemyUnitOfWork


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
