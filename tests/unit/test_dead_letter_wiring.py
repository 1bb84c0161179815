"""What the dispatch core calls from this side: the async bus refuses a blocking dead-letter
store when it is built (``messagebus.observe.check_store_for_async``), and the line of a
letter the store refused (``dead_letter_store_failed``, and its stderr fallback) hides
sensitive fields (``Serializer.redact_payload``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import attrs
import pytest
import sqlalchemy as sa
import structlog

from messagebus import AsyncMessageBus, ConfigurationError, Event, MessageBus, Registry, sensitive
from messagebus.observe import DeadLetter
from messagebus.sqlalchemy._dead_letters import SqlAlchemyDeadLetterStore

SECRET = "4111111111111111"


@attrs.frozen
class Paid(Event):
    order: str
    card: str = sensitive()


class RefusingStore:
    blocking = False

    def add(self, letter: DeadLetter) -> None:
        raise ConnectionError("the database is down")


def registry() -> Registry:
    registry = Registry()

    @registry.register(uow=False)
    def receipt(event: Paid) -> None:
        raise ValueError("bug")

    return registry


def test_the_async_bus_refuses_a_blocking_store_by_name(tmp_path: Path) -> None:
    store = SqlAlchemyDeadLetterStore(sa.create_engine(f"sqlite:///{tmp_path / 'a.db'}"))

    with pytest.raises(ConfigurationError, match="SqlAlchemyDeadLetterStore"):
        AsyncMessageBus(Registry(), dead_letters=store)


def test_the_line_of_a_refused_letter_hides_its_sensitive_fields() -> None:
    with structlog.testing.capture_logs() as logs:
        bus = MessageBus(registry(), dead_letters=RefusingStore(), logger=structlog.get_logger())
        bus.handle(Paid("o1", SECRET))

    (line,) = [entry for entry in logs if entry["event"] == "dead_letter_store_failed"]
    assert {"order": "o1", "card": "[redacted]"} == line["payload"]


def unwritable() -> Any:
    """A logger whose every line fails, as one writing to a file closed under it."""

    def broken(logger: Any, method: str, event: Any) -> Any:
        raise OSError("the log file is closed")

    return structlog.wrap_logger(structlog.PrintLogger(), processors=[broken])


def test_the_stderr_fallback_of_a_refused_letter_hides_its_sensitive_fields(
    capsys: pytest.CaptureFixture[str],
) -> None:
    bus = MessageBus(registry(), dead_letters=RefusingStore(), logger=unwritable())
    bus.handle(Paid("o1", SECRET))

    err = capsys.readouterr().err
    assert "the dead letter" in err
    assert SECRET not in err
