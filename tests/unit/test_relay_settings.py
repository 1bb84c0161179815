"""The relay's arguments and its seam with the publisher, checked without servers."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
import sqlalchemy as sa

from messagebus.redis import redis_version
from messagebus.relay import Relay, _listen_args
from messagebus.sqlalchemy import SqlAlchemyOutbox
from messagebus.transport import OutgoingMessage


class Publisher:
    """A publisher at the relay's seam, which answers what it is told to."""

    def __init__(self, answers: list[BaseException | None]) -> None:
        self.answers = answers

    def publish(self, messages: Sequence[OutgoingMessage]) -> list[BaseException | None]:
        return self.answers


@pytest.fixture
def outbox(tmp_path: Any) -> SqlAlchemyOutbox:
    outbox = SqlAlchemyOutbox(sa.create_engine(f"sqlite:///{tmp_path / 'db'}"))
    outbox.create_table()
    return outbox


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"batch_size": 0}, "batch_size must be at least 1, not 0"),
        ({"poll_interval": 0}, "poll_interval must be positive, not 0"),
    ],
)
def test_bad_settings_are_refused_with_what_was_wrong(
    outbox: SqlAlchemyOutbox, options: dict[str, Any], error: str
) -> None:
    with pytest.raises(ValueError, match=error):
        Relay(outbox, Publisher([]), **options)


def test_a_publisher_that_answers_for_fewer_messages_than_it_was_given_is_an_error(
    outbox: SqlAlchemyOutbox,
) -> None:
    from messagebus.sqlalchemy._outbox import stage_statements

    message = OutgoingMessage("id", "Allocated", 1, "{}", "{}", "s", "k")
    with outbox.engine.begin() as connection:
        for statement, parameters in stage_statements("sqlite", outbox.table, [message]):
            connection.execute(statement, parameters)
    relay = Relay(outbox, Publisher([]))

    with pytest.raises(RuntimeError, match="answered 0 results for 1 messages"):
        relay.relay_batch()
    assert 1 == outbox.pending()  # the claim was ended, its row left pending


def test_only_psycopg_on_postgresql_is_listened_to() -> None:
    assert _listen_args(sa.create_engine("sqlite://")) is None


def test_a_version_redis_does_not_give_is_an_error() -> None:
    class Client:
        def info(self, section: str) -> dict[str, str]:
            return {"redis_version": "unknown"}

    with pytest.raises(ValueError, match="not a Redis version: 'unknown'"):
        redis_version(Client())  # type: ignore[arg-type]


def test_the_outbox_says_which_table_it_keeps(outbox: SqlAlchemyOutbox) -> None:
    assert "table='messagebus_outbox'" in repr(outbox)
