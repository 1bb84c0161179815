"""The pytest plugin, run by pytest itself (pytester): fixtures built from an
application's bootstrap, clear errors when it is not set up, and no trace in
projects that do not use it."""

from __future__ import annotations

import textwrap

import pytest

import messagebus.testing.plugin

pytest_plugins = ["pytester"]

#: A small application with a bootstrap, as a user would write one.
SHOP = """
import time
from typing import Any

import attrs

from messagebus import Command, Event, MessageBus, Registry, Transient
from messagebus.testing import FakeUnitOfWork, InMemoryRepository


@attrs.frozen
class CreateBatch(Command[None]):
    ref: str
    sku: str
    qty: int


@attrs.frozen
class Allocate(Command[str]):
    orderid: str
    sku: str
    qty: int


@attrs.frozen
class Allocated(Event):
    orderid: str
    batchref: str


class MailBusy(Transient):
    pass


class Product:
    def __init__(self, sku):
        self.sku = sku
        self.batches = {}
        self.events = []


registry = Registry()


@registry.register
def create_batch(cmd: CreateBatch, uow) -> None:
    product = uow.products.get(cmd.sku) or Product(cmd.sku)
    product.batches[cmd.ref] = cmd.qty
    uow.products.add(product)


@registry.register
def allocate(cmd: Allocate, uow) -> str:
    product = uow.products.get(cmd.sku)
    if product is None:
        raise KeyError(cmd.sku)
    for ref, qty in sorted(product.batches.items()):
        if qty >= cmd.qty:
            product.batches[ref] = qty - cmd.qty
            product.events.append(Allocated(cmd.orderid, ref))
            return ref
    return ""


@registry.register(uow=False)
def send_mail(event: Allocated, mail: list) -> None:
    if len(mail) < 2 and event.orderid == "flaky":
        mail.append("busy")
        raise MailBusy("421")
    mail.append(event.orderid)


def bootstrap(uow=None, mail=None, sleep=time.sleep, listeners=()):
    if uow is None:
        raise RuntimeError("production would connect to the database here")
    return MessageBus(
        registry,
        uow=uow,
        dependencies={"mail": [] if mail is None else mail},
        sleep=sleep,
        listeners=listeners,
    )
"""

CONFTEST = """
import pytest

from messagebus.testing import FakeUnitOfWork, InMemoryRepository


@pytest.fixture
def products():
    return InMemoryRepository(key=lambda product: product.sku)


@pytest.fixture
def mail():
    return []


@pytest.fixture
def messagebus_overrides(products, mail):
    return {"uow": lambda: FakeUnitOfWork(products=products), "mail": mail}
"""

INI = """
[pytest]
messagebus_bootstrap = shop:bootstrap
addopts = --strict-config --strict-markers -p no:cacheprovider
filterwarnings = error
"""


def literal(line: str) -> str:
    """A line for fnmatch_lines that matches itself only."""
    return "".join(f"[{char}]" if char in "[]?*" else char for char in line)


@pytest.fixture
def shop(pytester: pytest.Pytester) -> pytest.Pytester:
    """A project whose bootstrap is configured, with fakes given in its conftest."""
    pytester.makepyfile(shop=SHOP)
    pytester.makeconftest(CONFTEST)
    pytester.makeini(INI)
    pytester.syspathinsert()
    return pytester


def test_the_plugin_is_registered_by_its_entry_point(request: pytest.FixtureRequest) -> None:
    assert request.config.pluginmanager.get_plugin("messagebus") is messagebus.testing.plugin


def test_a_project_that_does_not_configure_it_runs_cleanly(pytester: pytest.Pytester) -> None:
    pytester.makeini(
        "[pytest]\naddopts = --strict-config --strict-markers -p no:cacheprovider\n"
        "filterwarnings = error\n"
    )
    pytester.makepyfile("def test_nothing_to_do_with_messagebus():\n    assert 1 + 1 == 2\n")

    result = pytester.runpytest("-W", "error")

    result.assert_outcomes(passed=1)
    assert "warning" not in result.stdout.str().lower()


def test_the_ini_option_is_documented_in_pytest_help(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--help")

    result.stdout.fnmatch_lines(["*messagebus_bootstrap (string):*"])


def test_the_fixtures_build_the_application_s_bus_with_the_fakes(shop: pytest.Pytester) -> None:
    shop.makepyfile(
        """
        from messagebus import MessageBus
        from messagebus.testing import Recorder, Scenario
        from shop import Allocate, Allocated, CreateBatch


        def test_the_bus(messagebus_bus, messagebus_recorder, products, mail):
            assert isinstance(messagebus_bus, MessageBus)
            messagebus_bus.handle(CreateBatch("b1", "LAMP", 10))
            assert "b1" == messagebus_bus.handle(Allocate("o1", "LAMP", 2))
            assert {"b1": 8} == products.get("LAMP").batches
            assert ["o1"] == mail
            assert [Allocated("o1", "b1")] == messagebus_recorder.raised


        def test_each_test_has_its_own_recorder(messagebus_recorder):
            assert [] == messagebus_recorder.dispatches


        def test_the_scenario(messagebus_scenario):
            assert isinstance(messagebus_scenario, Scenario)
            messagebus_scenario.given(CreateBatch("b1", "LAMP", 10))
            messagebus_scenario.when(Allocate("o1", "LAMP", 2))
            messagebus_scenario.then_raised(Allocated("o1", "b1")).then_returned("b1")
        """
    )

    result = shop.runpytest()

    result.assert_outcomes(passed=3)


def test_retries_do_not_sleep_and_the_waits_are_recorded(shop: pytest.Pytester) -> None:
    shop.makepyfile(
        """
        from shop import Allocated


        def test_waits(messagebus_bus, messagebus_recorder, messagebus_waits, mail):
            messagebus_bus.handle(Allocated("flaky", "b1"))
            assert ["busy", "busy", "flaky"] == mail
            assert 2 == len(messagebus_waits)
            assert 2 == len(messagebus_recorder.retried(handler="send_mail"))
        """
    )

    shop.runpytest().assert_outcomes(passed=1)


def test_a_failing_assert_on_messages_shows_a_diff(shop: pytest.Pytester) -> None:
    shop.makepyfile(
        """
        from shop import Allocate, Allocated, CreateBatch


        def test_wrong_batch(messagebus_bus, messagebus_recorder):
            messagebus_bus.handle(CreateBatch("b1", "LAMP", 10))
            messagebus_bus.handle(Allocate("o1", "LAMP", 2))
            assert [Allocated("o1", "b2")] == messagebus_recorder.raised


        def test_wrong_then(messagebus_scenario):
            messagebus_scenario.given(CreateBatch("b1", "LAMP", 10))
            messagebus_scenario.when(Allocate("o1", "LAMP", 2))
            messagebus_scenario.then_raised(Allocated("o1", "b2"))
        """
    )

    result = shop.runpytest()

    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines(
        [
            literal("E       AssertionError: assert [Allocated(orderid='o1', batchref='b2')] == ")
            + "*",
            "E         lists of 1 message and 1 message differ",
            "E         (- left, + right)",
            literal("E         - Allocated(orderid='o1', batchref='b2')"),
            literal("E         ?                                    ^"),
            literal("E         + Allocated(orderid='o1', batchref='b1')"),
            literal("E         ?                                    ^"),
        ]
    )
    result.stdout.fnmatch_lines(
        [
            "E       AssertionError: then_raised: expected 1 event; *",
            "E         (- expected, + raised)",
            literal("E         - Allocated(orderid='o1', batchref='b2')"),
            "E       what the bus did:",
        ]
    )
    # The scenario's own frames are hidden: the failure points at the test.
    assert "_scenario.py" not in result.stdout.str()


def test_the_hook_leaves_other_comparisons_to_pytest(shop: pytest.Pytester) -> None:
    shop.makepyfile(
        """
        from shop import Allocated


        def test_lists_of_other_things():
            assert [1, 2] == [1, 3]


        def test_one_message():
            assert Allocated("o1", "b2") == Allocated("o1", "b1")


        def test_a_list_and_a_tuple():
            assert [Allocated("o1", "b1")] == (Allocated("o1", "b1"),)


        def test_not_equal():
            assert [Allocated("o1", "b1")] != [Allocated("o1", "b1")]
        """
    )

    result = shop.runpytest()

    result.assert_outcomes(failed=4)
    assert "lists of" not in result.stdout.str()
    result.stdout.fnmatch_lines(["*Differing attributes:*"])


def test_a_service_object_holding_the_bus_is_accepted(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        service=SHOP
        + """

class Service:
    def __init__(self, bus, views):
        self.bus = bus
        self.views = views


def build_service(uow=None, listeners=(), **kwargs):
    return Service(bootstrap(uow=uow, listeners=listeners, **kwargs), views={"orders": 0})
"""
    )
    pytester.makeini(INI.replace("shop:bootstrap", "service:build_service"))
    pytester.makeconftest(CONFTEST)
    pytester.syspathinsert()
    pytester.makepyfile(
        """
        from service import Allocated, Service


        def test_service(messagebus_app, messagebus_bus, messagebus_waits, mail):
            assert isinstance(messagebus_app, Service)
            assert messagebus_app.bus is messagebus_bus
            messagebus_bus.handle(Allocated("flaky", "b1"))
            assert 2 == len(messagebus_waits)  # **kwargs took the sleep too
        """
    )

    pytester.runpytest().assert_outcomes(passed=1)


def test_the_bootstrap_fixture_may_be_overridden_instead_of_the_ini_option(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(shop=SHOP)
    pytester.makeconftest(
        CONFTEST
        + """

import shop


@pytest.fixture
def messagebus_bootstrap():
    return shop.bootstrap
"""
    )
    pytester.syspathinsert()
    pytester.makepyfile(
        """
        from shop import CreateBatch


        def test_it(messagebus_bus, products):
            messagebus_bus.handle(CreateBatch("b1", "LAMP", 1))
            assert products.get("LAMP") is not None
        """
    )

    pytester.runpytest("-p", "no:cacheprovider").assert_outcomes(passed=1)


def test_the_async_bus_gets_an_async_scenario_and_sleeps_that_do_not_wait(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(
        async_shop="""
import asyncio

import attrs

from messagebus import AsyncMessageBus, Event, Registry, Transient

registry = Registry()


@attrs.frozen
class Ping(Event):
    n: int


class Busy(Transient):
    pass


@registry.register(uow=False)
async def pong(event: Ping, seen: list) -> None:
    seen.append(event.n)
    if len(seen) < 3:
        raise Busy("again")


def bootstrap(seen, listeners=(), sleep=asyncio.sleep):
    return AsyncMessageBus(
        registry, dependencies={"seen": seen}, listeners=listeners, sleep=sleep
    )
"""
    )
    pytester.makeini(INI.replace("shop:bootstrap", "async_shop:bootstrap"))
    pytester.makeconftest(
        """
        import pytest


        @pytest.fixture
        def seen():
            return []


        @pytest.fixture
        def messagebus_overrides(seen):
            return {"seen": seen}
        """
    )
    pytester.syspathinsert()
    pytester.makepyfile(
        """
        import asyncio

        from messagebus.testing import AsyncScenario
        from async_shop import Ping


        def test_async(messagebus_scenario, messagebus_waits, seen):
            assert isinstance(messagebus_scenario, AsyncScenario)
            asyncio.run(messagebus_scenario.when(Ping(1)))
            messagebus_scenario.then_nothing_raised()
            assert [1, 1, 1] == seen
            assert 2 == len(messagebus_waits)
        """
    )

    pytester.runpytest().assert_outcomes(passed=1)


@pytest.mark.parametrize(
    ("ini", "error"),
    [
        ("", "no bootstrap is configured*messagebus_bootstrap = 'package.module:function'*"),
        ("shop.bootstrap", "*'shop.bootstrap' is not of the form 'package.module:function'"),
        ("nowhere:bootstrap", "*module 'nowhere' cannot be imported*is it on sys.path*"),
        ("shop:missing", "*shop has no 'missing'"),
        ("shop:registry.commands", "*'shop:registry.commands' is not callable*"),
    ],
)
def test_a_misconfigured_bootstrap_fails_the_tests_that_use_it_and_says_why(
    shop: pytest.Pytester, ini: str, error: str
) -> None:
    shop.makeini(INI.replace("shop:bootstrap", ini))
    shop.makepyfile(
        """
        def test_uses_the_bus(messagebus_bus):
            pass


        def test_does_not(products):
            pass
        """
    )

    result = shop.runpytest()

    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(["*ERROR at setup of test_uses_the_bus*", f"messagebus: {error}"])


@pytest.mark.parametrize(
    ("bootstrap", "error"),
    [
        (
            "def bootstrap(uow=None):\n    return None",
            "*takes no 'listeners' argument, so the test's recorder cannot see the bus*",
        ),
        (
            "def bootstrap(uow=None, mail=None, listeners=()):\n"
            "    return MessageBus(registry, uow=uow, dependencies={'mail': []})",
            "*took 'listeners' but the bus it built does not have them*",
        ),
        (
            "def bootstrap(uow=None, mail=None, listeners=()):\n    return 'a bus'",
            "*returned 'a bus'; the plugin expects a MessageBus or an AsyncMessageBus*",
        ),
        (
            "async def bootstrap(uow=None, mail=None, listeners=()):\n    return None",
            "*returned an awaitable; the bootstrap must build the bus without awaiting*",
        ),
    ],
    ids=["no listeners", "listeners not passed on", "not a bus", "async"],
)
def test_a_bootstrap_the_plugin_cannot_use_is_explained(
    shop: pytest.Pytester, bootstrap: str, error: str
) -> None:
    shop.makepyfile(shop=SHOP + "\n\n" + textwrap.dedent(bootstrap) + "\n")
    shop.makepyfile("def test_uses_the_bus(messagebus_bus):\n    pass\n")

    result = shop.runpytest()

    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*ERROR at setup of test_uses_the_bus*", f"messagebus: {error}"])


def test_a_listener_given_in_the_overrides_is_kept(shop: pytest.Pytester) -> None:
    shop.makeconftest(
        CONFTEST
        + """

from messagebus.testing import Recorder

mine = Recorder()


@pytest.fixture
def messagebus_overrides(products, mail):
    return {"uow": lambda: FakeUnitOfWork(products=products), "mail": mail, "listeners": [mine]}
"""
    )
    shop.makepyfile(
        """
        from conftest import mine
        from shop import CreateBatch


        def test_both_listen(messagebus_bus, messagebus_recorder):
            messagebus_bus.handle(CreateBatch("b1", "LAMP", 1))
            assert mine.handled() == messagebus_recorder.handled() == [CreateBatch("b1", "LAMP", 1)]
        """
    )

    shop.runpytest().assert_outcomes(passed=1)


def test_recorded_sleep_returns_at_once_called_or_awaited(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import asyncio
    import time

    def refuse(seconds: float) -> None:
        raise AssertionError(f"a real sleep({seconds}) was called")

    async def refuse_awaited(seconds: float, result: object = None) -> None:
        refuse(seconds)

    # Were the recorded sleep to wait really, in either form, the test would fail.
    monkeypatch.setattr(time, "sleep", refuse)
    monkeypatch.setattr(asyncio, "sleep", refuse_awaited)
    waits: list[float] = []
    sleep = messagebus.testing.plugin.RecordedSleep(waits)

    sleep(0.5)

    async def awaited() -> None:
        await sleep(1.5)

    asyncio.run(awaited())
    assert [0.5, 1.5] == waits


def test_without_overrides_the_bootstrap_gets_the_recorder_and_the_sleep_only(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(
        pure="""
import attrs

from messagebus import Command, MessageBus, Registry

registry = Registry()


@attrs.frozen
class Echo(Command[str]):
    text: str


@registry.register(uow=False)
def echo(cmd: Echo) -> str:
    return cmd.text


def bootstrap(**options):
    assert sorted(options) == ["listeners", "sleep"]
    return MessageBus(registry, **options)
"""
    )
    pytester.makeini(INI.replace("shop:bootstrap", "pure:bootstrap"))
    pytester.syspathinsert()
    pytester.makepyfile(
        """
        from pure import Echo


        def test_echo(messagebus_scenario):
            messagebus_scenario.when(Echo("hi")).then_returned("hi").then_nothing_raised()
        """
    )

    pytester.runpytest().assert_outcomes(passed=1)


def test_a_bootstrap_whose_signature_cannot_be_read_is_given_everything() -> None:
    accepts = messagebus.testing.plugin._accepts

    assert accepts(max, "listeners")  # a builtin without a signature
    assert not accepts(lambda uow=None: None, "listeners")
    assert not accepts(lambda *listeners: None, "listeners")


@pytest.mark.parametrize(
    "fixtures", ["messagebus_logs, messagebus_bus", "messagebus_bus, messagebus_logs"]
)
def test_the_logs_fixture_holds_the_bus_s_log_events_of_the_test(
    shop: pytest.Pytester, fixtures: str
) -> None:
    shop.makepyfile(
        f"""
        from shop import Allocated, CreateBatch


        def test_logged({fixtures}):
            messagebus_bus.handle(CreateBatch("b1", "LAMP", 10))
            messagebus_bus.handle(Allocated("flaky", "b1"))
            assert [
                ("message_handled", "CreateBatch", "succeeded"),
                ("message_attempt_failed", "Allocated", "retrying"),
                ("message_attempt_failed", "Allocated", "retrying"),
                ("message_handled", "Allocated", "succeeded"),
            ] == [
                (log["event"], log["message_name"], log["outcome"]) for log in messagebus_logs
            ]


        def test_each_test_has_its_own(messagebus_logs):
            assert [] == messagebus_logs
        """
    )

    shop.runpytest().assert_outcomes(passed=2)
