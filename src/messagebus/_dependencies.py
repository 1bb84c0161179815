"""Dependency injection, resolved once when the bus is built.

For each handler the parameters after the message are matched, in this order:

1. annotated :class:`~messagebus.Context`: the attempt's context;
2. annotated :class:`~messagebus.Metadata`: the message's metadata;
3. named ``uow``, or annotated with a unit-of-work type: the attempt's unit of work;
4. named like a dependency: that dependency;
5. annotated with a class of which exactly one dependency is an instance: that one;
6. with a default value: left to its default.

Anything else is an error naming the handler and the parameter (and the
dependency it was probably meant to be, when one has a close name). The result
is a ``functools.partial`` holding the fixed dependencies, so that dispatch
inspects no signature.

A dependency that no handler asks for is likely a mistake too (a renamed
parameter, a handler not registered): :func:`unused_dependencies` finds them
from the plans, and :class:`UnusedDependencyError` says so.
"""

from __future__ import annotations

import difflib
import functools
import inspect
import typing
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import attrs

from ._context import Context
from ._registry import Registration
from .exceptions import ConfigurationError, UnresolvedDependencyError, UnusedDependencyError
from .messages import Metadata
from .unit_of_work import AbstractUnitOfWork, UnitOfWork

UOW_PARAMETER = "uow"


@attrs.frozen
class CallPlan:
    """How to call one handler: its fixed dependencies and its per-attempt ones."""

    call: Callable[..., Any]
    uow_parameter: str | None
    context_parameter: str | None
    metadata_parameter: str | None
    #: The per-attempt parameters when they are the first ones after the
    #: message, in order, and may be passed positionally; () otherwise.
    positional: tuple[str, ...] = ()
    #: The names of the dependencies this handler was given.
    dependencies: tuple[str, ...] = ()

    @property
    def per_attempt(self) -> bool:
        return bool(self.uow_parameter or self.context_parameter or self.metadata_parameter)


def _plain_class(annotation: Any) -> bool:
    # On Python 3.10, list[str] passes isinstance(..., type): rule generics out.
    return isinstance(annotation, type) and typing.get_origin(annotation) is None


def _is_uow_annotation(annotation: Any) -> bool:
    if annotation is UnitOfWork:
        return True
    return _plain_class(annotation) and issubclass(annotation, AbstractUnitOfWork)


def _hints(handler: Callable[..., Any]) -> dict[str, Any]:
    try:
        return typing.get_type_hints(handler)
    except Exception:
        # Unresolvable forward references: match by name only.
        return {}


def check_dependencies(dependencies: Mapping[str, object]) -> None:
    """Refuse dependencies that would shadow what the bus provides per attempt."""
    if UOW_PARAMETER in dependencies:
        raise ConfigurationError(
            f"{UOW_PARAMETER!r} cannot be a dependency: the bus opens a unit of work for each "
            "attempt; pass a factory as MessageBus(uow=...)"
        )


def plan_call(
    registration: Registration,
    dependencies: Mapping[str, object],
    *,
    has_uow_factory: bool,
) -> CallPlan:
    """Resolve the parameters of a registered handler against the dependencies."""
    handler = registration.handler
    parameters = list(inspect.signature(handler).parameters.values())[1:]
    hints = _hints(handler)
    fixed: dict[str, object] = {}
    used: list[str] = []
    uow_parameter = context_parameter = metadata_parameter = None
    per_attempt: list[tuple[int, str]] = []
    for index, parameter in enumerate(parameters):
        if parameter.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD):
            continue
        name = parameter.name
        annotation = hints.get(name, parameter.annotation)

        def unresolved(reason: str, name: str = name) -> UnresolvedDependencyError:
            return UnresolvedDependencyError(handler, name, reason)

        if parameter.kind is inspect.Parameter.POSITIONAL_ONLY:
            raise unresolved("positional-only parameters cannot be injected")
        if annotation is Context:
            context_parameter = name
            per_attempt.append((index, name))
        elif annotation is Metadata:
            metadata_parameter = name
            per_attempt.append((index, name))
        elif name == UOW_PARAMETER or _is_uow_annotation(annotation):
            if not registration.uow:
                raise unresolved("the handler was registered with uow=False")
            if not has_uow_factory:
                raise unresolved("the bus has no unit of work: give the bus a factory, uow=...")
            uow_parameter = name
            per_attempt.append((index, name))
        elif name in dependencies:
            fixed[name] = dependencies[name]
            used.append(name)
        else:
            matches = _matches_by_type(annotation, dependencies)
            if len(matches) == 1:
                fixed[name] = dependencies[matches[0]]
                used.append(matches[0])
            elif len(matches) > 1:
                raise unresolved(
                    f"several dependencies are {annotation.__qualname__} instances "
                    f"({', '.join(sorted(matches))}); rename the parameter to choose one"
                )
            elif parameter.default is inspect.Parameter.empty:
                raise unresolved(_nothing_provides(name, annotation, dependencies))
    call = functools.partial(handler, **fixed) if fixed else handler
    leading = (
        _forwards_positional_arguments(handler)
        and [index for index, _ in per_attempt] == list(range(len(per_attempt)))
        and all(
            parameters[index].kind is inspect.Parameter.POSITIONAL_OR_KEYWORD
            for index, _ in per_attempt
        )
    )
    positional = tuple(name for _, name in per_attempt) if leading else ()
    return CallPlan(
        call,
        uow_parameter,
        context_parameter,
        metadata_parameter,
        positional,
        tuple(dict.fromkeys(used)),
    )


def _nothing_provides(name: str, annotation: Any, dependencies: Mapping[str, object]) -> str:
    """Why nothing provides a parameter, with the dependency meant when a name is close."""
    typed = (
        _plain_class(annotation)
        and annotation is not object
        and annotation is not inspect.Parameter.empty
    )
    by_type = f" and none is an instance of {annotation.__qualname__}" if typed else ""
    close = difflib.get_close_matches(name, list(dependencies), n=1, cutoff=0.6)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    if not dependencies:
        hint = "; the bus was given no dependencies (MessageBus(dependencies={...}))"
    return f"no dependency is named {name!r}{by_type}{hint}"


def unused_dependencies(
    dependencies: Mapping[str, object], plans: Iterable[CallPlan]
) -> tuple[str, ...]:
    """The names of the dependencies that no handler was given, in the given order.

    Args:
        dependencies: The dependencies the bus was built with.
        plans: The call plans of every handler of the bus (from :func:`plan_call`).
    """
    used = {name for plan in plans for name in plan.dependencies}
    return tuple(name for name in dependencies if name not in used)


def check_unused_dependencies(
    dependencies: Mapping[str, object], plans: Iterable[CallPlan]
) -> None:
    """Refuse dependencies that no handler asks for.

    Raises:
        UnusedDependencyError: Some dependencies are given to no handler.
    """
    unused = unused_dependencies(dependencies, plans)
    if unused:
        raise UnusedDependencyError(unused)


def _forwards_positional_arguments(handler: Callable[..., Any]) -> bool:
    """Whether the handler's parameters, as inspected, are those it is called with.

    A decorated handler's signature is its wrapped function's (``functools.wraps``);
    a wrapper that forwards ``*args`` passes positional arguments on as they
    come, and one that takes ``(message, **kwargs)`` does not: it is given keywords.
    """
    target: Any = handler
    while hasattr(target, "__wrapped__") or hasattr(target, "__signature__"):
        try:
            outer = inspect.signature(target, follow_wrapped=False).parameters.values()
        except (TypeError, ValueError):  # pragma: no cover - inspected once already
            return False
        if not any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in outer):
            return False
        if not hasattr(target, "__wrapped__"):  # a signature of its own, and *args
            return True
        target = target.__wrapped__
    return True


def _matches_by_type(annotation: Any, dependencies: Mapping[str, object]) -> list[str]:
    if not _plain_class(annotation) or annotation is object:
        return []
    try:
        return [name for name, value in dependencies.items() if isinstance(value, annotation)]
    except TypeError:  # a Protocol that is not runtime-checkable, for instance
        return []
