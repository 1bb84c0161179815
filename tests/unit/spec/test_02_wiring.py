"""DESIGN.md §2, Wiring: registering handlers and injecting what they ask for, on both buses.

What goes through a bus runs against both (the ``h`` fixture); what only a
``Registry`` does on its own, refusing a registration, is tested on a registry.
"""

import contextlib
import functools
import inspect
import types
import typing

import attrs
import pytest

from messagebus import (
    AbstractUnitOfWork,
    Command,
    ConfigurationError,
    Context,
    DuplicateHandlerError,
    Event,
    FrozenRegistryError,
    MessageBus,
    Metadata,
    MissingAnnotationError,
    MissingHandlersError,
    Registry,
    UnresolvedDependencyError,
    UnusedDependencyError,
)
from messagebus._dependencies import (
    check_unused_dependencies,
    plan_call,
    unused_dependencies,
)

from ._buses import Harness


@attrs.frozen
class Allocate(Command[str]):
    orderid: str


@attrs.frozen
class Deallocate(Command[str]):
    orderid: str


@attrs.frozen
class Allocated(Event):
    orderid: str


@attrs.frozen
class Deallocated(Event):
    orderid: str


class Clock:
    def __init__(self, name: str) -> None:
        self.name = name


class Product:
    def __init__(self, sku: str) -> None:
        self.sku = sku
        self.events: list[Event] = []


def full_name(handler: typing.Callable[..., object]) -> str:
    return f"{handler.__module__}.{handler.__qualname__}"


# -- the message type of a handler ---------------------------------------------


def test_handler_is_registered_for_the_annotated_type_of_its_first_parameter(
    h: Harness,
) -> None:
    @h.register
    def allocate(cmd: Allocate) -> str:
        return f"allocated {cmd.orderid}"

    h.build(uow=None)

    assert "allocated o1" == h.handle(Allocate("o1"))


@pytest.mark.one_bus("a Registry on its own")
def test_register_called_with_arguments_is_a_decorator_returning_the_handler() -> None:
    registry = Registry()

    def allocate(cmd: Allocate) -> str:
        return "done"

    decorated = registry.register(uow=False)(allocate)

    assert allocate is decorated
    assert allocate is registry.commands[Allocate].handler


def test_handler_is_registered_for_the_type_named_at_registration(h: Harness) -> None:
    def legacy(cmd):  # type: ignore[no-untyped-def]  # no annotation: the type is named
        return f"legacy {cmd.orderid}"

    h.register(legacy, message=Allocate)
    h.build(uow=None)

    assert "legacy o1" == h.handle(Allocate("o1"))


def test_union_annotation_registers_the_handler_for_each_member(h: Harness) -> None:
    seen: list[Event] = []

    @h.register
    def on_change(event: Allocated | Deallocated) -> None:
        seen.append(event)

    h.build(uow=None)
    h.handle(Allocated("o1"))
    h.handle(Deallocated("o2"))

    assert [Allocated("o1"), Deallocated("o2")] == seen


@pytest.mark.one_bus("a Registry on its own")
def test_handler_without_annotation_is_refused_naming_it() -> None:
    registry = Registry()

    def allocate(cmd):  # type: ignore[no-untyped-def]
        return None

    with pytest.raises(MissingAnnotationError) as caught:
        registry.register(allocate)

    assert allocate is caught.value.handler
    assert full_name(allocate) in str(caught.value)
    assert {} == dict(registry.commands)


@pytest.mark.one_bus("a Registry on its own")
def test_handler_without_parameters_is_refused_naming_it() -> None:
    registry = Registry()

    def allocate() -> None:
        return None

    with pytest.raises(MissingAnnotationError, match="allocate"):
        registry.register(allocate)


@pytest.mark.one_bus("a Registry on its own")
def test_annotation_that_is_not_a_message_type_is_refused_naming_the_handler() -> None:
    registry = Registry()

    def allocate(cmd: str) -> None:
        return None

    with pytest.raises(MissingAnnotationError) as caught:
        registry.register(allocate)

    assert allocate is caught.value.handler
    assert full_name(allocate) in str(caught.value)


@pytest.mark.one_bus("a Registry on its own")
def test_type_named_at_registration_that_is_not_a_message_type_is_refused() -> None:
    registry = Registry()

    def allocate(cmd: Allocate) -> None:
        return None

    with pytest.raises(MissingAnnotationError, match="allocate"):
        registry.register(allocate, message=str)  # type: ignore[arg-type]


@pytest.mark.one_bus("a Registry on its own")
def test_second_command_handler_is_refused_naming_both() -> None:
    registry = Registry()

    @registry.register
    def allocate(cmd: Allocate) -> str:
        return "first"

    def allocate_again(cmd: Allocate) -> str:
        return "second"

    with pytest.raises(DuplicateHandlerError) as caught:
        registry.register(allocate_again)

    assert (Allocate, allocate, allocate_again) == (
        caught.value.message_type,
        caught.value.existing,
        caught.value.duplicate,
    )
    assert full_name(allocate) in str(caught.value)
    assert full_name(allocate_again) in str(caught.value)


def test_first_command_handler_stays_registered_after_a_second_is_refused(h: Harness) -> None:
    @h.register
    def allocate(cmd: Allocate) -> str:
        return "first"

    def allocate_again(cmd: Allocate) -> str:
        return "second"

    with pytest.raises(DuplicateHandlerError):
        h.register(allocate_again)
    h.build(uow=None)

    assert "first" == h.handle(Allocate("o1"))


@pytest.mark.one_bus("a Registry on its own")
def test_refused_registration_for_several_types_registers_none_of_them() -> None:
    registry = Registry()

    @registry.register
    def allocate(cmd: Allocate) -> str:
        return "first"

    def on_anything(message: Allocated | Allocate) -> None:
        return None

    with pytest.raises(DuplicateHandlerError):
        registry.register(on_anything)

    assert {} == dict(registry.events)


def test_event_handlers_run_in_registration_order(h: Harness) -> None:
    calls: list[str] = []

    @h.register
    def first(event: Allocated) -> None:
        calls.append("first")

    @h.register
    def second(event: Allocated) -> None:
        calls.append("second")

    @h.register
    def third(event: Allocated) -> None:
        calls.append("third")

    h.build(uow=None)
    h.handle(Allocated("o1"))

    assert ["first", "second", "third"] == calls


def test_include_adds_every_handler_of_another_registry_after_its_own(h: Harness) -> None:
    calls: list[str] = []
    emails = Harness(h.kind)

    @h.register
    def allocate(cmd: Allocate) -> str:
        return "allocated"

    @h.register
    def record(event: Allocated) -> None:
        calls.append("record")

    @emails.register
    def deallocate(cmd: Deallocate) -> str:
        return "deallocated"

    @emails.register
    def send_email(event: Allocated) -> None:
        calls.append("send_email")

    h.registry.include(emails.registry)
    h.build(uow=None)

    assert ("allocated", "deallocated") == (
        h.handle(Allocate("o1")),
        h.handle(Deallocate("o1")),
    )
    h.handle(Allocated("o1"))
    assert ["record", "send_email"] == calls


def test_include_refuses_a_second_command_handler_naming_both(h: Harness) -> None:
    legacy = Harness(h.kind)

    @h.register
    def allocate(cmd: Allocate) -> str:
        return "new"

    @legacy.register
    def old_allocate(cmd: Allocate) -> str:
        return "old"

    with pytest.raises(DuplicateHandlerError) as caught:
        h.registry.include(legacy.registry)

    assert (h.registered(allocate), legacy.registered(old_allocate)) == (
        caught.value.existing,
        caught.value.duplicate,
    )
    h.build(uow=None)
    assert "new" == h.handle(Allocate("o1"))


@pytest.mark.one_bus("a Registry on its own")
def test_refused_include_adds_none_of_the_other_registrys_handlers() -> None:
    orders = Registry()
    legacy = Registry()

    @orders.register
    def allocate(cmd: Allocate) -> str:
        return "new"

    @legacy.register
    def deallocate(cmd: Deallocate) -> str:
        return "old"

    @legacy.register
    def old_allocate(cmd: Allocate) -> str:
        return "old"

    with pytest.raises(DuplicateHandlerError):
        orders.include(legacy)

    assert [Allocate] == list(orders.commands)


@pytest.mark.one_bus("a Registry on its own")
def test_including_a_registry_in_itself_terminates_and_adds_no_handler(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    registry = Registry()

    @registry.register
    def record(event: Allocated) -> None:
        return None

    add = registry._add
    added: list[object] = []

    def bounded_add(*args: typing.Any) -> None:  # turns an endless loop into a failure
        added.append(args)
        assert len(added) < 100, "Registry.include(registry) does not terminate"
        add(*args)

    monkeypatch.setattr(registry, "_add", bounded_add)
    with contextlib.suppress(ConfigurationError):
        registry.include(registry)

    assert (record,) == tuple(r.handler for r in registry.events[Allocated])


# -- injection -------------------------------------------------------------------


def test_dependency_is_injected_by_parameter_name(h: Harness) -> None:
    @h.register
    def allocate(cmd: Allocate, prefix: str) -> str:
        return prefix + cmd.orderid

    h.build(uow=None, dependencies={"prefix": "order-"})

    assert "order-o1" == h.handle(Allocate("o1"))


def test_dependency_is_injected_by_type_when_exactly_one_is_an_instance(h: Harness) -> None:
    @h.register
    def allocate(cmd: Allocate, clock: Clock) -> str:
        return clock.name

    h.build(uow=None, dependencies={"utc_clock": Clock("utc"), "prefix": "x"})

    assert "utc" == h.handle(Allocate("o1"))


def test_dependency_named_like_the_parameter_wins_over_others_of_its_type(h: Harness) -> None:
    @h.register
    def allocate(cmd: Allocate, local: Clock) -> str:
        return local.name

    h.build(uow=None, dependencies={"utc": Clock("utc"), "local": Clock("local")})

    assert "local" == h.handle(Allocate("o1"))


def test_parameter_matching_several_dependencies_by_type_is_refused_naming_them(
    h: Harness,
) -> None:
    @h.register
    def allocate(cmd: Allocate, clock: Clock) -> str:
        return clock.name

    with pytest.raises(UnresolvedDependencyError) as caught:
        h.build(uow=None, dependencies={"utc": Clock("utc"), "local": Clock("local")})

    assert (h.registered(allocate), "clock") == (caught.value.handler, caught.value.parameter)
    assert "local, utc" in str(caught.value)


def test_parameter_that_nothing_provides_is_refused_when_the_bus_is_built(h: Harness) -> None:
    @h.register
    def allocate(cmd: Allocate, clock: Clock) -> str:
        return clock.name

    # Raised when the bus is built, before any message is dispatched.
    with pytest.raises(UnresolvedDependencyError) as caught:
        h.build(uow=None, dependencies={"prefix": "x"})

    assert (h.registered(allocate), "clock") == (caught.value.handler, caught.value.parameter)
    assert full_name(allocate) in str(caught.value)
    assert "'clock'" in str(caught.value)


def test_event_handler_parameter_that_nothing_provides_is_refused_when_the_bus_is_built(
    h: Harness,
) -> None:
    @h.register
    def notify(event: Allocated, mailer: object) -> None:
        return None

    with pytest.raises(UnresolvedDependencyError) as caught:
        h.build(uow=None)

    assert (h.registered(notify), "mailer") == (caught.value.handler, caught.value.parameter)


class Mailer:
    pass


def send_mail(event: Allocated, mailer: Mailer) -> None:
    pass


def send_sms(event: Allocated, sms_gateway) -> None:  # type: ignore[no-untyped-def]
    pass


def allocate_in_uow(command: Allocate, uow: typing.Any) -> str:
    return "b1"


@pytest.mark.parametrize(
    ("handler", "parameter"),
    [
        pytest.param(send_mail, "mailer", id="annotated"),
        pytest.param(send_sms, "sms_gateway", id="not annotated"),
        pytest.param(allocate_in_uow, "uow", id="a unit of work, but the bus has none"),
    ],
)
def test_a_parameter_that_nothing_provides_fails_at_start_up_naming_handler_and_parameter(
    h: Harness, handler: typing.Callable[..., typing.Any], parameter: str
) -> None:
    h.register(handler)  # registration cannot know the dependencies: accepted

    with pytest.raises(UnresolvedDependencyError) as caught:
        h.build(uow=None, dependencies={"clock": object()})

    assert handler.__qualname__ in str(caught.value)
    assert f"'{parameter}'" in str(caught.value)
    assert (h.registered(handler), parameter) == (caught.value.handler, caught.value.parameter)
    assert isinstance(caught.value, ConfigurationError)


def test_parameter_with_a_default_value_is_left_to_it_when_nothing_provides_it(
    h: Harness,
) -> None:
    @h.register
    def allocate(cmd: Allocate, suffix: str = "-default") -> str:
        return cmd.orderid + suffix

    h.build(uow=None)

    assert "o1-default" == h.handle(Allocate("o1"))


def test_context_and_metadata_are_injected_by_annotation(h: Harness) -> None:
    given = Metadata.new()
    seen: list[object] = []

    @h.register(uow=False)
    def allocate(cmd: Allocate, ctx: Context, meta: Metadata) -> str:
        seen.extend([ctx.message, ctx.metadata, meta])
        return "done"

    h.build(uow=None)
    h.handle(Allocate("o1"), metadata=given)

    assert [Allocate("o1"), given, given] == seen


def test_parameter_named_uow_receives_the_unit_of_work_of_the_attempt(h: Harness) -> None:
    received: list[object] = []

    @h.register
    def allocate(cmd: Allocate, uow) -> str:  # type: ignore[no-untyped-def]
        received.append(uow)
        return "done"

    h.build(uow=h.uow)
    h.handle(Allocate("o1"))

    assert h.uows == received


def test_parameter_annotated_with_a_unit_of_work_type_receives_the_unit_of_work(
    h: Harness,
) -> None:
    received: list[object] = []

    @h.register
    def allocate(cmd: Allocate, work: AbstractUnitOfWork) -> str:
        received.append(work)
        return "done"

    h.build(uow=h.uow)
    h.handle(Allocate("o1"))

    assert h.uows == received


def test_handler_asking_for_a_unit_of_work_is_refused_when_the_bus_has_none(h: Harness) -> None:
    @h.register
    def allocate(cmd: Allocate, uow: AbstractUnitOfWork) -> str:
        return "done"

    with pytest.raises(UnresolvedDependencyError) as caught:
        h.build(uow=None)

    assert (h.registered(allocate), "uow") == (caught.value.handler, caught.value.parameter)


def test_handler_registered_without_unit_of_work_cannot_ask_for_one(h: Harness) -> None:
    @h.register(uow=False)
    def allocate(cmd: Allocate, uow: AbstractUnitOfWork) -> str:
        return "done"

    with pytest.raises(UnresolvedDependencyError) as caught:
        h.build(uow=h.uow)

    assert (h.registered(allocate), "uow") == (caught.value.handler, caught.value.parameter)
    assert "uow=False" in str(caught.value)


def test_unit_of_work_cannot_be_given_as_a_dependency(h: Harness) -> None:
    @h.register
    def allocate(cmd: Allocate, uow: AbstractUnitOfWork) -> str:
        return "done"

    with pytest.raises(ConfigurationError, match="uow"):
        h.build(uow=None, dependencies={"uow": h.uow()})


def test_per_attempt_parameters_may_follow_dependencies_or_be_keyword_only(h: Harness) -> None:
    seen: list[tuple[str, str]] = []

    @h.register
    def allocate(cmd: Allocate, prefix: str, uow: typing.Any, context: Context) -> str:
        context.emit(Allocated(cmd.orderid))
        return f"{prefix} {cmd.orderid} {uow is context.uow}"

    @h.register(uow=False)
    def on_allocated(event: Allocated, *, metadata: Metadata, context: Context) -> None:
        seen.append((event.orderid, str(metadata.causation_id == context.metadata.causation_id)))

    h.build(dependencies={"prefix": "allocated"})

    assert "allocated lamp True" == h.handle(Allocate("lamp"))
    assert [("lamp", "True")] == seen
    assert [(1, 0, True)] == [(u.committed, u.rolled_back, u.closed) for u in h.uows]


def keywords_only(handler: typing.Callable[..., typing.Any]) -> typing.Callable[..., typing.Any]:
    """A decorator whose wrapper takes the message and keywords: its signature is the handler's."""

    @functools.wraps(handler)
    def wrapper(message: typing.Any, **dependencies: typing.Any) -> typing.Any:
        return handler(message, **dependencies)

    return wrapper


def test_a_decorated_handler_that_takes_keywords_gets_its_context_and_uow_as_keywords(
    h: Harness,
) -> None:
    @h.register(uow=False)
    @keywords_only
    def allocate(cmd: Allocate, context: Context) -> str:
        context.emit(Allocated(cmd.orderid))
        return "ok"

    @h.register
    @keywords_only
    def on_allocated(event: Allocated, uow: typing.Any) -> None:
        uow.products.add(Product(event.orderid))  # committed by the bus

    assert "ok" == h.handle(Allocate("lamp"))
    assert "lamp" == h.products.get("lamp").sku


def test_injection_is_resolved_once_when_the_bus_is_built(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[object] = []

    @h.register
    def allocate(cmd: Allocate, uow: typing.Any, context: Context, clock: Clock) -> str:
        context.emit(Allocated(cmd.orderid))
        return clock.name

    @h.register
    def record(event: Allocated, metadata: Metadata, prefix: str) -> None:
        seen.append(prefix + event.orderid)

    h.build(dependencies={"the_clock": Clock("utc"), "prefix": "x-"})

    def no_inspection(*args: object, **kwargs: object) -> typing.NoReturn:
        raise AssertionError("dispatch inspected a signature")

    monkeypatch.setattr(inspect, "signature", no_inspection)
    monkeypatch.setattr(inspect.Signature, "from_callable", no_inspection)
    monkeypatch.setattr(typing, "get_type_hints", no_inspection)

    assert "utc" == h.handle(Allocate("o1"))
    assert ["x-o1"] == seen
    assert [(1, 0, True), (1, 0, True)] == [(u.committed, u.rolled_back, u.closed) for u in h.uows]


def test_unresolvable_annotation_of_a_dependency_does_not_prevent_registration(
    h: Harness,
) -> None:
    def allocate(cmd: Allocate, notifier) -> str:  # type: ignore[no-untyped-def]
        return f"{notifier} {cmd.orderid}"

    # What `notifier: Notifier` gives under `from __future__ import annotations`
    # when Notifier is imported only under TYPE_CHECKING.
    allocate.__annotations__["notifier"] = "Notifier"
    h.register(allocate)
    h.build(uow=None, dependencies={"notifier": "notified"})

    assert "notified o1" == h.handle(Allocate("o1"))


# -- the start-up check of required handlers ------------------------------------


def test_required_commands_without_handlers_are_refused_when_the_bus_is_built(
    h: Harness,
) -> None:
    @h.register
    def allocate(cmd: Allocate) -> str:
        return "done"

    with pytest.raises(MissingHandlersError) as caught:
        h.build(uow=None, require_handlers=[Allocate, Deallocate])

    assert (Deallocate,) == caught.value.message_types
    assert Deallocate.__qualname__ in str(caught.value)
    assert "Allocate," not in str(caught.value)


def test_required_commands_with_handlers_pass_the_check(h: Harness) -> None:
    @h.register
    def allocate(cmd: Allocate) -> str:
        return "done"

    h.build(uow=None, require_handlers=[Allocate])

    assert "done" == h.handle(Allocate("o1"))


def test_every_command_defined_in_a_required_module_needs_a_handler(h: Harness) -> None:
    module = types.ModuleType("shop.commands")

    @attrs.frozen
    class CreateBatch(Command[None]):
        ref: str

    @attrs.frozen
    class ChangeQuantity(Command[None]):
        ref: str

    @attrs.frozen
    class CancelOrder(Command[None]):
        ref: str

    @attrs.frozen
    class BatchCreated(Event):
        ref: str

    for cls in (CreateBatch, ChangeQuantity, CancelOrder, BatchCreated):
        cls.__module__ = module.__name__
        setattr(module, cls.__name__, cls)
    module.Allocate = Allocate  # type: ignore[attr-defined]  # imported, defined elsewhere

    @h.register
    def create_batch(cmd: CreateBatch) -> None:
        return None

    with pytest.raises(MissingHandlersError) as caught:
        h.build(uow=None, require_handlers=[module])

    assert {ChangeQuantity, CancelOrder} == set(caught.value.message_types)
    assert "shop.commands." + CancelOrder.__qualname__ in str(caught.value)
    assert "shop.commands." + ChangeQuantity.__qualname__ in str(caught.value)


def test_required_handlers_take_only_command_types_and_modules(h: Harness) -> None:
    with pytest.raises(ConfigurationError, match="require_handlers"):
        h.build(uow=None, require_handlers=[Allocated])


# -- names close to a dependency's, and dependencies no handler asks for ---------


@pytest.mark.one_bus("resolved when the bus is built, shared code")
def test_a_misspelt_dependency_is_refused_with_the_name_it_was_meant_to_be() -> None:
    registry = Registry()

    @registry.register(uow=False)
    def welcome(event: Allocated, mialer) -> None:  # type: ignore[no-untyped-def]
        return None

    with pytest.raises(UnresolvedDependencyError) as caught:
        MessageBus(registry, dependencies={"mailer": object(), "clock": Clock("c")})

    assert str(caught.value).endswith(
        "asks for parameter 'mialer', but no dependency is named 'mialer'; did you mean 'mailer'?"
    )


@pytest.mark.one_bus("resolved when the bus is built, shared code")
def test_an_unannotated_parameter_is_refused_without_naming_an_internal_type() -> None:
    registry = Registry()

    @registry.register(uow=False)
    def welcome(event: Allocated, printer) -> None:  # type: ignore[no-untyped-def]
        return None

    with pytest.raises(UnresolvedDependencyError) as caught:
        MessageBus(registry, dependencies={"mailer": object()})

    assert str(caught.value).endswith("but no dependency is named 'printer'")
    assert "_empty" not in str(caught.value)


@pytest.mark.one_bus("resolved when the bus is built, shared code")
def test_a_bus_without_dependencies_says_it_was_given_none() -> None:
    registry = Registry()

    @registry.register(uow=False)
    def welcome(event: Allocated, mailer: Clock) -> None:
        return None

    with pytest.raises(UnresolvedDependencyError) as caught:
        MessageBus(registry)

    assert "the bus was given no dependencies" in str(caught.value)


def plans_of(registry: Registry, dependencies: dict[str, object]) -> list[typing.Any]:
    registrations = [*registry.commands.values()]
    registrations += [r for rs in registry.events.values() for r in rs]
    return [plan_call(r, dependencies, has_uow_factory=False) for r in registrations]


@pytest.mark.one_bus("the resolution on its own")
def test_unused_dependencies_are_those_no_handler_is_given_by_name_or_type() -> None:
    registry = Registry()

    @registry.register(uow=False)
    def allocate(cmd: Allocate, prefix: str) -> str:
        return prefix

    @registry.register(uow=False)
    def notify(event: Allocated, clock: Clock, context: Context) -> None:
        return None

    dependencies = {"mailer": object(), "prefix": "p", "the_clock": Clock("c"), "spare": 1}

    assert ("mailer", "spare") == unused_dependencies(
        dependencies, plans_of(registry, dependencies)
    )
    assert () == unused_dependencies(
        {"prefix": "p"}, plans_of(registry, {"prefix": "p", "clock": Clock("c")})
    )


@pytest.mark.one_bus("the resolution on its own")
def test_unused_dependencies_are_refused_naming_them_when_asked_to() -> None:
    registry = Registry()

    @registry.register(uow=False)
    def allocate(cmd: Allocate, prefix: str) -> str:
        return prefix

    dependencies = {"prefix": "p", "mailer": object()}

    with pytest.raises(UnusedDependencyError) as caught:
        check_unused_dependencies(dependencies, plans_of(registry, dependencies))

    assert ("mailer",) == caught.value.names
    assert (
        "no handler asks for the dependency 'mailer': check the handlers' parameter names, "
        "or remove it"
    ) == str(caught.value)
    check_unused_dependencies({"prefix": "p"}, plans_of(registry, {"prefix": "p"}))


# -- a frozen registry -------------------------------------------------------------


@pytest.mark.one_bus("a Registry on its own")
def test_a_frozen_registry_refuses_a_handler_saying_what_to_do() -> None:
    registry = Registry()
    registry.freeze()

    def late(cmd: Allocate) -> str:
        return "late"

    with pytest.raises(FrozenRegistryError) as caught:
        registry.register(late)

    assert late is caught.value.handler
    assert f"cannot register {full_name(late)}: the registry is frozen" in str(caught.value)
    assert "register every handler before building the bus" in str(caught.value)
    assert {} == dict(registry.commands)


@pytest.mark.one_bus("a Registry on its own")
def test_a_frozen_registry_refuses_another_registrys_handlers() -> None:
    registry, other = Registry(), Registry()
    other.register(lambda event: None, message=Allocated, uow=False)
    registry.freeze()

    with pytest.raises(FrozenRegistryError, match="another registry's handlers"):
        registry.include(other)
    assert {} == dict(registry.events)


@pytest.mark.one_bus("a Registry on its own")
def test_freezing_twice_is_freezing_once() -> None:
    registry = Registry()
    assert not registry.frozen

    registry.freeze()
    registry.freeze()

    assert registry.frozen


@pytest.mark.one_bus("a Registry on its own")
def test_a_registry_shows_how_many_handlers_it_holds_and_their_names() -> None:
    registry = Registry()
    assert "<Registry: 0 command handlers, 0 event handlers: none>" == repr(registry)

    @registry.register(uow=False)
    def allocate(cmd: Allocate) -> str:
        return ""

    @registry.register(uow=False)
    def notify(event: Allocated | Deallocated) -> None:
        return None

    registry.freeze()

    assert (
        f"<Registry: 1 command handler, 2 event handlers, frozen: "
        f"{full_name(allocate)}, {full_name(notify)}>"
    ) == repr(registry)
