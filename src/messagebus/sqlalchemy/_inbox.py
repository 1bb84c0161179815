"""The inbox: which delivered messages each handler has handled (SQLAlchemy 2.x).

A message that comes from a broker may come twice (a consumer crashed after
its handler committed, before it acknowledged). Its handler's unit of work
claims ``(message id, handler)`` in the inbox table, in the same transaction
as the handler's change: the claim commits with the change or not at all, and
a second claim of the same pair finds the first and is refused.
"""

from __future__ import annotations

import datetime as _dt
import functools

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.sql.dml import ReturningInsert

from messagebus.exceptions import ConfigurationError

__all__ = ["inbox_table", "purge_inbox"]

#: The table's name unless the application gives another.
DEFAULT_TABLE = "messagebus_inbox"

_UTC = _dt.timezone.utc


def inbox_table(
    metadata: sa.MetaData, *, name: str = DEFAULT_TABLE, schema: str | None = None
) -> sa.Table:
    """The inbox table, defined in the application's ``MetaData``.

    Define it in the metadata the application creates (or migrates) its tables
    from, and give it to the units of work::

        inbox = inbox_table(orm.metadata)
        uow = lambda: SqlAlchemyUnitOfWork(session_factory, inbox_table=inbox, ...)

    Columns: ``message_id`` and ``handler`` (together the primary key: one row
    per message and handler) and ``handled_at`` (aware, UTC; indexed, for
    :func:`purge_inbox`).
    """
    return sa.Table(
        name,
        metadata,
        sa.Column("message_id", sa.String(64), primary_key=True),
        sa.Column("handler", sa.String(500), primary_key=True),
        sa.Column("handled_at", sa.DateTime(timezone=True), nullable=False, index=True),
        schema=schema,
    )


@functools.cache
def default_inbox_table() -> sa.Table:
    """The table used when a unit of work is given none: ``messagebus_inbox``."""
    return inbox_table(sa.MetaData())


def claim(message_id: str, handler: str) -> dict[str, object]:
    """The parameters of a claim's statement (:func:`claim_statement`), checked."""
    _check_id(message_id, handler)
    return {"message_id": message_id, "handler": handler, "handled_at": _dt.datetime.now(_UTC)}


@functools.lru_cache(maxsize=64)
def claim_statement(dialect: str, table: sa.Table) -> ReturningInsert[tuple[str]]:
    """An insert of a claim (its values bound by :func:`claim`) that does
    nothing when the row exists already; it returns the row's message id when
    it inserted it (the driver's row count of an insert is not always known).
    Made once per table.

    On PostgreSQL, ``INSERT ... ON CONFLICT DO NOTHING`` waits for a
    concurrent transaction that inserted the same row: when it commits, this
    one inserts nothing (the message is handled); when it rolls back, this one
    inserts. On SQLite (``INSERT ... ON CONFLICT DO NOTHING``, SQLite's
    ``INSERT OR IGNORE`` for the primary key) writers take turns anyway.
    """
    if dialect == "postgresql":
        insert: sa.Insert = postgresql.insert(table).on_conflict_do_nothing()
    elif dialect == "sqlite":
        insert = sqlite.insert(table).on_conflict_do_nothing()
    else:
        raise ConfigurationError(
            f"the inbox (claim_incoming) supports PostgreSQL and SQLite, not {dialect!r}"
        )
    return insert.returning(table.c.message_id)


def _check_id(message_id: str, handler: str) -> None:
    if not isinstance(message_id, str) or not 0 < len(message_id) <= 64:
        raise ValueError(f"a message id is a text of 1 to 64 characters, not {message_id!r}")
    if not isinstance(handler, str) or not 0 < len(handler) <= 500:
        raise ValueError(f"a handler name is a text of 1 to 500 characters, not {handler!r}")


def purge_inbox(
    bind: Engine | Connection,
    *,
    older_than: _dt.timedelta,
    table: sa.Table | None = None,
    now: _dt.datetime | None = None,
) -> int:
    """Delete the inbox rows of messages handled more than ``older_than`` ago.

    Keep rows for longer than a message can be delivered again: longer than
    a stream keeps its entries, or a consumer may be down. An async
    application runs it on its engine's connection:
    ``await connection.run_sync(lambda c: purge_inbox(c, older_than=...))``.

    Args:
        bind: An engine (a transaction of its own is committed) or a
            connection (its transaction is left to the caller).
        older_than: How long rows are kept.
        table: The inbox table; by default ``messagebus_inbox``.
        now: The current time (aware); by default the clock's.

    Returns:
        How many rows were deleted.
    """
    if older_than < _dt.timedelta(0):
        raise ValueError(f"older_than must not be negative, not {older_than!r}")
    table = table if table is not None else default_inbox_table()
    moment = now if now is not None else _dt.datetime.now(_UTC)
    if moment.tzinfo is None:
        raise ValueError(f"now must be timezone-aware, not {moment!r}")
    delete = table.delete().where(table.c.handled_at < (moment - older_than).astimezone(_UTC))
    if isinstance(bind, Engine):
        with bind.begin() as connection:
            return int(connection.execute(delete).rowcount)
    return int(bind.execute(delete).rowcount)
