"""A small service that consumes ``Reserve`` commands, for the consumer tests.

Each handling writes a row to ``consumer_handled`` (no unique key: a message
handled twice shows as two rows) in the same transaction as the message's
inbox claim. Until the bus claims delivered messages itself, the handler
claims its message in the inbox (``claim_incoming``) as the bus will.

``make_bus`` is the ``--app`` of the ``messagebus consume`` processes; it
reads ``CONSUMER_TEST_DATABASE_URL``.
"""

from __future__ import annotations

import json
import logging
import os
import signal
from collections.abc import Callable
from typing import Any

import attrs
import sqlalchemy
import structlog
from sqlalchemy import select
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

from messagebus import (
    Command,
    Event,
    MessageBus,
    Metadata,
    Registry,
    Serializer,
    message_name,
    message_version,
)
from messagebus.observe import DeadLetterStore
from messagebus.sqlalchemy import SqlAlchemyDeadLetterStore, SqlAlchemyUnitOfWork, inbox_table
from messagebus.transport import OutgoingMessage


class Base(DeclarativeBase):
    pass


class Handled(Base):
    __tablename__ = "consumer_handled"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    message_id: Mapped[str]
    order: Mapped[str]
    handler: Mapped[str]


INBOX = inbox_table(Base.metadata)


@attrs.frozen
class Reserve(Command[None], name="consumer_test.Reserve", version=2):
    order: str


@attrs.frozen
class Reserved(Event, name="consumer_test.Reserved"):
    order: str


class Fail(Exception):
    """What a handler told to fail raises."""


#: The engines make_bus made: a test that runs the command in its own process disposes them.
ENGINES: list[sqlalchemy.Engine] = []

#: Orders whose handling raises (set by a test).
FAILING: set[str] = set()
#: Orders whose handling ends with a SIGTERM to this process (set by a test).
TERMINATING: set[str] = set()


def make_registry(*, claim: bool = True) -> Registry:
    registry = Registry()

    @registry.register
    def reserve(cmd: Reserve, uow: SqlAlchemyUnitOfWork, metadata: Metadata) -> None:
        if cmd.order in FAILING:
            raise Fail(f"cannot reserve {cmd.order}")
        # What the bus will do before each handler attempt of a delivered message.
        if claim and not uow.claim_incoming(str(metadata.message_id), "reserve"):
            return
        uow.session.add(
            Handled(message_id=str(metadata.message_id), order=cmd.order, handler="reserve")
        )
        if cmd.order in TERMINATING:
            os.kill(os.getpid(), signal.SIGTERM)

    @registry.register
    def note(event: Reserved, uow: SqlAlchemyUnitOfWork, metadata: Metadata) -> None:
        if claim and not uow.claim_incoming(str(metadata.message_id), "note"):
            return
        uow.session.add(
            Handled(message_id=str(metadata.message_id), order=event.order, handler="note")
        )

    return registry


def make_engine(url: str) -> sqlalchemy.Engine:
    engine = sqlalchemy.create_engine(url)
    Base.metadata.create_all(engine)
    return engine


def build(
    engine: sqlalchemy.Engine,
    *,
    dead_letters: DeadLetterStore | None = None,
    uow_class: type[SqlAlchemyUnitOfWork] = SqlAlchemyUnitOfWork,
    claim: bool = True,
    **options: Any,
) -> MessageBus:
    session_factory = sessionmaker(engine)

    def uow() -> SqlAlchemyUnitOfWork:
        return uow_class(session_factory, inbox_table=INBOX)

    return MessageBus(
        make_registry(claim=claim),
        uow=uow,
        dead_letters=dead_letters,
        sleep=lambda _: None,
        **options,
    )


def make_bus() -> MessageBus:
    """The application of the consumer processes."""
    if os.environ.get("CONSUMER_TEST_QUIET"):  # a process of its own: configure it
        # Quiet: a line per handled message would cost the processes more than the handling.
        structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    engine = make_engine(os.environ["CONSUMER_TEST_DATABASE_URL"])
    ENGINES.append(engine)
    store = SqlAlchemyDeadLetterStore(engine)
    store.create_table()
    return build(engine, dead_letters=store)


# -- what the tests read and write ----------------------------------------------------


def fields(
    message: Reserve | Reserved,
    metadata: Metadata | None = None,
    serializer: Serializer | None = None,
) -> dict[str, str]:
    """The entry a relay would publish for the message."""
    serializer = serializer or Serializer([Reserve, Reserved])
    metadata = metadata or Metadata.new()
    return OutgoingMessage(
        message_id=str(metadata.message_id),
        name=message_name(message),
        version=message_version(message),
        payload=json.dumps(serializer.dump_payload(message)),
        metadata=json.dumps(serializer.dump_metadata(metadata)),
        destination="",
        key=message.order,
    ).fields()


def handled(engine: sqlalchemy.Engine, handler: str = "reserve") -> list[str]:
    """The orders handled, in the order they were handled (a repeat shows twice)."""
    with Session(engine) as session:
        query = select(Handled.order).where(Handled.handler == handler).order_by(Handled.id)
        return list(session.scalars(query))


def count_handled(engine: sqlalchemy.Engine) -> int:
    with engine.connect() as connection:
        return int(connection.scalar(select(sqlalchemy.func.count()).select_from(Handled)) or 0)


Factory = Callable[[], Session]
