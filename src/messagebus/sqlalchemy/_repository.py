"""Repositories: the aggregates of one mapped class, in one unit of work's session."""

from __future__ import annotations

import builtins
import copy
from collections.abc import Hashable
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import sqlalchemy
from sqlalchemy.orm import Mapper, Session
from sqlalchemy.sql import Select

from messagebus.exceptions import ConfigurationError
from messagebus.unit_of_work import AbstractUnitOfWork, _Tracking

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

__all__ = ["SqlAlchemyRepository"]

A = TypeVar("A")
S = TypeVar("S", bound="Session | AsyncSession")
U = TypeVar("U", bound=_Tracking)
B = TypeVar("B", bound="_Bound[Any, Any, Any]")


class _Bound(Generic[A, S, U]):
    """What a repository does once bound to a unit of work's session: shared by
    the sync and the async repository, which differ only in what they await."""

    model: type[A]
    key: str
    _session: S | None
    _uow: U | None
    #: How errors name the unit of work that binds it.
    _bound_by = "a SqlAlchemyUnitOfWork"

    def __init__(self, model: type[A], key: str) -> None:
        mapper = sqlalchemy.inspect(model, raiseerr=False)
        if not isinstance(mapper, Mapper):
            raise ConfigurationError(
                f"{model!r} is not mapped by SQLAlchemy: map it (declaratively, or with "
                "registry.map_imperatively) before declaring its repository"
            )
        prop = mapper.column_attrs.get(key)
        if prop is None:
            raise ConfigurationError(
                f"{model.__qualname__} has no mapped column attribute {key!r}; "
                f"it has: {', '.join(sorted(mapper.column_attrs.keys()))}"
            )
        self.model = model
        self.key = key
        # The primary key is looked up in the identity map first: no query
        # for an aggregate that this session has already loaded.
        self._by_identity = (
            len(mapper.primary_key) == 1
            and len(prop.columns) == 1
            and prop.columns[0] is mapper.primary_key[0]
        )
        self._session = None
        self._uow = None

    def __repr__(self) -> str:
        bound = "bound" if self._session is not None else "unbound"
        return f"<{type(self).__qualname__}({self.model.__qualname__}, key={self.key!r}) {bound}>"

    def bind(self: B, session: S, uow: U) -> B:
        """A copy of this repository that works in ``session`` and tracks into ``uow``.

        The unit of work calls it; the declaration itself is never changed, so
        one declaration serves every unit of work, thread and task.
        """
        bound = copy.copy(self)
        bound._session = session
        bound._uow = uow
        return bound

    @property
    def session(self) -> S:
        """The session of the unit of work this repository is bound to."""
        session = self._session
        if session is None:
            raise RuntimeError(
                f"{self!r} is not bound to a unit of work: use it as an attribute of "
                f"{self._bound_by} (uow.products), not directly"
            )
        return session

    def _track(self, aggregate: A) -> A:
        uow = self._uow
        assert uow is not None  # bound together with the session
        return uow.track(aggregate)

    def add(self, aggregate: A) -> None:
        """Add a new aggregate; it is inserted when the unit of work commits."""
        if not isinstance(aggregate, self.model):
            raise TypeError(
                f"this repository holds {self.model.__qualname__} aggregates, "
                f"not {type(aggregate).__qualname__}"
            )
        self.session.add(aggregate)
        self._track(aggregate)


class SqlAlchemyRepository(_Bound[A, Session, AbstractUnitOfWork]):
    """The aggregates of one mapped class, found by a unique key attribute.

    Declare it once per aggregate type and give it to
    :class:`~messagebus.sqlalchemy.SqlAlchemyUnitOfWork`, which binds a copy
    to each unit of work's session; handlers reach that copy as an attribute
    of the unit of work, with the interface of the fake repository of
    :mod:`messagebus.testing` (``add``, ``get``, ``list``)::

        products = SqlAlchemyRepository(Product, key="sku")
        uow = SqlAlchemyUnitOfWork(session_factory, products=products)
        product = uow.products.get("LAMP")

    Every aggregate it hands out or receives is tracked by the unit of work,
    so that the events it raises are collected after commit.

    For queries of your own, subclass it and run them with :meth:`first` or
    :meth:`all`, which track what they return::

        class ProductRepository(SqlAlchemyRepository[Product]):
            def get_by_batchref(self, reference: str) -> Product | None:
                return self.first(
                    select(Product).join(Product.batches).where(Batch.reference == reference)
                )

    Args:
        model: The class of the aggregate root; it must be mapped already.
        key: The name of the mapped attribute that :meth:`get` looks for:
            the primary key (then :meth:`get` uses the session's identity map)
            or any other unique column.

    Raises:
        ConfigurationError: ``model`` is not mapped, or has no mapped column ``key``.
    """

    def get(self, key: Hashable) -> A | None:
        """The aggregate whose key attribute equals ``key``, or None."""
        if self._by_identity:
            found = self.session.get(self.model, key)
            return None if found is None else self._track(found)
        return self.first(sqlalchemy.select(self.model).filter_by(**{self.key: key}))

    def list(self) -> builtins.list[A]:
        """Every aggregate of this type."""
        return self.all(sqlalchemy.select(self.model))

    def first(self, statement: Select[Any]) -> A | None:
        """The first aggregate that a select statement finds, tracked; or None."""
        found = self.session.scalars(statement.limit(1)).first()
        return None if found is None else self._track(found)

    def all(self, statement: Select[Any]) -> builtins.list[A]:
        """Every aggregate that a select statement finds, tracked."""
        return [self._track(found) for found in self.session.scalars(statement)]
