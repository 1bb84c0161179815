"""The pytest plugin of messagebus: your application's bus, with fakes, as fixtures.

Installing messagebus registers this plugin with pytest (an entry point,
``pytest11``); it does nothing until a test asks for one of its fixtures.
Point it at the function that builds your application's bus (your
*bootstrap*), in ``pyproject.toml``::

    [tool.pytest.ini_options]
    messagebus_bootstrap = "shop.bootstrap:bootstrap"

and say in ``conftest.py`` which fakes to swap in, as keyword arguments of
that function::

    @pytest.fixture
    def messagebus_overrides(products):
        return {"uow": lambda: FakeUnitOfWork(products=products)}

Then a test asks for the bus, a :class:`~messagebus.testing.Recorder` of what
it did, or a given / when / then :class:`~messagebus.testing.Scenario`::

    def test_allocating(messagebus_scenario):
        messagebus_scenario.given(CreateBatch("b1", "LAMP", 10))
        messagebus_scenario.when(Allocate("o1", "LAMP", 2))
        messagebus_scenario.then_raised(Allocated("o1", "LAMP", 2, "b1"))

The bootstrap is called once per test, as
``bootstrap(**messagebus_overrides, listeners=[recorder], sleep=...)``:

- ``listeners``: the test's recorder, added to any listeners in the overrides.
  So the bootstrap must take a ``listeners`` argument and pass it on to
  :class:`~messagebus.MessageBus` (or :class:`~messagebus.AsyncMessageBus`).
- ``sleep``: when the bootstrap takes a ``sleep`` argument and the overrides
  do not give one, a function that records the waits between retries
  (:func:`messagebus_waits`) instead of sleeping, for either bus.

It may return the bus, or an object with the bus as its ``bus`` attribute
(for example a service that also holds read models: :func:`messagebus_app`).

:func:`messagebus_logs` holds what the bus logged during the test (structlog's
event dicts, as ``structlog.testing.capture_logs`` gives them), so that a test
can assert on the attempts' log events::

    def test_a_failed_mail_is_logged(messagebus_logs, messagebus_bus):
        messagebus_bus.handle(Allocate("o1", "LAMP", 2))
        assert ["message_handled", "message_failed"] == [
            log["event"] for log in messagebus_logs
        ]

The plugin also makes a failing ``assert expected == actual`` between two lists
of messages show a diff of the messages, one a line.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Generator, Mapping, MutableMapping
from typing import Any, NoReturn

import pytest
import structlog.testing

from messagebus._async_bus import AsyncMessageBus
from messagebus._bus import MessageBus
from messagebus.messages import Message

from ._diff import diff_lines, plural
from ._recorder import Recorder
from ._scenario import AsyncScenario, Scenario

__all__ = [
    "messagebus_app",
    "messagebus_bootstrap",
    "messagebus_bus",
    "messagebus_logs",
    "messagebus_overrides",
    "messagebus_recorder",
    "messagebus_scenario",
    "messagebus_waits",
]

INI_BOOTSTRAP = "messagebus_bootstrap"


def pytest_addoption(parser: pytest.Parser) -> None:
    """Register the ``messagebus_bootstrap`` ini option."""
    parser.addini(
        INI_BOOTSTRAP,
        help=(
            "messagebus: the function that builds the application's bus, as "
            "'package.module:function'; the plugin's fixtures call it with fakes"
        ),
        type="string",
        default="",
    )


class BootstrapError(Exception):
    """The plugin cannot build the bus from the configured bootstrap."""


def load_bootstrap(spec: str) -> Callable[..., Any]:
    """The function named by ``"package.module:function"`` (the function may be dotted).

    Raises:
        BootstrapError: The text is not of that form, or names nothing callable.
    """
    module_name, colon, attribute = spec.strip().partition(":")
    if not colon or not module_name or not attribute:
        raise BootstrapError(
            f"{INI_BOOTSTRAP} = {spec!r} is not of the form 'package.module:function'"
        )
    try:
        target: Any = importlib.import_module(module_name)
    except ImportError as error:
        raise BootstrapError(
            f"{INI_BOOTSTRAP} = {spec!r}: module {module_name!r} cannot be imported ({error}); "
            "is it on sys.path (pytest's 'pythonpath' option, or installed)?"
        ) from error
    for part in attribute.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise BootstrapError(
                f"{INI_BOOTSTRAP} = {spec!r}: {module_name} has no {attribute!r}"
            ) from None
    if not callable(target):
        raise BootstrapError(f"{INI_BOOTSTRAP} = {spec!r} is not callable: {target!r}")
    return target  # type: ignore[no-any-return]


def _accepts(function: Callable[..., Any], name: str) -> bool:
    """Whether ``function`` takes a keyword argument called ``name``."""
    try:
        parameters = inspect.signature(function).parameters
    except (TypeError, ValueError):  # no signature to read: assume it does
        return True
    parameter = parameters.get(name)
    if parameter is not None:
        return parameter.kind in (parameter.POSITIONAL_OR_KEYWORD, parameter.KEYWORD_ONLY)
    return any(p.kind is p.VAR_KEYWORD for p in parameters.values())


def _describe(function: Callable[..., Any]) -> str:
    module = getattr(function, "__module__", None)
    name = getattr(function, "__qualname__", None) or repr(function)
    return f"{module}:{name}" if module else name


def _fail(reason: str) -> NoReturn:
    """Fail the test's set-up with the reason alone: the plugin's frames would not help."""
    __tracebackhide__ = True
    pytest.fail(f"messagebus: {reason}", pytrace=False)


class RecordedSleep:
    """A ``sleep`` for either bus that records each wait instead of waiting.

    Called by :class:`~messagebus.MessageBus`, it returns at once; awaited by
    :class:`~messagebus.AsyncMessageBus`, it completes at once.
    """

    def __init__(self, waits: list[float]) -> None:
        self.waits = waits

    def __call__(self, seconds: float) -> _Done:
        self.waits.append(seconds)
        return _Done()


class _Done:
    """An awaitable that is done already (and need not be awaited)."""

    __slots__ = ()

    def __await__(self) -> Generator[Any, None, None]:
        return iter(())  # type: ignore[return-value]


# -- fixtures ------------------------------------------------------------------


@pytest.fixture
def messagebus_bootstrap(request: pytest.FixtureRequest) -> Callable[..., Any]:
    """The function that builds the application's bus: the ``messagebus_bootstrap`` ini option.

    Override this fixture to give the function without the ini option.
    """
    spec = request.config.getini(INI_BOOTSTRAP)
    if not spec:
        _fail(
            "no bootstrap is configured. Name the function that builds your bus in "
            f"pytest's configuration ({INI_BOOTSTRAP} = 'package.module:function', under "
            "[tool.pytest.ini_options] in pyproject.toml), or override the "
            "messagebus_bootstrap fixture"
        )
    try:
        return load_bootstrap(str(spec))
    except BootstrapError as error:
        reason = str(error)
    _fail(reason)  # outside the except block: the chained errors would add nothing


@pytest.fixture
def messagebus_overrides() -> Mapping[str, Any]:
    """Keyword arguments for the bootstrap: the fakes to swap in. None by default.

    Override it in your ``conftest.py``, e.g.
    ``{"uow": lambda: FakeUnitOfWork(products=products), "notifications": fake}``.
    """
    return {}


@pytest.fixture
def messagebus_waits() -> list[float]:
    """The waits between retries, in seconds, recorded instead of slept."""
    return []


@pytest.fixture
def messagebus_logs() -> Generator[list[MutableMapping[str, Any]], None, None]:
    """What was logged through structlog during the test: event dicts, in order.

    Each handler attempt of the bus is one of them (``event`` is
    ``message_handled``, ``message_attempt_failed`` or ``message_failed``, with
    the message's name, ids, handler, attempt and outcome). While the test
    runs, structlog's processors are replaced by the capture: nothing is
    rendered or written. structlog set up with ``configure_logging(stdlib=False)``
    is not captured: it writes its lines itself.
    """
    with structlog.testing.capture_logs() as logs:
        yield logs


@pytest.fixture
def messagebus_recorder() -> Recorder:
    """The recorder of what the test's bus does (a new one for each test)."""
    return Recorder()


@pytest.fixture
def messagebus_app(
    messagebus_bootstrap: Callable[..., Any],
    messagebus_overrides: Mapping[str, Any],
    messagebus_recorder: Recorder,
    messagebus_waits: list[float],
) -> Any:
    """What the bootstrap returned: the bus, or an object that holds it as ``bus``."""
    bootstrap = messagebus_bootstrap
    kwargs = dict(messagebus_overrides)
    if not _accepts(bootstrap, "listeners"):
        _fail(
            f"{_describe(bootstrap)} takes no 'listeners' argument, so the test's recorder "
            "cannot see the bus. Give it one and pass it on: "
            "def bootstrap(..., listeners=()): ... MessageBus(..., listeners=listeners)"
        )
    kwargs["listeners"] = [*kwargs.get("listeners", ()), messagebus_recorder]
    if "sleep" not in kwargs and _accepts(bootstrap, "sleep"):
        kwargs["sleep"] = RecordedSleep(messagebus_waits)
    app = bootstrap(**kwargs)
    if inspect.isawaitable(app):
        if inspect.iscoroutine(app):
            app.close()  # never awaited: said here, rather than in a RuntimeWarning
        _fail(
            f"{_describe(bootstrap)} returned an awaitable; the bootstrap must build the "
            "bus without awaiting (AsyncMessageBus is built synchronously)"
        )
    bus = _bus_of(app, bootstrap)
    if not any(listener is messagebus_recorder for listener in getattr(bus, "_listeners", ())):
        _fail(
            f"{_describe(bootstrap)} took 'listeners' but the bus it built does not have "
            "them; pass them on: MessageBus(..., listeners=listeners)"
        )
    return app


def _bus_of(app: object, bootstrap: Callable[..., Any]) -> MessageBus | AsyncMessageBus:
    for candidate in (app, getattr(app, "bus", None)):
        if isinstance(candidate, (MessageBus, AsyncMessageBus)):
            return candidate
    _fail(
        f"{_describe(bootstrap)} returned {app!r}; the plugin expects a MessageBus or an "
        "AsyncMessageBus, or an object with one as its 'bus' attribute"
    )


@pytest.fixture
def messagebus_bus(
    messagebus_app: Any, messagebus_bootstrap: Callable[..., Any]
) -> MessageBus | AsyncMessageBus:
    """The application's bus, built by its bootstrap with the overrides and the recorder."""
    return _bus_of(messagebus_app, messagebus_bootstrap)


@pytest.fixture
def messagebus_scenario(
    messagebus_bus: MessageBus | AsyncMessageBus, messagebus_recorder: Recorder
) -> Scenario | AsyncScenario:
    """A given / when / then scenario on the test's bus.

    A :class:`~messagebus.testing.Scenario` for a ``MessageBus``; an
    :class:`~messagebus.testing.AsyncScenario` (``given`` and ``when`` awaited)
    for an ``AsyncMessageBus``.
    """
    if isinstance(messagebus_bus, AsyncMessageBus):
        return AsyncScenario(messagebus_bus, messagebus_recorder)
    return Scenario(messagebus_bus, messagebus_recorder)


# -- assertions ----------------------------------------------------------------


def _is_message_list(value: object) -> bool:
    return isinstance(value, (list, tuple)) and all(isinstance(item, Message) for item in value)


@pytest.hookimpl(tryfirst=True)
def pytest_assertrepr_compare(
    config: pytest.Config, op: str, left: object, right: object
) -> list[str] | None:
    """Explain ``==`` between two lists of messages with a diff of their reprs."""
    if op != "==" or type(left) is not type(right):  # a list never equals a tuple
        return None
    if not (_is_message_list(left) and _is_message_list(right)):
        return None
    assert isinstance(left, (list, tuple))
    assert isinstance(right, (list, tuple))
    summary = f"{_short(left)} == {_short(right)}"
    return [
        summary,
        f"lists of {plural(len(left), 'message')} and {plural(len(right), 'message')} differ",
        *diff_lines(left, right, expected_label="left", actual_label="right"),
    ]


def _short(value: object, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 4] + "...]"
