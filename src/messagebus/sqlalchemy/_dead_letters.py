"""Dead letters in a table of the application's database (SQLAlchemy 2.x), sync and async.

A letter's write is retried while it fails transiently; one that still cannot
be written goes to the store's spool file when it has one
(:class:`~messagebus.dead_letters.DeadLetterSpool`), from which
``messagebus dead-letters import`` brings it back.

A retrier claims each letter before it retries it (:meth:`claim`): the claim
is a lease (``claimed_by``, ``claimed_until``) taken by one conditional UPDATE;
on PostgreSQL the row is first locked with ``FOR UPDATE SKIP LOCKED``, so a
retrier never waits for another's claim. Two ``retry --all`` at once retry
each letter once.
"""

from __future__ import annotations

import builtins
import datetime as _dt
import logging
import os
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
import tenacity
from sqlalchemy.engine import Connection, Engine, RowMapping

from messagebus.dead_letters import DeadLetterNotFoundError, DeadLetterSpool, StoredDeadLetter
from messagebus.observe import DeadLetter
from messagebus.retry import RetryPolicy

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

__all__ = ["AsyncSqlAlchemyDeadLetterStore", "SqlAlchemyDeadLetterStore", "dead_letter_table"]

_log = logging.getLogger("messagebus")

#: The table's name unless the application gives another.
DEFAULT_TABLE = "messagebus_dead_letters"

_UTC = _dt.timezone.utc
# BIGINT ids where the database has them; SQLite numbers rows only with INTEGER.
_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def dead_letter_table(
    metadata: sa.MetaData, *, name: str = DEFAULT_TABLE, schema: str | None = None
) -> sa.Table:
    """The dead-letter table, defined in the application's ``MetaData``.

    Define it in the metadata the application creates (or migrates) its tables
    from, and give it to :class:`SqlAlchemyDeadLetterStore`::

        dead_letters = dead_letter_table(orm.metadata)
        store = SqlAlchemyDeadLetterStore(engine, table=dead_letters)

    Columns: ``id``; the letter (``message_name``, ``message_version``,
    ``message_id``, ``payload`` and ``message_metadata`` as JSON, ``handler``,
    ``error``, ``traceback``, ``attempts``, ``failed_at``); and its state
    (``resolved_at``, ``retries``, ``last_retried_at``, ``last_error``,
    ``last_traceback``); and the claim of a retrier at work on it
    (``claimed_by``, ``claimed_until``). Times are stored with their time zone, in UTC.
    """
    return sa.Table(
        name,
        metadata,
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column("message_name", sa.String(255), nullable=False, index=True),
        sa.Column("message_version", sa.Integer, nullable=False),
        sa.Column("message_id", sa.String(64), nullable=True, index=True),
        sa.Column("payload", sa.JSON, nullable=False),
        sa.Column("message_metadata", sa.JSON, nullable=False),
        sa.Column("handler", sa.String(500), nullable=False),
        sa.Column("error", sa.Text, nullable=False),
        sa.Column("traceback", sa.Text, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("failed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("resolved_at", sa.DateTime(timezone=True), nullable=True, index=True),
        sa.Column("retries", sa.Integer, nullable=False, default=0),
        sa.Column("last_retried_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.Text, nullable=True),
        sa.Column("last_traceback", sa.Text, nullable=True),
        sa.Column("claimed_by", sa.String(64), nullable=True),
        sa.Column("claimed_until", sa.DateTime(timezone=True), nullable=True),
        schema=schema,
    )


def _default_retry() -> RetryPolicy:
    # A letter is written once, after the handler's retries: worth a few more tries.
    return RetryPolicy(stop=tenacity.stop_after_attempt(5))


class _Statements:
    """The SQL of a dead-letter store, shared by the sync and the async one."""

    def __init__(self, table: sa.Table) -> None:
        self.table = table

    def insert(self, letter: DeadLetter) -> sa.Insert:
        message_id = letter.metadata.get("message_id")
        return self.table.insert().values(
            message_name=letter.message_name,
            message_version=letter.message_version,
            message_id=message_id if isinstance(message_id, str) else None,
            payload=letter.payload,
            message_metadata=letter.metadata,
            handler=letter.handler,
            error=letter.error,
            traceback=letter.traceback,
            attempts=letter.attempts,
            failed_at=_to_utc(letter.failed_at),
            retries=0,
        )

    def contains(self, letter: DeadLetter) -> sa.Select[Any]:
        c = self.table.c
        message_id = letter.metadata.get("message_id")
        same_id = (
            c.message_id == message_id if isinstance(message_id, str) else c.message_id.is_(None)
        )
        return (
            sa.select(c.id)
            .where(
                same_id,
                c.handler == letter.handler,
                c.message_name == letter.message_name,
                c.failed_at == _to_utc(letter.failed_at),
            )
            .limit(1)
        )

    def list(
        self,
        message_name: str | None,
        handler: str | None,
        resolved: bool | None,
        limit: int | None,
    ) -> sa.Select[Any]:
        query = sa.select(self.table).where(
            *self.filters(message_name=message_name, handler=handler, resolved=resolved)
        )
        query = query.order_by(self.table.c.id)
        return query if limit is None else query.limit(limit)

    def get(self, letter_id: int) -> sa.Select[Any]:
        return sa.select(self.table).where(self.table.c.id == letter_id)

    def resolved(self, letter_id: int, at: _dt.datetime) -> sa.Update:
        at = _to_utc(at)
        return self.update(
            letter_id, resolved_at=at, last_retried_at=at, retries=self.table.c.retries + 1
        )

    def retry_failed(
        self, letter_id: int, error: str, traceback: str, at: _dt.datetime
    ) -> sa.Update:
        return self.update(
            letter_id,
            last_retried_at=_to_utc(at),
            last_error=error,
            last_traceback=traceback,
            retries=self.table.c.retries + 1,
        )

    def update(self, letter_id: int, **values: Any) -> sa.Update:
        # A retry's outcome ends its claim.
        return (
            self.table.update()
            .where(self.table.c.id == letter_id)
            .values(claimed_by=None, claimed_until=None, **values)
        )

    def claim(
        self, dialect: str, letter_id: int, owner: str, now: _dt.datetime, until: _dt.datetime
    ) -> sa.Update:
        c = self.table.c
        claimable = sa.and_(
            c.id == letter_id,
            c.resolved_at.is_(None),
            sa.or_(c.claimed_until.is_(None), c.claimed_until <= _to_utc(now)),
        )
        if dialect == "postgresql":
            # Skip a row another retrier is claiming right now instead of waiting for it.
            locked = sa.select(c.id).where(claimable).with_for_update(skip_locked=True)
            claimable = c.id.in_(locked.scalar_subquery())
        return (
            self.table.update()
            .where(claimable)
            .values(claimed_by=owner, claimed_until=_to_utc(until))
        )

    def release(self, letter_id: int, owner: str) -> sa.Update:
        c = self.table.c
        return (
            self.table.update()
            .where(c.id == letter_id, c.claimed_by == owner)
            .values(claimed_by=None, claimed_until=None)
        )

    def purge(
        self, ids: Iterable[int] | None, message_name: str | None, resolved: bool | None
    ) -> sa.Delete:
        conditions = self.filters(message_name=message_name, handler=None, resolved=resolved)
        if ids is not None:
            conditions.append(self.table.c.id.in_(list(ids)))
        return self.table.delete().where(*conditions)

    def filters(
        self, *, message_name: str | None, handler: str | None, resolved: bool | None
    ) -> builtins.list[sa.ColumnElement[bool]]:
        c = self.table.c
        conditions: builtins.list[sa.ColumnElement[bool]] = []
        if message_name is not None:
            conditions.append(c.message_name == message_name)
        if handler is not None:
            conditions.append(c.handler == handler)
        if resolved is True:
            conditions.append(c.resolved_at.is_not(None))
        elif resolved is False:
            conditions.append(c.resolved_at.is_(None))
        return conditions


def _spool_of(spool: DeadLetterSpool | str | os.PathLike[str] | None) -> DeadLetterSpool | None:
    if spool is None or isinstance(spool, DeadLetterSpool):
        return spool
    return DeadLetterSpool(spool)


def _kept_in_spool(spool: DeadLetterSpool | None, letter: DeadLetter, error: Exception) -> None:
    """The letter could not be written: keep it in the spool, or raise."""
    if spool is None:
        raise error
    spool.append(letter)  # raises when even that fails: the bus then logs the letter
    _log.warning(
        "messagebus: dead_letter_spooled: %s on %s could not be stored (%s: %s); kept in %s "
        "for `messagebus dead-letters import`",
        letter.handler,
        letter.message_name,
        type(error).__qualname__,
        error,
        spool.path,
    )


class SqlAlchemyDeadLetterStore:
    """Keeps dead letters in a table of the application's database.

    Give it to the bus, and to :class:`messagebus.dead_letters.DeadLetters`::

        store = SqlAlchemyDeadLetterStore(engine, spool="dead-letters.spool")
        store.create_table()            # or define it in your metadata: dead_letter_table()
        bus = MessageBus(registry, uow=..., dead_letters=store)
        DeadLetters(store, bus).retry_all()

    Each call is its own short transaction on ``engine``, apart from the
    handler's unit of work: a letter is written after that unit of work has
    rolled back, and it is kept even so. A write that fails transiently is
    retried (``retry``); a letter that still cannot be written is appended to
    the ``spool`` file when one is given (and the write counts as done), else
    the error is raised and the bus logs the letter as ``dead_letter_store_failed``.

    It blocks while the database answers: an :class:`~messagebus.AsyncMessageBus`
    takes :class:`AsyncSqlAlchemyDeadLetterStore` instead.

    Args:
        engine: The application's database.
        table: The table, made by :func:`dead_letter_table` in the
            application's metadata; by default one named
            ``messagebus_dead_letters`` in a metadata of its own.
        retry: When to retry a failed write (by default up to 5 attempts of
            transient failures, a few tens of milliseconds apart).
        spool: A file where letters that cannot be written are kept (JSON lines).
        sleep: How to wait between attempts (tests pass their own).
    """

    #: Its writes wait for the database: refused by an async bus.
    blocking = True

    def __init__(
        self,
        engine: Engine,
        *,
        table: sa.Table | None = None,
        retry: RetryPolicy | None = None,
        spool: DeadLetterSpool | str | os.PathLike[str] | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.engine = engine
        self.table = table if table is not None else dead_letter_table(sa.MetaData())
        self.spool = _spool_of(spool)
        self._sql = _Statements(self.table)
        self._retry = retry if retry is not None else _default_retry()
        self._sleep = sleep

    def create_table(self) -> None:
        """Create the table unless it exists (applications with migrations create it there)."""
        self.table.create(self.engine, checkfirst=True)

    def add(self, letter: DeadLetter) -> None:
        """Keep a dead letter, pending: written (retried while that fails transiently),
        or else kept in the spool. Raises if it can be kept in neither."""
        policy = self._retry
        retrying = tenacity.Retrying(
            stop=policy.stop, wait=policy.wait, retry=policy.retry, sleep=self._sleep, reraise=True
        )
        try:
            retrying(self._insert, letter)
        except Exception as exc:
            _kept_in_spool(self.spool, letter, exc)

    def _insert(self, letter: DeadLetter) -> None:
        with self.engine.begin() as connection:
            connection.execute(self._sql.insert(letter))

    def contains(self, letter: DeadLetter) -> bool:
        """Whether this letter (its message id, handler and time) is stored already."""
        with self.engine.connect() as connection:
            return connection.execute(self._sql.contains(letter)).first() is not None

    def list(
        self,
        *,
        message_name: str | None = None,
        handler: str | None = None,
        resolved: bool | None = False,
        limit: int | None = None,
    ) -> builtins.list[StoredDeadLetter]:
        """Letters, oldest first: pending (``resolved=False``), resolved (True) or
        both (None); of one message name and handler when given."""
        query = self._sql.list(message_name, handler, resolved, limit)
        with self.engine.connect() as connection:
            return [_stored(row) for row in connection.execute(query).mappings()]

    def get(self, letter_id: int) -> StoredDeadLetter | None:
        """The letter with this id, or None."""
        with self.engine.connect() as connection:
            row = connection.execute(self._sql.get(letter_id)).mappings().first()
        return None if row is None else _stored(row)

    def claim(
        self, letter_id: int, *, owner: str, now: _dt.datetime, until: _dt.datetime
    ) -> StoredDeadLetter | None:
        """Claim a pending letter for a retry until ``until``: the letter, or None when it
        is resolved or another retrier holds an unexpired claim on it.

        Raises:
            DeadLetterNotFoundError: No letter has this id (it was purged).
        """
        with self.engine.begin() as connection:
            dialect = connection.dialect.name
            claimed = connection.execute(
                self._sql.claim(dialect, letter_id, owner, now, until)
            ).rowcount
            row = connection.execute(self._sql.get(letter_id)).mappings().first()
        return _claimed(letter_id, claimed, row)

    def release(self, letter_id: int, *, owner: str) -> None:
        """Give up a claim without a retry's outcome."""
        with self.engine.begin() as connection:
            connection.execute(self._sql.release(letter_id, owner))

    def mark_resolved(self, letter_id: int, *, at: _dt.datetime) -> None:
        """A retry succeeded at ``at``: count it and mark the letter resolved."""
        self._update(self._sql.resolved(letter_id, at), letter_id)

    def mark_retry_failed(
        self, letter_id: int, *, error: str, traceback: str, at: _dt.datetime
    ) -> None:
        """A retry failed at ``at``: count it and keep its error; the letter stays pending."""
        self._update(self._sql.retry_failed(letter_id, error, traceback, at), letter_id)

    def purge(
        self,
        *,
        ids: Iterable[int] | None = None,
        message_name: str | None = None,
        resolved: bool | None = None,
    ) -> int:
        """Delete the letters that match every filter given (all when none is).

        Returns how many were deleted.
        """
        with self.engine.begin() as connection:
            result = connection.execute(self._sql.purge(ids, message_name, resolved))
        return int(result.rowcount)

    def _update(self, statement: sa.Update, letter_id: int) -> None:
        with self.engine.begin() as connection:
            result = connection.execute(statement)
        if result.rowcount == 0:
            raise DeadLetterNotFoundError(letter_id)

    def __repr__(self) -> str:
        return f"SqlAlchemyDeadLetterStore({self.engine!r}, table={self.table.fullname!r})"


class AsyncSqlAlchemyDeadLetterStore:
    """:class:`SqlAlchemyDeadLetterStore` on an ``AsyncEngine``, for an
    :class:`~messagebus.AsyncMessageBus`: every method is awaited, and the event
    loop goes on while the database answers::

        engine = create_async_engine("postgresql+psycopg://...")  # or sqlite+aiosqlite://
        store = AsyncSqlAlchemyDeadLetterStore(engine, spool="dead-letters.spool")
        await store.create_table()
        bus = AsyncMessageBus(registry, uow=..., dead_letters=store)
        await AsyncDeadLetters(store, bus).retry_all()

    The same table, retries and spool as the sync store; its arguments are the
    same, with an awaitable ``sleep``.
    """

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        table: sa.Table | None = None,
        retry: RetryPolicy | None = None,
        spool: DeadLetterSpool | str | os.PathLike[str] | None = None,
        sleep: Callable[[float], Awaitable[None]] | None = None,
    ) -> None:
        import asyncio

        self.engine = engine
        self.table = table if table is not None else dead_letter_table(sa.MetaData())
        self.spool = _spool_of(spool)
        self._sql = _Statements(self.table)
        self._retry = retry if retry is not None else _default_retry()
        self._sleep = sleep if sleep is not None else asyncio.sleep

    async def create_table(self) -> None:
        """Create the table unless it exists (applications with migrations create it there)."""
        async with self.engine.begin() as connection:
            await connection.run_sync(self._create)

    def _create(self, connection: Connection) -> None:
        self.table.create(connection, checkfirst=True)

    async def add(self, letter: DeadLetter) -> None:
        """As :meth:`SqlAlchemyDeadLetterStore.add`, awaited."""
        policy = self._retry
        retrying = tenacity.AsyncRetrying(
            stop=policy.stop, wait=policy.wait, retry=policy.retry, sleep=self._sleep, reraise=True
        )
        try:
            await retrying(self._insert, letter)
        except Exception as exc:
            _kept_in_spool(self.spool, letter, exc)

    async def _insert(self, letter: DeadLetter) -> None:
        async with self.engine.begin() as connection:
            await connection.execute(self._sql.insert(letter))

    async def contains(self, letter: DeadLetter) -> bool:
        """As :meth:`SqlAlchemyDeadLetterStore.contains`, awaited."""
        async with self.engine.connect() as connection:
            return (await connection.execute(self._sql.contains(letter))).first() is not None

    async def list(
        self,
        *,
        message_name: str | None = None,
        handler: str | None = None,
        resolved: bool | None = False,
        limit: int | None = None,
    ) -> builtins.list[StoredDeadLetter]:
        """As :meth:`SqlAlchemyDeadLetterStore.list`, awaited."""
        query = self._sql.list(message_name, handler, resolved, limit)
        async with self.engine.connect() as connection:
            result = await connection.execute(query)
            return [_stored(row) for row in result.mappings()]

    async def get(self, letter_id: int) -> StoredDeadLetter | None:
        """As :meth:`SqlAlchemyDeadLetterStore.get`, awaited."""
        async with self.engine.connect() as connection:
            row = (await connection.execute(self._sql.get(letter_id))).mappings().first()
        return None if row is None else _stored(row)

    async def claim(
        self, letter_id: int, *, owner: str, now: _dt.datetime, until: _dt.datetime
    ) -> StoredDeadLetter | None:
        """As :meth:`SqlAlchemyDeadLetterStore.claim`, awaited."""
        async with self.engine.begin() as connection:
            dialect = connection.dialect.name
            claimed = (
                await connection.execute(self._sql.claim(dialect, letter_id, owner, now, until))
            ).rowcount
            row = (await connection.execute(self._sql.get(letter_id))).mappings().first()
        return _claimed(letter_id, claimed, row)

    async def release(self, letter_id: int, *, owner: str) -> None:
        """As :meth:`SqlAlchemyDeadLetterStore.release`, awaited."""
        async with self.engine.begin() as connection:
            await connection.execute(self._sql.release(letter_id, owner))

    async def mark_resolved(self, letter_id: int, *, at: _dt.datetime) -> None:
        """As :meth:`SqlAlchemyDeadLetterStore.mark_resolved`, awaited."""
        await self._update(self._sql.resolved(letter_id, at), letter_id)

    async def mark_retry_failed(
        self, letter_id: int, *, error: str, traceback: str, at: _dt.datetime
    ) -> None:
        """As :meth:`SqlAlchemyDeadLetterStore.mark_retry_failed`, awaited."""
        await self._update(self._sql.retry_failed(letter_id, error, traceback, at), letter_id)

    async def purge(
        self,
        *,
        ids: Iterable[int] | None = None,
        message_name: str | None = None,
        resolved: bool | None = None,
    ) -> int:
        """As :meth:`SqlAlchemyDeadLetterStore.purge`, awaited."""
        async with self.engine.begin() as connection:
            result = await connection.execute(self._sql.purge(ids, message_name, resolved))
        return int(result.rowcount)

    async def _update(self, statement: sa.Update, letter_id: int) -> None:
        async with self.engine.begin() as connection:
            result = await connection.execute(statement)
        if result.rowcount == 0:
            raise DeadLetterNotFoundError(letter_id)

    def __repr__(self) -> str:
        return f"AsyncSqlAlchemyDeadLetterStore({self.engine!r}, table={self.table.fullname!r})"


def _claimed(letter_id: int, claimed: int, row: RowMapping | None) -> StoredDeadLetter | None:
    if row is None:
        raise DeadLetterNotFoundError(letter_id)
    return _stored(row) if claimed else None


def _to_utc(value: _dt.datetime) -> _dt.datetime:
    if value.tzinfo is None:
        raise ValueError(f"dead-letter times must be timezone-aware, not {value!r}")
    return value.astimezone(_UTC)


def _from_db(value: _dt.datetime | None) -> _dt.datetime | None:
    # SQLite keeps no time zone: what was written there was UTC.
    if value is None:
        return None
    if value.tzinfo is None:
        return value.replace(tzinfo=_UTC)
    return value.astimezone(_UTC)


def _stored(row: RowMapping) -> StoredDeadLetter:
    failed_at = _from_db(row["failed_at"])
    assert failed_at is not None  # NOT NULL
    return StoredDeadLetter(
        id=int(row["id"]),
        letter=DeadLetter(
            message_name=row["message_name"],
            message_version=row["message_version"],
            payload=row["payload"],
            metadata=row["message_metadata"],
            handler=row["handler"],
            error=row["error"],
            traceback=row["traceback"],
            attempts=row["attempts"],
            failed_at=failed_at,
        ),
        resolved_at=_from_db(row["resolved_at"]),
        retries=row["retries"],
        last_retried_at=_from_db(row["last_retried_at"]),
        last_error=row["last_error"],
        last_traceback=row["last_traceback"],
    )
