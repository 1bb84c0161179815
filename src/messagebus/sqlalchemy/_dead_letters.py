"""Dead letters in a table of the application's database (SQLAlchemy 2.x)."""

from __future__ import annotations

import builtins
import datetime as _dt
from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine, RowMapping

from messagebus.dead_letters import DeadLetterNotFoundError, StoredDeadLetter
from messagebus.observe import DeadLetter

__all__ = ["SqlAlchemyDeadLetterStore", "dead_letter_table"]

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
    ``last_traceback``). Times are stored with their time zone, in UTC.
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
        schema=schema,
    )


class SqlAlchemyDeadLetterStore:
    """Keeps dead letters in a table of the application's database.

    Give it to the bus, and to :class:`messagebus.dead_letters.DeadLetters`::

        store = SqlAlchemyDeadLetterStore(engine)
        store.create_table()            # or define it in your metadata: dead_letter_table()
        bus = MessageBus(registry, uow=..., dead_letters=store)
        DeadLetters(store, bus).retry_all()

    Each call is its own short transaction on ``engine``, apart from the
    handler's unit of work: a letter is written after that unit of work has
    rolled back, and it is kept even so.

    Args:
        engine: The application's database.
        table: The table, made by :func:`dead_letter_table` in the
            application's metadata; by default one named
            ``messagebus_dead_letters`` in a metadata of its own.
    """

    def __init__(self, engine: Engine, *, table: sa.Table | None = None) -> None:
        self.engine = engine
        self.table = table if table is not None else dead_letter_table(sa.MetaData())

    def create_table(self) -> None:
        """Create the table unless it exists (applications with migrations create it there)."""
        self.table.create(self.engine, checkfirst=True)

    def add(self, letter: DeadLetter) -> None:
        """Keep a dead letter, pending. Raises if it cannot be written."""
        message_id = letter.metadata.get("message_id")
        with self.engine.begin() as connection:
            connection.execute(
                self.table.insert().values(
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
            )

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
        query = sa.select(self.table).where(
            *self._filters(message_name=message_name, handler=handler, resolved=resolved)
        )
        query = query.order_by(self.table.c.id)
        if limit is not None:
            query = query.limit(limit)
        with self.engine.connect() as connection:
            return [_stored(row) for row in connection.execute(query).mappings()]

    def get(self, letter_id: int) -> StoredDeadLetter | None:
        """The letter with this id, or None."""
        query = sa.select(self.table).where(self.table.c.id == letter_id)
        with self.engine.connect() as connection:
            row = connection.execute(query).mappings().first()
        return None if row is None else _stored(row)

    def mark_resolved(self, letter_id: int, *, at: _dt.datetime) -> None:
        """A retry succeeded at ``at``: count it and mark the letter resolved."""
        at = _to_utc(at)
        self._update(
            letter_id,
            resolved_at=at,
            last_retried_at=at,
            retries=self.table.c.retries + 1,
        )

    def mark_retry_failed(
        self, letter_id: int, *, error: str, traceback: str, at: _dt.datetime
    ) -> None:
        """A retry failed at ``at``: count it and keep its error; the letter stays pending."""
        self._update(
            letter_id,
            last_retried_at=_to_utc(at),
            last_error=error,
            last_traceback=traceback,
            retries=self.table.c.retries + 1,
        )

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
        conditions = self._filters(message_name=message_name, handler=None, resolved=resolved)
        if ids is not None:
            conditions.append(self.table.c.id.in_(list(ids)))
        with self.engine.begin() as connection:
            result = connection.execute(self.table.delete().where(*conditions))
        return int(result.rowcount)

    def _filters(
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

    def _update(self, letter_id: int, **values: Any) -> None:
        with self.engine.begin() as connection:
            result = connection.execute(
                self.table.update().where(self.table.c.id == letter_id).values(**values)
            )
        if result.rowcount == 0:
            raise DeadLetterNotFoundError(letter_id)

    def __repr__(self) -> str:
        return f"SqlAlchemyDeadLetterStore({self.engine!r}, table={self.table.fullname!r})"


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
