"""Wiring (DESIGN.md §2): registering handlers and injecting what they ask for."""

import contextlib
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
from messagebus.testing import FakeUnitOfWork

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


def full_name(handler: typing.Callable[..., object]) -> str:
    return f"{handler.__module__}.{handler.__qualname__}"


# -- the message type of a handler ---------------------------------------------


def test_handler_is_registered_for_the_annotated_type_of_its_first_parameter() -> None:
    registry = Registry()

    @registry.register
    def allocate(cmd: Allocate) -> str:
        return f"allocated {cmd.orderid}"

    assert "allocated o1" == MessageBus(registry).handle(Allocate("o1"))


def test_register_called_with_arguments_is_a_decorator_returning_the_handler() -> None:
    registry = Registry()

    def allocate(cmd: Allocate) -> str:
        return "done"

    decorated = registry.register(uow=False)(allocate)

    assert allocate is decorated
    assert allocate is registry.commands[Allocate].handler


def test_handler_is_registered_for_the_type_named_at_registration() -> None:
    registry = Registry()

    def legacy(cmd):  # type: ignore[no-untyped-def]  # no annotation: the type is named
        return f"legacy {cmd.orderid}"

    registry.register(legacy, message=Allocate)

    assert "legacy o1" == MessageBus(registry).handle(Allocate("o1"))


def test_union_annotation_registers_the_handler_for_each_member() -> None:
    registry = Registry()
    seen: list[Event] = []

    @registry.register
    def on_change(event: Allocated | Deallocated) -> None:
        seen.append(event)

    bus = MessageBus(registry)
    bus.handle(Allocated("o1"))
    bus.handle(Deallocated("o2"))

    assert [Allocated("o1"), Deallocated("o2")] == seen


def test_handler_without_annotation_is_refused_naming_it() -> None:
    registry = Registry()

    def allocate(cmd):  # type: ignore[no-untyped-def]
        return None

    with pytest.raises(MissingAnnotationError) as caught:
        registry.register(allocate)

    assert allocate is caught.value.handler
    assert full_name(allocate) in str(caught.value)
    assert {} == dict(registry.commands)


def test_handler_without_parameters_is_refused_naming_it() -> None:
    registry = Registry()

    def allocate() -> None:
        return None

    with pytest.raises(MissingAnnotationError, match="allocate"):
        registry.register(allocate)


def test_annotation_that_is_not_a_message_type_is_refused_naming_the_handler() -> None:
    registry = Registry()

    def allocate(cmd: str) -> None:
        return None

    with pytest.raises(MissingAnnotationError) as caught:
        registry.register(allocate)

    assert allocate is caught.value.handler
    assert full_name(allocate) in str(caught.value)


def test_type_named_at_registration_that_is_not_a_message_type_is_refused() -> None:
    registry = Registry()

    def allocate(cmd: Allocate) -> None:
        return None

    with pytest.raises(MissingAnnotationError, match="allocate"):
        registry.register(allocate, message=str)  # type: ignore[arg-type]


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


def test_first_command_handler_stays_registered_after_a_second_is_refused() -> None:
    registry = Registry()

    @registry.register
    def allocate(cmd: Allocate) -> str:
        return "first"

    def allocate_again(cmd: Allocate) -> str:
        return "second"

    with pytest.raises(DuplicateHandlerError):
        registry.register(allocate_again)

    assert "first" == MessageBus(registry).handle(Allocate("o1"))


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


def test_event_handlers_run_in_registration_order() -> None:
    registry = Registry()
    calls: list[str] = []

    @registry.register
    def first(event: Allocated) -> None:
        calls.append("first")

    @registry.register
    def second(event: Allocated) -> None:
        calls.append("second")

    @registry.register
    def third(event: Allocated) -> None:
        calls.append("third")

    MessageBus(registry).handle(Allocated("o1"))

    assert ["first", "second", "third"] == calls


def test_include_adds_every_handler_of_another_registry_after_its_own() -> None:
    calls: list[str] = []
    orders = Registry()
    emails = Registry()

    @orders.register
    def allocate(cmd: Allocate) -> str:
        return "allocated"

    @orders.register
    def record(event: Allocated) -> None:
        calls.append("record")

    @emails.register
    def deallocate(cmd: Deallocate) -> str:
        return "deallocated"

    @emails.register
    def send_email(event: Allocated) -> None:
        calls.append("send_email")

    orders.include(emails)
    bus = MessageBus(orders)

    assert ("allocated", "deallocated") == (
        bus.handle(Allocate("o1")),
        bus.handle(Deallocate("o1")),
    )
    bus.handle(Allocated("o1"))
    assert ["record", "send_email"] == calls


def test_include_refuses_a_second_command_handler_naming_both() -> None:
    orders = Registry()
    legacy = Registry()

    @orders.register
    def allocate(cmd: Allocate) -> str:
        return "new"

    @legacy.register
    def old_allocate(cmd: Allocate) -> str:
        return "old"

    with pytest.raises(DuplicateHandlerError) as caught:
        orders.include(legacy)

    assert (allocate, old_allocate) == (caught.value.existing, caught.value.duplicate)
    assert "new" == MessageBus(orders).handle(Allocate("o1"))


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


def test_dependency_is_injected_by_parameter_name() -> None:
    registry = Registry()

    @registry.register
    def allocate(cmd: Allocate, prefix: str) -> str:
        return prefix + cmd.orderid

    bus = MessageBus(registry, dependencies={"prefix": "order-"})

    assert "order-o1" == bus.handle(Allocate("o1"))


def test_dependency_is_injected_by_type_when_exactly_one_is_an_instance() -> None:
    registry = Registry()

    @registry.register
    def allocate(cmd: Allocate, clock: Clock) -> str:
        return clock.name

    bus = MessageBus(registry, dependencies={"utc_clock": Clock("utc"), "prefix": "x"})

    assert "utc" == bus.handle(Allocate("o1"))


def test_dependency_named_like_the_parameter_wins_over_others_of_its_type() -> None:
    registry = Registry()

    @registry.register
    def allocate(cmd: Allocate, local: Clock) -> str:
        return local.name

    bus = MessageBus(registry, dependencies={"utc": Clock("utc"), "local": Clock("local")})

    assert "local" == bus.handle(Allocate("o1"))


def test_parameter_matching_several_dependencies_by_type_is_refused_naming_them() -> None:
    registry = Registry()

    @registry.register
    def allocate(cmd: Allocate, clock: Clock) -> str:
        return clock.name

    with pytest.raises(UnresolvedDependencyError) as caught:
        MessageBus(registry, dependencies={"utc": Clock("utc"), "local": Clock("local")})

    assert (allocate, "clock") == (caught.value.handler, caught.value.parameter)
    assert "local, utc" in str(caught.value)


def test_parameter_that_nothing_provides_is_refused_when_the_bus_is_built() -> None:
    registry = Registry()

    @registry.register
    def allocate(cmd: Allocate, clock: Clock) -> str:
        return clock.name

    # Raised by MessageBus(), before any message is dispatched.
    with pytest.raises(UnresolvedDependencyError) as caught:
        MessageBus(registry, dependencies={"prefix": "x"})

    assert (allocate, "clock") == (caught.value.handler, caught.value.parameter)
    assert full_name(allocate) in str(caught.value)
    assert "'clock'" in str(caught.value)


def test_event_handler_parameter_that_nothing_provides_is_refused_when_the_bus_is_built() -> None:
    registry = Registry()

    @registry.register
    def notify(event: Allocated, mailer: object) -> None:
        return None

    with pytest.raises(UnresolvedDependencyError) as caught:
        MessageBus(registry)

    assert (notify, "mailer") == (caught.value.handler, caught.value.parameter)


def test_parameter_with_a_default_value_is_left_to_it_when_nothing_provides_it() -> None:
    registry = Registry()

    @registry.register
    def allocate(cmd: Allocate, suffix: str = "-default") -> str:
        return cmd.orderid + suffix

    assert "o1-default" == MessageBus(registry).handle(Allocate("o1"))


def test_context_and_metadata_are_injected_by_annotation() -> None:
    registry = Registry()
    given = Metadata.new()
    seen: list[object] = []

    @registry.register(uow=False)
    def allocate(cmd: Allocate, ctx: Context, meta: Metadata) -> str:
        seen.extend([ctx.message, ctx.metadata, meta])
        return "done"

    MessageBus(registry).handle(Allocate("o1"), metadata=given)

    assert [Allocate("o1"), given, given] == seen


def test_parameter_named_uow_receives_the_unit_of_work_of_the_attempt() -> None:
    registry = Registry()
    made: list[FakeUnitOfWork] = []
    received: list[object] = []

    def new_uow() -> FakeUnitOfWork:
        made.append(FakeUnitOfWork())
        return made[-1]

    @registry.register
    def allocate(cmd: Allocate, uow) -> str:  # type: ignore[no-untyped-def]
        received.append(uow)
        return "done"

    MessageBus(registry, uow=new_uow).handle(Allocate("o1"))

    assert made == received


def test_parameter_annotated_with_a_unit_of_work_type_receives_the_unit_of_work() -> None:
    registry = Registry()
    made: list[FakeUnitOfWork] = []
    received: list[object] = []

    def new_uow() -> FakeUnitOfWork:
        made.append(FakeUnitOfWork())
        return made[-1]

    @registry.register
    def allocate(cmd: Allocate, work: AbstractUnitOfWork) -> str:
        received.append(work)
        return "done"

    MessageBus(registry, uow=new_uow).handle(Allocate("o1"))

    assert made == received


def test_handler_asking_for_a_unit_of_work_is_refused_when_the_bus_has_none() -> None:
    registry = Registry()

    @registry.register
    def allocate(cmd: Allocate, uow: AbstractUnitOfWork) -> str:
        return "done"

    with pytest.raises(UnresolvedDependencyError) as caught:
        MessageBus(registry)

    assert (allocate, "uow") == (caught.value.handler, caught.value.parameter)


def test_handler_registered_without_unit_of_work_cannot_ask_for_one() -> None:
    registry = Registry()

    @registry.register(uow=False)
    def allocate(cmd: Allocate, uow: AbstractUnitOfWork) -> str:
        return "done"

    with pytest.raises(UnresolvedDependencyError) as caught:
        MessageBus(registry, uow=FakeUnitOfWork)

    assert (allocate, "uow") == (caught.value.handler, caught.value.parameter)
    assert "uow=False" in str(caught.value)


def test_unit_of_work_cannot_be_given_as_a_dependency() -> None:
    registry = Registry()

    @registry.register
    def allocate(cmd: Allocate, uow: AbstractUnitOfWork) -> str:
        return "done"

    with pytest.raises(ConfigurationError, match="uow"):
        MessageBus(registry, dependencies={"uow": FakeUnitOfWork()})


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


def test_unresolvable_annotation_of_a_dependency_does_not_prevent_registration() -> None:
    registry = Registry()

    def allocate(cmd: Allocate, notifier) -> str:  # type: ignore[no-untyped-def]
        return f"{notifier} {cmd.orderid}"

    # What `notifier: Notifier` gives under `from __future__ import annotations`
    # when Notifier is imported only under TYPE_CHECKING.
    allocate.__annotations__["notifier"] = "Notifier"
    registry.register(allocate)

    bus = MessageBus(registry, dependencies={"notifier": "notified"})
    assert "notified o1" == bus.handle(Allocate("o1"))


# -- the start-up check of required handlers ------------------------------------


def test_required_commands_without_handlers_are_refused_when_the_bus_is_built() -> None:
    registry = Registry()

    @registry.register
    def allocate(cmd: Allocate) -> str:
        return "done"

    with pytest.raises(MissingHandlersError) as caught:
        MessageBus(registry, require_handlers=[Allocate, Deallocate])

    assert (Deallocate,) == caught.value.message_types
    assert Deallocate.__qualname__ in str(caught.value)
    assert "Allocate," not in str(caught.value)


def test_required_commands_with_handlers_pass_the_check() -> None:
    registry = Registry()

    @registry.register
    def allocate(cmd: Allocate) -> str:
        return "done"

    bus = MessageBus(registry, require_handlers=[Allocate])

    assert "done" == bus.handle(Allocate("o1"))


def test_every_command_defined_in_a_required_module_needs_a_handler() -> None:
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
    registry = Registry()

    @registry.register
    def create_batch(cmd: CreateBatch) -> None:
        return None

    with pytest.raises(MissingHandlersError) as caught:
        MessageBus(registry, require_handlers=[module])

    assert {ChangeQuantity, CancelOrder} == set(caught.value.message_types)
    assert "shop.commands." + CancelOrder.__qualname__ in str(caught.value)
    assert "shop.commands." + ChangeQuantity.__qualname__ in str(caught.value)


def test_required_handlers_take_only_command_types_and_modules() -> None:
    with pytest.raises(ConfigurationError, match="require_handlers"):
        MessageBus(Registry(), require_handlers=[Allocated])  # type: ignore[list-item]


# -- names close to a dependency's, and dependencies no handler asks for ---------


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


def test_an_unannotated_parameter_is_refused_without_naming_an_internal_type() -> None:
    registry = Registry()

    @registry.register(uow=False)
    def welcome(event: Allocated, printer) -> None:  # type: ignore[no-untyped-def]
        return None

    with pytest.raises(UnresolvedDependencyError) as caught:
        MessageBus(registry, dependencies={"mailer": object()})

    assert str(caught.value).endswith("but no dependency is named 'printer'")
    assert "_empty" not in str(caught.value)


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


def test_a_frozen_registry_refuses_another_registrys_handlers() -> None:
    registry, other = Registry(), Registry()
    other.register(lambda event: None, message=Allocated, uow=False)
    registry.freeze()

    with pytest.raises(FrozenRegistryError, match="another registry's handlers"):
        registry.include(other)
    assert {} == dict(registry.events)


def test_freezing_twice_is_freezing_once() -> None:
    registry = Registry()
    assert not registry.frozen

    registry.freeze()
    registry.freeze()

    assert registry.frozen


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
