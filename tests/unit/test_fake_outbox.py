"""The fake units of work keep staged outgoing messages as the outbox table would."""

from __future__ import annotations

import asyncio

import pytest

from messagebus.testing import FakeAsyncUnitOfWork, FakeUnitOfWork
from messagebus.transport import OutgoingMessage


def message(number: int) -> OutgoingMessage:
    return OutgoingMessage(
        message_id=f"id-{number}",
        name="Allocated",
        version=1,
        payload=f'{{"n": {number}}}',
        metadata="{}",
        destination="allocations",
        key="k",
    )


def test_committed_messages_are_kept_in_order() -> None:
    uow = FakeUnitOfWork()

    uow.stage_outgoing([message(1), message(2)])
    assert [] == uow.outgoing  # not before the commit
    uow.commit()
    uow.stage_outgoing([message(3)])
    uow.commit()

    assert [message(1), message(2), message(3)] == uow.outgoing


def test_rolled_back_messages_are_discarded() -> None:
    uow = FakeUnitOfWork()

    uow.stage_outgoing([message(1)])
    uow.rollback()
    uow.commit()

    assert [] == uow.outgoing


def test_the_async_fake_keeps_them_the_same_way() -> None:
    async def scenario() -> list[OutgoingMessage]:
        uow = FakeAsyncUnitOfWork()
        uow.stage_outgoing([message(1)])
        await uow.rollback()
        uow.stage_outgoing([message(2)])
        await uow.commit()
        return uow.outgoing

    assert [message(2)] == asyncio.run(scenario())


def test_staging_something_else_is_refused() -> None:
    uow = FakeUnitOfWork()

    with pytest.raises(TypeError, match="OutgoingMessage values, not str"):
        uow.stage_outgoing(["Allocated"])  # type: ignore[list-item]
