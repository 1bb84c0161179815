"""What is sensitive in a message type: one walk, used by every place that shows data.

A field is sensitive when its attrs metadata says so (``sensitive()``). The
walk follows a message type's fields into every attrs class it holds: in
optional fields, in every member of a union, in tuples, lists, frozensets and
in the values of dicts. Log lines (:func:`redact`), reprs (:func:`is_sensitive`),
deserialisation errors (:func:`path_is_sensitive`) and replay's reports all
ask it, so none of them can show a field that another hides.
"""

from __future__ import annotations

import functools
import re
import types
import typing
from collections.abc import Mapping
from typing import Any

import attrs

#: What a redacted value is replaced with.
REDACTED = "[redacted]"
#: The attrs metadata key of a sensitive field.
SENSITIVE = "messagebus_sensitive"

_MAPPINGS = (dict, Mapping, typing.Mapping)
_SEQUENCES = (tuple, list, frozenset, set)
_STEP = re.compile(r"\.([^.\[]+)|\[([^\]]*)\]")


def is_sensitive(field: Any) -> bool:
    """Whether an attrs field is marked sensitive."""
    return bool(field.metadata.get(SENSITIVE))


@functools.cache
def field_types(cls: Any) -> dict[str, Any]:
    """The resolved annotations of an attrs class; {} when they cannot be resolved."""
    try:
        return typing.get_type_hints(cls)
    except Exception:  # unresolvable annotations: only the top level is known
        return {}


@functools.cache
def holds_sensitive(tp: Any) -> bool:
    """Whether a type has a sensitive field, itself or in anything it holds."""
    return _sensitive_in(tp, set())


def _sensitive_in(tp: Any, seen: set[Any]) -> bool:
    # ``seen``: classes that hold each other (a tree's node and its children) end the walk.
    for cls in _attrs_classes(tp):
        if cls in seen:
            continue
        seen.add(cls)
        hints = field_types(cls)
        for field in attrs.fields(cls):
            if is_sensitive(field) or _sensitive_in(hints.get(field.name), seen):
                return True
    return False


def _attrs_classes(tp: Any) -> list[Any]:
    """The attrs classes in a type: itself, and those in its arguments, at any depth."""
    if tp is None:
        return []
    found = [tp] if isinstance(tp, type) and attrs.has(tp) else []
    for arg in typing.get_args(tp):  # Ellipsis too (tuple[int, ...]): it has none
        found.extend(_attrs_classes(arg))
    return found


def redact(tp: Any, data: Any) -> Any:
    """``data`` (as the serializer dumps a value of type ``tp``) with every sensitive
    field's value replaced by :data:`REDACTED`; ``data`` itself when nothing is."""
    if not holds_sensitive(tp):
        return data
    return _redact(tp, data)


def _redact(tp: Any, value: Any) -> Any:
    if tp is None or not holds_sensitive(tp):
        return value
    if isinstance(tp, type) and attrs.has(tp):
        if not isinstance(value, dict):
            return value
        hints = field_types(tp)
        redacted = dict(value)
        for field in attrs.fields(tp):
            if field.name not in redacted:
                continue
            if is_sensitive(field):
                redacted[field.name] = REDACTED
            else:
                redacted[field.name] = _redact(hints.get(field.name), redacted[field.name])
        return redacted
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        # Data does not say which member it is: hide what any member would hide.
        for member in args:
            value = _redact(member, value)
        return value
    if origin in _MAPPINGS and isinstance(value, dict) and len(args) == 2:
        return {key: _redact(args[1], item) for key, item in value.items()}
    if origin in _SEQUENCES and isinstance(value, list):
        items = [a for a in args if a is not Ellipsis]
        if len(items) == 1:
            return [_redact(items[0], item) for item in value]
        return [_redact(a, item) for a, item in zip(items, value, strict=False)]
    return value


def path_is_sensitive(tp: Any, path: str) -> bool:
    """Whether a field path in ``tp`` (``.card``, ``.items[0].card``, ``.by_id['k'].pin``)
    reaches a sensitive field, or lies inside one."""
    current: list[Any] = [tp]
    for match in _STEP.finditer(path):
        name, _ = match.groups()
        following: list[Any] = []
        for tp_now in _members(current):
            if name is not None:
                if not (isinstance(tp_now, type) and attrs.has(tp_now)):
                    continue
                field = getattr(attrs.fields_dict(tp_now).get(name), "metadata", None)
                if field is None:
                    continue
                if field.get(SENSITIVE):
                    return True
                following.append(field_types(tp_now).get(name))
            else:
                args = [a for a in typing.get_args(tp_now) if a is not Ellipsis]
                if typing.get_origin(tp_now) in _MAPPINGS and len(args) == 2:
                    following.append(args[1])
                else:
                    following.extend(args)
        current = following
        if not current:
            return False
    return False


def _members(tps: list[Any]) -> list[Any]:
    """The types, with every union replaced by its members."""
    found: list[Any] = []
    for tp in tps:
        if typing.get_origin(tp) in (typing.Union, types.UnionType):
            found.extend(_members(list(typing.get_args(tp))))
        elif tp is not None:
            found.append(tp)
    return found
