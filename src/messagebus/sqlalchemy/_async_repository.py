"""Async repositories: the aggregates of one mapped class, in one AsyncSession."""

from __future__ import annotations

import builtins
from collections.abc import Hashable, Iterable
from typing import Any, TypeVar

import sqlalchemy
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.interfaces import ORMOption
from sqlalchemy.sql import Select

from messagebus.unit_of_work import AbstractAsyncUnitOfWork

from ._repository import _Bound

__all__ = ["AsyncSqlAlchemyRepository"]

A = TypeVar("A")


class AsyncSqlAlchemyRepository(_Bound[A, AsyncSession, AbstractAsyncUnitOfWork]):
    """:class:`~messagebus.sqlalchemy.SqlAlchemyRepository` for an ``AsyncSession``.

    Declare it once per aggregate type and give it to
    :class:`~messagebus.sqlalchemy.AsyncSqlAlchemyUnitOfWork`; handlers reach
    a copy bound to each unit of work's session as an attribute. What reads
    the database is awaited; :meth:`add` is not (as ``AsyncSession.add``)::

        products = AsyncSqlAlchemyRepository(
            Product, key="sku", options=[selectinload(Product.batches)]
        )
        uow = AsyncSqlAlchemyUnitOfWork(session_factory, products=products)
        product = await uow.products.get("LAMP")
        uow.products.add(Product("CHAIR"))

    **Load the whole aggregate.** The domain model is plain Python: it cannot
    await, so it must never touch a relationship that is not loaded yet (with
    an ``AsyncSession`` that is an error, ``MissingGreenlet``, not a query).
    Give ``options`` that load everything the aggregate's methods reach, such
    as ``selectinload(Product.batches).selectinload(Batch.allocations)``: they
    are applied to every query of this repository. Relationships mapped with
    ``lazy="selectin"`` need no option.

    For queries of your own, subclass it and await :meth:`first` or
    :meth:`all`, which add the options and track what they return::

        class Products(AsyncSqlAlchemyRepository[Product]):
            async def get_by_batchref(self, reference: str) -> Product | None:
                return await self.first(
                    select(Product).join(Product.batches).where(Batch.reference == reference)
                )

    Args:
        model: The class of the aggregate root; it must be mapped already.
        key: The name of the mapped attribute that :meth:`get` looks for:
            the primary key (then :meth:`get` uses the session's identity map)
            or any other unique column.
        options: Loader options (``selectinload(...)`` and the like) for
            every query of the aggregate.

    Raises:
        ConfigurationError: ``model`` is not mapped, or has no mapped column ``key``.
    """

    def __init__(self, model: type[A], key: str, *, options: Iterable[ORMOption] = ()) -> None:
        super().__init__(model, key)
        self.options = tuple(options)

    _bound_by = "an AsyncSqlAlchemyUnitOfWork"

    async def get(self, key: Hashable) -> A | None:
        """The aggregate whose key attribute equals ``key``, or None."""
        if self._by_identity:
            found = await self.session.get(self.model, key, options=self.options)
            return None if found is None else self._track(found)
        return await self.first(sqlalchemy.select(self.model).filter_by(**{self.key: key}))

    async def list(self) -> builtins.list[A]:
        """Every aggregate of this type."""
        return await self.all(sqlalchemy.select(self.model))

    async def first(self, statement: Select[Any]) -> A | None:
        """The first aggregate that a select statement finds, tracked; or None."""
        found = (await self.session.scalars(statement.options(*self.options).limit(1))).first()
        return None if found is None else self._track(found)

    async def all(self, statement: Select[Any]) -> builtins.list[A]:
        """Every aggregate that a select statement finds, tracked."""
        found = await self.session.scalars(statement.options(*self.options))
        return [self._track(aggregate) for aggregate in found]
