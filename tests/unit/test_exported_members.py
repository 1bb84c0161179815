"""The public surface: the names exported, their docstrings, and the exception tree."""

from __future__ import annotations

import inspect

import pytest

import messagebus
import messagebus.exceptions
import messagebus.middleware
import messagebus.otel
import messagebus.testing

EXPECTED_MESSAGEBUS = [
    "AbstractAsyncUnitOfWork",
    "AbstractUnitOfWork",
    "AsyncMessageBus",
    "AsyncUnitOfWork",
    "Command",
    "ConcurrencyError",
    "ConfigurationError",
    "Context",
    "DispatchError",
    "DuplicateHandlerError",
    "Event",
    "Expected",
    "FrozenRegistryError",
    "HasEvents",
    "InvalidMessageDataError",
    "Message",
    "MessageBus",
    "MessageBusError",
    "MessageNameConflictError",
    "Metadata",
    "MissingAnnotationError",
    "MissingHandlersError",
    "NoHandlerError",
    "NotAMessageError",
    "Registry",
    "RetryPolicy",
    "SerializationError",
    "Serializer",
    "TooManyEventsError",
    "Transient",
    "UnitOfWork",
    "UnknownMessageError",
    "UnresolvedDependencyError",
    "UnusedDependencyError",
    "allow_nonfinite",
    "is_transient",
    "make_converter",
    "message_name",
    "message_version",
    "retry_if_transient",
    "sensitive",
]

EXPECTED_TESTING = [
    "AsyncRepositoryView",
    "AsyncScenario",
    "Dispatch",
    "FakeAsyncUnitOfWork",
    "FakeClock",
    "FakeUnitOfWork",
    "InMemoryInbox",
    "InMemoryRepository",
    "Recorder",
    "RepositoryView",
    "Scenario",
]

#: Type aliases (``Next``, ``Middleware``, ...) are documented in the module's docstring.
EXPECTED_MIDDLEWARE = ["AsyncMiddleware", "AsyncNext", "HandlerCall", "Middleware", "Next"]

EXPECTED_OTEL = ["Telemetry", "async_tracing", "tracing"]

PUBLIC = (
    [(messagebus, name) for name in messagebus.__all__]
    + [(messagebus.testing, name) for name in messagebus.testing.__all__]
    + [(messagebus.otel, name) for name in messagebus.otel.__all__]
)
PUBLIC_IDS = [f"{module.__name__}.{name}" for module, name in PUBLIC]

EXCEPTIONS = [
    getattr(messagebus, name)
    for name in messagebus.__all__
    if isinstance(getattr(messagebus, name), type)
    and issubclass(getattr(messagebus, name), BaseException)
]

#: Not a messagebus error: the base an application gives its own retryable errors.
MARKERS = [messagebus.Transient, messagebus.Expected]


def test_messagebus_exports_exactly_these_names() -> None:
    assert EXPECTED_MESSAGEBUS == messagebus.__all__


def test_messagebus_testing_exports_exactly_these_names() -> None:
    assert EXPECTED_TESTING == messagebus.testing.__all__


def test_messagebus_otel_exports_exactly_these_names() -> None:
    assert EXPECTED_OTEL == messagebus.otel.__all__


def test_messagebus_middleware_exports_exactly_these_names() -> None:
    assert EXPECTED_MIDDLEWARE == messagebus.middleware.__all__


@pytest.mark.parametrize(
    "module",
    [messagebus, messagebus.testing, messagebus.middleware, messagebus.otel],
    ids=lambda m: m.__name__,
)
def test_all_is_sorted(module: object) -> None:
    names = module.__all__  # type: ignore[attr-defined]

    assert sorted(names) == names


@pytest.mark.parametrize(("module", "name"), PUBLIC, ids=PUBLIC_IDS)
def test_every_public_name_has_its_own_docstring(module: object, name: str) -> None:
    # Not inspect.getdoc: it would lend a class without a docstring its base's.
    assert inspect.cleandoc(getattr(module, name).__doc__ or "")


def test_every_exception_of_the_exceptions_module_is_exported() -> None:
    assert set(messagebus.exceptions.__all__) <= set(messagebus.__all__)


@pytest.mark.parametrize(
    "exception",
    [exception for exception in EXCEPTIONS if exception not in MARKERS],
    ids=lambda exception: exception.__name__,
)
def test_every_public_exception_is_a_messagebus_error(exception: type) -> None:
    assert issubclass(exception, messagebus.MessageBusError)


def test_transient_is_a_marker_for_application_errors_not_a_messagebus_error() -> None:
    assert not issubclass(messagebus.Transient, messagebus.MessageBusError)
    assert issubclass(messagebus.ConcurrencyError, messagebus.Transient)
