"""The transactional outbox: messages that leave the process, kept with the change.

A unit of work writes one row per outgoing message in the same transaction as
the change that raised it (:meth:`SqlAlchemyUnitOfWork.stage_outgoing`): a
rolled-back attempt writes nothing. A relay (:mod:`messagebus.relay`) then
claims pending rows, publishes them and marks them sent, through
:class:`SqlAlchemyOutbox` (or :class:`AsyncSqlAlchemyOutbox`).

**Claims.** A batch is claimed in one transaction that stays open while the
rows are published, and that marks them sent before it commits. A relay that
dies before it marks them leaves them pending (its transaction is rolled back
with its connection): the next claim publishes them again (at least once).

On PostgreSQL several relays may run at once. A claim takes a transaction
advisory lock per partition key (``pg_try_advisory_xact_lock``), for the keys
of the oldest rows it will publish and no others, and takes only rows of the
keys it locked, so two relays never publish rows of one key at the same time;
keys another relay holds are skipped, not waited for. Rows of a
key are taken in the order they were written, from the oldest pending one; a
key whose oldest pending row waits for a retry is skipped as a whole, so that
no later row overtakes it. On SQLite, run one relay.

**Failures.** A row that the broker refuses is kept pending with its error,
and tried again after a growing delay; after ``max_tries`` it is *parked*: left
aside (it no longer holds its key back) until an operator retries it
(:meth:`SqlAlchemyOutbox.retry_parked`, ``messagebus relay retry``).
"""

from __future__ import annotations

import builtins
import datetime as _dt
import functools
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import attrs
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Connection, Engine, RowMapping
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from messagebus.transport import OutgoingMessage

__all__ = [
    "AsyncSqlAlchemyOutbox",
    "Claim",
    "OutboxEntry",
    "SqlAlchemyOutbox",
    "outbox_table",
]

#: The table's name unless the application gives another.
DEFAULT_TABLE = "messagebus_outbox"

_UTC = _dt.timezone.utc
_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def outbox_table(
    metadata: sa.MetaData, *, name: str = DEFAULT_TABLE, schema: str | None = None
) -> sa.Table:
    """The outbox table, defined in the application's ``MetaData``.

    Define it in the metadata the application creates (or migrates) its tables
    from, and give it to the units of work and to the relay's store::

        outbox = outbox_table(orm.metadata)
        uow = lambda: SqlAlchemyUnitOfWork(session_factory, outbox_table=outbox, ...)
        store = SqlAlchemyOutbox(engine, table=outbox)

    Columns: ``id`` (the order rows were written in); the message
    (``message_id``, ``name``, ``version``, ``payload`` and ``message_metadata``
    as JSON text, ``destination``, ``partition_key``); and its state
    (``created_at``, ``available_at``, ``sent_at``, ``tries``, ``last_error``,
    ``parked``). Times are aware, in UTC. Two partial indexes on the pending
    rows serve the claim: by ``id``, and by ``available_at``.
    """
    table = sa.Table(
        name,
        metadata,
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column("message_id", sa.String(64), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("payload", sa.Text, nullable=False),
        sa.Column("message_metadata", sa.Text, nullable=False),
        sa.Column("destination", sa.String(255), nullable=False),
        sa.Column("partition_key", sa.String(255), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("available_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True, index=True),
        sa.Column("tries", sa.Integer, nullable=False, default=0),
        sa.Column("last_error", sa.Text, nullable=True),
        sa.Column("parked", sa.Boolean, nullable=False, default=False),
        schema=schema,
    )
    pending = _pending(table)
    sa.Index(f"{name}_pending", table.c.id, postgresql_where=pending, sqlite_where=pending)
    sa.Index(
        f"{name}_pending_available",
        table.c.available_at,
        postgresql_where=pending,
        sqlite_where=pending,
    )
    return table


@functools.cache
def default_outbox_table() -> sa.Table:
    """The table used when none is given: ``messagebus_outbox``."""
    return outbox_table(sa.MetaData())


def _pending(table: sa.FromClause) -> sa.ColumnElement[bool]:
    # The same expression in the partial indexes and in the queries, so that
    # the planners match them.
    return sa.and_(table.c.sent_at.is_(None), table.c.parked == sa.false())


def _now() -> _dt.datetime:
    return _dt.datetime.now(_UTC)


# -- writing: the unit of work's side --------------------------------------------------


def insert_statement(
    table: sa.Table, messages: Sequence[OutgoingMessage], now: _dt.datetime
) -> tuple[sa.Insert, list[dict[str, Any]]]:
    """The insert of ``messages`` (in their order), and its parameters."""
    rows = [
        {
            "message_id": message.message_id,
            "name": message.name,
            "version": message.version,
            "payload": message.payload,
            "message_metadata": message.metadata,
            "destination": message.destination,
            "partition_key": message.key,
            "created_at": now,
            "available_at": now,
            "tries": 0,
            "parked": False,
        }
        for message in messages
    ]
    return table.insert(), rows


def notify_channel(table: sa.Table) -> str:
    """The PostgreSQL ``NOTIFY`` channel a commit of new rows signals: the table's name."""
    return table.fullname


def notify_statement(table: sa.Table) -> sa.TextClause:
    """``pg_notify`` in the writer's transaction: PostgreSQL delivers it on commit."""
    return sa.text("SELECT pg_notify(:channel, '')").bindparams(channel=notify_channel(table))


#: The longest text each column takes (what a database would refuse at commit,
#: failing the change with it, is refused when staged instead).
_LIMITS = {"message_id": 64, "name": 255, "destination": 255, "key": 255}


def check_messages(messages: Sequence[OutgoingMessage]) -> None:
    """Refuse what is not an outgoing message the table can keep, before anything
    is written.

    Raises:
        TypeError: Not an ``OutgoingMessage``.
        ValueError: A field is longer than its column, or a destination is empty.
    """
    for message in messages:
        if not isinstance(message, OutgoingMessage):
            raise TypeError(
                f"stage_outgoing takes OutgoingMessage values, not {type(message).__qualname__}"
            )
        for field, limit in _LIMITS.items():
            value = getattr(message, field)
            if len(value) > limit:
                raise ValueError(
                    f"the {field} of outgoing message {message.message_id!r} is longer than "
                    f"{limit} characters: {value[:40]!r}..."
                )
        if not message.destination:
            raise ValueError(f"outgoing message {message.message_id!r} has no destination")


# -- reading: the relay's side ------------------------------------------------------------


@attrs.frozen
class OutboxEntry:
    """A row of the outbox, as the relay and an operator see it.

    Attributes:
        id: The row's id: rows are published in id order within a key.
        message: The message it sends.
        created_at: When it was written.
        tries: How many times publishing it failed.
        last_error: The last failure, if any.
        parked: Whether it is parked (left aside after too many failures).
        sent_at: When it was published, or None.
    """

    id: int
    message: OutgoingMessage
    created_at: _dt.datetime
    tries: int
    last_error: str | None
    parked: bool
    sent_at: _dt.datetime | None


@attrs.define
class Claim:
    """A batch of rows claimed by one relay, in the order to publish them.

    It holds the claim's connection (and, on PostgreSQL, the transaction
    holding its keys' locks) until it is marked or released.

    Attributes:
        entries: The rows claimed, in id order.
    """

    entries: list[OutboxEntry]
    _connection: Any = attrs.field(alias="connection", repr=False)

    @property
    def messages(self) -> list[OutgoingMessage]:
        """The messages of the rows, in order."""
        return [entry.message for entry in self.entries]


def _from_db(value: _dt.datetime | None) -> _dt.datetime | None:
    if value is None:
        return None
    if value.tzinfo is None:  # SQLite keeps no time zone: what was written there was UTC
        return value.replace(tzinfo=_UTC)
    return value.astimezone(_UTC)


def _entry(row: RowMapping) -> OutboxEntry:
    created_at = _from_db(row["created_at"])
    assert created_at is not None  # NOT NULL
    return OutboxEntry(
        id=int(row["id"]),
        message=OutgoingMessage(
            message_id=row["message_id"],
            name=row["name"],
            version=int(row["version"]),
            payload=row["payload"],
            metadata=row["message_metadata"],
            destination=row["destination"],
            key=row["partition_key"],
        ),
        created_at=created_at,
        tries=int(row["tries"]),
        last_error=row["last_error"],
        parked=bool(row["parked"]),
        sent_at=_from_db(row["sent_at"]),
    )


class _Queries:
    """The statements of both stores: built once per table, run by either."""

    def __init__(
        self,
        table: sa.Table,
        *,
        postgres: bool,
        max_tries: int,
        retry_delay: Callable[[int], float],
    ):
        if max_tries < 1:
            raise ValueError(f"max_tries must be at least 1, not {max_tries}")
        self.table = table
        self.postgres = postgres
        self.max_tries = max_tries
        self.retry_delay = retry_delay
        # Advisory locks take two int4: the first names this table, the second the key.
        self.lock_space = zlib.crc32(table.fullname.encode()) & 0x7FFFFFFF
        self._build()

    def _takeable(self, *columns: Any) -> sa.Select[Any]:
        """Pending rows with no pending row of their key at or before them waiting for
        a retry (``available_at`` after the bound ``now``): what may be published now
        without overtaking anything.

        The keys that wait, each with its first waiting row, are few (rows the
        broker refused): found once, through the index on ``available_at``,
        and joined, rather than looked for row by row.
        """
        t = self.table
        other = t.alias("waiting_rows")
        waiting = (
            sa.select(other.c.partition_key, sa.func.min(other.c.id).label("first"))
            .where(_pending(other), other.c.available_at > sa.bindparam("now"))
            .group_by(other.c.partition_key)
            .subquery("waiting")
        )
        joined = t.outerjoin(waiting, waiting.c.partition_key == t.c.partition_key)
        return (
            sa.select(*columns)
            .select_from(joined)
            .where(_pending(t), sa.or_(waiting.c.first.is_(None), t.c.id < waiting.c.first))
        )

    def _build(self) -> None:
        """The claim's statements, built once: only their parameters change."""
        t = self.table
        limit = sa.bindparam("limit", type_=sa.Integer)
        window = sa.bindparam("window", type_=sa.Integer)
        # PostgreSQL: the keys of the oldest takeable rows (a window of two batches),
        # in the rows' order.
        self._candidates = self._takeable(t.c.partition_key).order_by(t.c.id).limit(window)
        # ... and the advisory locks of some of them, each tried (never waited for).
        key = sa.func.unnest(sa.bindparam("keys", type_=postgresql.ARRAY(sa.String)))
        candidate = sa.select(key.label("k")).subquery()
        self._try_locks = sa.select(candidate.c.k).where(
            sa.func.pg_try_advisory_xact_lock(self.lock_space, sa.func.hashtext(candidate.c.k))
        )
        rows = self._takeable(*t.c)
        self._rows = rows.order_by(t.c.id).limit(limit)
        # PostgreSQL: keys and ids as one array parameter each, not one per value.
        key_array = sa.bindparam("keys", type_=postgresql.ARRAY(sa.String))
        self._rows_of_keys = (
            rows.where(t.c.partition_key == sa.any_(key_array)).order_by(t.c.id).limit(limit)
        )
        if self.postgres:
            chosen = t.c.id == sa.any_(sa.bindparam("ids", type_=postgresql.ARRAY(sa.BigInteger)))
        else:
            chosen = t.c.id.in_(sa.bindparam("ids", expanding=True))
        self._mark_sent = (
            t.update().where(chosen, t.c.sent_at.is_(None)).values(sent_at=sa.bindparam("sent"))
        )

    def candidates(self, now: _dt.datetime, limit: int) -> tuple[sa.Select[Any], dict[str, Any]]:
        """PostgreSQL: the keys of the oldest takeable rows, a key a row, in order."""
        return self._candidates, {"now": now, "window": limit * 2}

    def try_locks(self, keys: Sequence[str]) -> tuple[sa.Select[Any], dict[str, Any]]:
        """PostgreSQL: lock those of ``keys`` no other relay holds; selects them."""
        return self._try_locks, {"keys": list(keys)}

    def rows(
        self, now: _dt.datetime, keys: Sequence[str] | None, limit: int
    ) -> tuple[sa.Select[Any], dict[str, Any]]:
        if keys is None:
            return self._rows, {"now": now, "limit": limit}
        return self._rows_of_keys, {"now": now, "limit": limit, "keys": list(keys)}

    def mark_sent(self, ids: Sequence[int], now: _dt.datetime) -> tuple[sa.Update, dict[str, Any]]:
        return self._mark_sent, {"ids": list(ids), "sent": now}

    def failure(self, entry: OutboxEntry, error: str, now: _dt.datetime) -> sa.Update:
        t = self.table
        tries = entry.tries + 1
        delay = _dt.timedelta(seconds=max(0.0, float(self.retry_delay(tries))))
        return (
            t.update()
            .where(t.c.id == entry.id, t.c.sent_at.is_(None))
            .values(
                tries=tries,
                last_error=error[:10_000],
                available_at=now + delay,
                parked=tries >= self.max_tries,
            )
        )

    def parked(self, limit: int | None) -> sa.Select[Any]:
        t = self.table
        query = sa.select(t).where(t.c.sent_at.is_(None), t.c.parked == sa.true())
        query = query.order_by(t.c.id)
        return query if limit is None else query.limit(limit)

    def retry_parked(self, ids: Iterable[int] | None, now: _dt.datetime) -> sa.Update:
        t = self.table
        query = t.update().where(t.c.sent_at.is_(None), t.c.parked == sa.true())
        if ids is not None:
            query = query.where(t.c.id.in_(list(ids)))
        return query.values(parked=False, tries=0, available_at=now)

    def delete_sent(self, before: _dt.datetime) -> sa.Delete:
        t = self.table
        return t.delete().where(t.c.sent_at.is_not(None), t.c.sent_at < before)

    def count_pending(self) -> sa.Select[Any]:
        t = self.table
        return sa.select(sa.func.count()).select_from(t).where(_pending(t))


class _KeyPicker:
    """Chooses which keys a PostgreSQL claim tries to lock, a few at a time.

    It walks the keys of the oldest takeable rows, in the rows' order: a chunk
    is the keys not tried yet among the first ``limit`` rows whose keys are not
    held by another relay. So a relay locks the keys of the rows it will
    publish, and no more (other relays may take the rest meanwhile); a key
    another relay holds is skipped, and the walk goes further.
    """

    def __init__(self, row_keys: Iterable[str], limit: int) -> None:
        self._row_keys = list(row_keys)
        self._limit = limit
        self._tried: set[str] = set()
        self._held: set[str] = set()
        self.keys: list[str] = []

    def next_chunk(self) -> list[str]:
        chunk: dict[str, None] = {}
        rows = 0
        for key in self._row_keys:
            if key in self._held:
                continue
            if rows == self._limit:
                break
            rows += 1
            if key not in self._tried:
                chunk[key] = None
        return list(chunk)

    def took(self, tried: Iterable[str], locked: Iterable[str]) -> None:
        locked = set(locked)
        for key in tried:
            self._tried.add(key)
            if key in locked:
                self.keys.append(key)
            else:
                self._held.add(key)


def _default_retry_delay(tries: int) -> float:
    """Seconds before a failed row is tried again: 1, 2, 4, ... up to 5 minutes."""
    return float(min(300, 2 ** (tries - 1)))


def _failures_by_id(failures: Mapping[int, str], entries: Sequence[OutboxEntry]) -> list[Any]:
    return [(entry, failures[entry.id]) for entry in entries if entry.id in failures]


class SqlAlchemyOutbox:
    """The outbox table as a relay uses it: claim, mark sent, record failures.

    Args:
        engine: The application's database (PostgreSQL or SQLite).
        table: The outbox table (:func:`outbox_table`); by default one named
            ``messagebus_outbox`` in a metadata of its own.
        max_tries: Failures after which a row is parked.
        retry_delay: Seconds before a row that failed ``n`` times is tried
            again, as a function of ``n`` (default: doubling from 1 s, at most
            5 minutes).
        clock: The current time (aware); a test may give its own.
    """

    def __init__(
        self,
        engine: Engine,
        *,
        table: sa.Table | None = None,
        max_tries: int = 10,
        retry_delay: Callable[[int], float] = _default_retry_delay,
        clock: Callable[[], _dt.datetime] = _now,
    ) -> None:
        self.engine = engine
        self.table = table if table is not None else default_outbox_table()
        self.clock = clock
        self._postgres = engine.dialect.name == "postgresql"
        self._queries = _Queries(
            self.table, postgres=self._postgres, max_tries=max_tries, retry_delay=retry_delay
        )

    @property
    def max_tries(self) -> int:
        """Failures after which a row is parked."""
        return self._queries.max_tries

    @property
    def notify_channel(self) -> str | None:
        """The ``LISTEN`` channel that signals new rows (PostgreSQL), or None."""
        return notify_channel(self.table) if self._postgres else None

    def create_table(self) -> None:
        """Create the table and its indexes unless they exist."""
        self.table.create(self.engine, checkfirst=True)

    def claim(self, limit: int) -> Claim:
        """Claim up to ``limit`` rows to publish, in order (an empty claim when none)."""
        connection = self.engine.connect()
        if self._postgres:  # each statement sees what committed before it: see _claim
            connection = connection.execution_options(isolation_level="READ COMMITTED")
        try:
            entries = self._claim(connection, limit)
        except BaseException:
            connection.close()
            raise
        return Claim(entries, connection=connection)

    def _claim(self, connection: Connection, limit: int) -> list[OutboxEntry]:
        # On PostgreSQL: the oldest keys no other relay holds (locked until this
        # transaction ends), as many as the batch needs, then their rows, read by a
        # statement that starts after the locks were taken: it sees every row the
        # key's previous holder marked.
        q, now = self._queries, self.clock()
        keys: list[str] | None = None
        if self._postgres:
            picker = _KeyPicker(connection.execute(*q.candidates(now, limit)).scalars(), limit)
            while chunk := picker.next_chunk():
                picker.took(chunk, connection.execute(*q.try_locks(chunk)).scalars())
            keys = picker.keys
            if not keys:
                return []
        rows = connection.execute(*q.rows(now, keys, limit)).mappings()
        return [_entry(row) for row in rows]

    def finish(self, claim: Claim, sent: Sequence[int], failures: Mapping[int, str]) -> None:
        """Mark the rows ``sent`` as published and record ``failures`` (row id ->
        error), then end the claim: one commit."""
        connection: Connection = claim._connection
        try:
            now = self.clock()
            if sent:
                connection.execute(*self._queries.mark_sent(sent, now))
            for entry, error in _failures_by_id(failures, claim.entries):
                connection.execute(self._queries.failure(entry, error, now))
            connection.commit()
        finally:
            connection.close()

    def release(self, claim: Claim) -> None:
        """End a claim without marking anything (its rows stay pending); nothing
        happens if it has ended already."""
        claim._connection.close()

    def pending(self) -> int:
        """How many rows wait to be published (parked ones not counted)."""
        with self.engine.connect() as connection:
            return int(connection.execute(self._queries.count_pending()).scalar_one())

    def list_parked(self, *, limit: int | None = None) -> builtins.list[OutboxEntry]:
        """The parked rows, oldest first."""
        with self.engine.connect() as connection:
            rows = connection.execute(self._queries.parked(limit)).mappings()
            return [_entry(row) for row in rows]

    def retry_parked(self, ids: Iterable[int] | None = None) -> int:
        """Put parked rows (those of ``ids``, or all) back in line; returns how many."""
        with self.engine.begin() as connection:
            result = connection.execute(self._queries.retry_parked(ids, self.clock()))
        return int(result.rowcount)

    def delete_sent(self, older_than: _dt.timedelta) -> int:
        """Delete rows sent more than ``older_than`` ago; returns how many."""
        with self.engine.begin() as connection:
            result = connection.execute(self._queries.delete_sent(self.clock() - older_than))
        return int(result.rowcount)

    def __repr__(self) -> str:
        return f"SqlAlchemyOutbox({self.engine!r}, table={self.table.fullname!r})"


class AsyncSqlAlchemyOutbox:
    """:class:`SqlAlchemyOutbox` on an ``AsyncEngine``, for the asyncio relay.

    The same claims, statements and arguments; its methods are awaited.
    """

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        table: sa.Table | None = None,
        max_tries: int = 10,
        retry_delay: Callable[[int], float] = _default_retry_delay,
        clock: Callable[[], _dt.datetime] = _now,
    ) -> None:
        self.engine = engine
        self.table = table if table is not None else default_outbox_table()
        self.clock = clock
        self._postgres = engine.dialect.name == "postgresql"
        self._queries = _Queries(
            self.table, postgres=self._postgres, max_tries=max_tries, retry_delay=retry_delay
        )

    @property
    def max_tries(self) -> int:
        """Failures after which a row is parked."""
        return self._queries.max_tries

    @property
    def notify_channel(self) -> str | None:
        """The ``LISTEN`` channel that signals new rows (PostgreSQL), or None."""
        return notify_channel(self.table) if self._postgres else None

    async def create_table(self) -> None:
        """Create the table and its indexes unless they exist."""
        async with self.engine.begin() as connection:
            await connection.run_sync(self.table.create, checkfirst=True)

    async def claim(self, limit: int) -> Claim:
        """Claim up to ``limit`` rows to publish, in order (an empty claim when none)."""
        connection = self.engine.connect()
        await connection.start()
        if self._postgres:  # each statement sees what committed before it: see _claim
            await connection.execution_options(isolation_level="READ COMMITTED")
        try:
            entries = await self._claim(connection, limit)
        except BaseException:
            await connection.close()
            raise
        return Claim(entries, connection=connection)

    async def _claim(self, connection: AsyncConnection, limit: int) -> list[OutboxEntry]:
        q, now = self._queries, self.clock()
        keys: list[str] | None = None
        if self._postgres:
            found = await connection.execute(*q.candidates(now, limit))
            picker = _KeyPicker(found.scalars(), limit)
            while chunk := picker.next_chunk():
                picker.took(chunk, (await connection.execute(*q.try_locks(chunk))).scalars())
            keys = picker.keys
            if not keys:
                return []
        rows = (await connection.execute(*q.rows(now, keys, limit))).mappings()
        return [_entry(row) for row in rows]

    async def finish(self, claim: Claim, sent: Sequence[int], failures: Mapping[int, str]) -> None:
        """Mark the rows ``sent`` as published and record ``failures``, then end the claim."""
        connection: AsyncConnection = claim._connection
        try:
            now = self.clock()
            if sent:
                await connection.execute(*self._queries.mark_sent(sent, now))
            for entry, error in _failures_by_id(failures, claim.entries):
                await connection.execute(self._queries.failure(entry, error, now))
            await connection.commit()
        finally:
            await connection.close()

    async def release(self, claim: Claim) -> None:
        """End a claim without marking anything (its rows stay pending)."""
        await claim._connection.close()

    async def pending(self) -> int:
        """How many rows wait to be published (parked ones not counted)."""
        async with self.engine.connect() as connection:
            return int((await connection.execute(self._queries.count_pending())).scalar_one())

    async def list_parked(self, *, limit: int | None = None) -> builtins.list[OutboxEntry]:
        """The parked rows, oldest first."""
        async with self.engine.connect() as connection:
            rows = (await connection.execute(self._queries.parked(limit))).mappings()
            return [_entry(row) for row in rows]

    async def retry_parked(self, ids: Iterable[int] | None = None) -> int:
        """Put parked rows (those of ``ids``, or all) back in line; returns how many."""
        async with self.engine.begin() as connection:
            result = await connection.execute(self._queries.retry_parked(ids, self.clock()))
        return int(result.rowcount)

    async def delete_sent(self, older_than: _dt.timedelta) -> int:
        """Delete rows sent more than ``older_than`` ago; returns how many."""
        async with self.engine.begin() as connection:
            result = await connection.execute(self._queries.delete_sent(self.clock() - older_than))
        return int(result.rowcount)

    def __repr__(self) -> str:
        return f"AsyncSqlAlchemyOutbox({self.engine!r}, table={self.table.fullname!r})"


def stage_statements(
    dialect: str, table: sa.Table | None, messages: Sequence[OutgoingMessage]
) -> list[tuple[sa.Executable, Any]]:
    """What a unit of work executes to stage ``messages``: the insert, and on
    PostgreSQL the ``NOTIFY`` that its commit sends to listening relays."""
    check_messages(messages)
    table = table if table is not None else default_outbox_table()
    statement, rows = insert_statement(table, messages, _now())
    statements: list[tuple[sa.Executable, Any]] = [(statement, rows)]
    if dialect == "postgresql":
        statements.append((notify_statement(table), None))
    return statements
