"""The fake units of work's inbox: claim_incoming kept on commit, shared by units of work."""

from __future__ import annotations

import pytest

from messagebus import ConcurrencyError, ConfigurationError
from messagebus.testing import FakeAsyncUnitOfWork, FakeUnitOfWork, InMemoryInbox


def test_a_claim_is_granted_once_and_kept_on_commit() -> None:
    inbox = InMemoryInbox()
    with FakeUnitOfWork(inbox=inbox) as uow:
        first = [uow.claim_incoming("m1", "a"), uow.claim_incoming("m1", "a")]
        uow.commit()
    with FakeUnitOfWork(inbox=inbox) as uow:
        again = uow.claim_incoming("m1", "a")
        other = uow.claim_incoming("m1", "b")

    assert ([True, False], False, True) == (first, again, other)
    assert (True, False, 1, 4) == (
        ("m1", "a") in inbox,
        ("m1", "b") in inbox,
        len(inbox),
        inbox.claims,
    )


def test_a_rolled_back_claim_is_not_kept() -> None:
    inbox = InMemoryInbox()
    uow = FakeUnitOfWork(inbox=inbox)
    uow.claim_incoming("m1", "a")
    uow.rollback()
    uow.commit()  # nothing left to keep

    assert 0 == len(inbox)
    assert FakeUnitOfWork(inbox=inbox).claim_incoming("m1", "a") is True


def test_two_concurrent_claims_commit_once_and_the_second_commit_fails_as_a_conflict() -> None:
    inbox = InMemoryInbox()
    first, second = FakeUnitOfWork(inbox=inbox), FakeUnitOfWork(inbox=inbox)
    assert first.claim_incoming("m1", "a")
    assert second.claim_incoming("m1", "a")
    first.commit()

    with pytest.raises(ConcurrencyError, match="message 'm1' handled by 'a'"):
        second.commit()


def test_a_fake_unit_of_work_without_an_inbox_says_how_to_give_one() -> None:
    with pytest.raises(ConfigurationError, match=r"FakeUnitOfWork\(inbox=InMemoryInbox\(\)"):
        FakeUnitOfWork().claim_incoming("m1", "a")


@pytest.mark.anyio
async def test_the_async_fake_claims_in_the_same_inbox() -> None:
    inbox = InMemoryInbox()
    uow = FakeAsyncUnitOfWork(inbox=inbox)
    granted = [await uow.claim_incoming("m1", "a"), await uow.claim_incoming("m1", "a")]
    await uow.commit()

    assert [True, False] == granted
    assert await FakeAsyncUnitOfWork(inbox=inbox).claim_incoming("m1", "a") is False


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
