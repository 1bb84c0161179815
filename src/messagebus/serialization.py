"""Messages to JSON-safe data and back, with cattrs.

Data is untrusted: :meth:`Serializer.load` constructs only message types that
were registered with the serializer, found by their stable name. It never
imports a module or evaluates text named by the data. Checks are strict:
``"3"`` is not an int, ``5`` is not a str, a naive datetime is not an aware one,
and an unknown field is refused (a changed schema is a new version).

The wire form of a message is a dict::

    {"name": "Allocate", "version": 1, "payload": {"orderid": "o1", ...},
     "metadata": {"message_id": "...", ...}}   # metadata only when given

A command built from a request body takes its class and the body's fields,
and is typed as that class::

    command = bus.serializer.load(BorrowBook, request.get_json())
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import decimal
import enum
import itertools
import math
import threading
import types
import typing
import uuid
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar, overload

import attrs
import cattrs
from cattrs.errors import IterableValidationError, IterableValidationNote
from cattrs.gen import make_dict_structure_fn, override
from cattrs.v import format_exception, transform_error

from ._sensitive import (
    REDACTED,
    SENSITIVE,
    field_types,
    holds_sensitive,
    path_is_sensitive,
    redact,
)
from .exceptions import (
    ConfigurationError,
    InvalidMessageDataError,
    MessageNameConflictError,
    UnknownMessageError,
    shorten,
)
from .messages import (
    Message,
    Metadata,
    _TraceContextError,
    hide_sensitive_reprs,
    message_name,
    message_version,
)

__all__ = ["REDACTED", "Serializer", "allow_nonfinite", "make_converter", "sensitive"]

M = TypeVar("M", bound=Message)


#: ``load(data)`` was called with the wire form alone.
_NO_PAYLOAD: Any = object()


class _ShapeError(ValueError):
    """A value of the wrong kind; its text says what was expected and what came."""


#: The attrs metadata key of a float field that accepts NaN and the infinities.
_NONFINITE = "messagebus_nonfinite"
#: The longest one line of a decoding error may be: data is untrusted, and may be huge.
_LINE = 300


def _fail(value: object, expected: str) -> typing.NoReturn:
    raise _ShapeError(f"expected {expected}, got {type(value).__name__} {shorten(value)}")


def _format_error(exc: BaseException, target: type | None) -> str:
    if isinstance(exc, (_ShapeError, _TraceContextError)):
        return str(exc)
    text = format_exception(exc, target)
    return text if len(text) <= _LINE else text[: _LINE - 3] + "..."


def _error_lines(exc: BaseException, path: str, message_type: Any) -> list[str]:
    """One line per problem, naming its field; a sensitive field's value is not shown."""
    lines = []
    for line in transform_error(exc, path=path, format_exception=_format_error):
        _, at, where = line.rpartition(" @ ")
        if at and message_type is not None and path_is_sensitive(message_type, where[len(path) :]):
            line = f"invalid value (sensitive: not shown) @ {where}"
        lines.append(line)
    return lines


def _structure_items(
    converter: cattrs.Converter, values: Iterable[Any], types: Iterable[Any], target: Any
) -> list[Any]:
    """Structure each item, reporting every bad one by its index."""
    items: list[Any] = []
    errors: list[Exception] = []
    for index, (value, item_type) in enumerate(
        zip(values, types, strict=False)
    ):  # types may repeat
        try:
            items.append(converter.structure(value, item_type))
        except Exception as exc:
            exc.__notes__ = [  # type: ignore[attr-defined]
                *getattr(exc, "__notes__", []),
                IterableValidationNote(f"Structuring item @ index {index}", index, item_type),
            ]
            errors.append(exc)
    if errors:
        raise IterableValidationError(f"While structuring {target!r}", errors, target)
    return items


def _structure_int(value: object, _: type) -> int:
    if type(value) is not int:
        _fail(value, "an int")
    return value


def _structure_float(value: object, _: type) -> float:
    if type(value) is float:
        if not math.isfinite(value):
            _fail(value, "a finite float (a field may allow NaN and infinities: allow_nonfinite())")
        return value
    if type(value) is int:
        return float(value)
    _fail(value, "a float")


def _structure_str(value: object, _: type) -> str:
    if type(value) is not str:
        _fail(value, "a str")
    return value


def _structure_bool(value: object, _: type) -> bool:
    if type(value) is not bool:
        _fail(value, "a bool")
    return value


def _structure_decimal(value: object, _: type) -> decimal.Decimal:
    if type(value) is not str:
        _fail(value, "a decimal number as a str")
    try:
        result = decimal.Decimal(value)
    except decimal.InvalidOperation:
        _fail(value, "a decimal number as a str")
    if not result.is_finite():
        _fail(value, "a finite decimal number (not NaN or Infinity)")
    return result


def _structure_date(value: object, _: type) -> _dt.date:
    if type(value) is not str or len(value) != 10:
        _fail(value, "an ISO date (YYYY-MM-DD)")
    return _dt.date.fromisoformat(value)


def _structure_datetime(value: object, _: type) -> _dt.datetime:
    if type(value) is not str:
        _fail(value, "an ISO datetime with a UTC offset")
    result = _dt.datetime.fromisoformat(value)
    if result.tzinfo is None:
        _fail(value, "an ISO datetime with a UTC offset, not a naive one")
    return result


def _structure_uuid(value: object, _: type) -> uuid.UUID:
    if type(value) is not str:
        _fail(value, "a UUID as a str")
    return uuid.UUID(value)


def _nonfinite_hook(converter: cattrs.Converter, tp: Any) -> Callable[[object, Any], Any]:
    """The hook of a field that accepts NaN and the infinities (``allow_nonfinite()``)."""

    def structure(value: object, _: Any) -> Any:
        if type(value) is float and not math.isfinite(value):
            return value
        return converter.structure(value, tp)

    return structure


def _unstructure_frozenset(value: frozenset[Any], converter: cattrs.Converter) -> list[Any]:
    items = [converter.unstructure(item) for item in value]
    try:
        items.sort()
    except TypeError:
        items.sort(key=repr)
    return items


def _structure_enum(value: object, enum_type: type[enum.Enum]) -> enum.Enum:
    try:
        member = enum_type(value)
    except ValueError:
        _fail(value, f"one of {[m.value for m in enum_type]!r}")
    if type(member.value) is not type(value):  # True is not 1, 1.0 is not 1
        _fail(value, f"one of {[m.value for m in enum_type]!r}")
    return member


def _enum_aware(hook: Callable[[object, Any], Any]) -> Callable[[object, Any], Any]:
    def structure(value: object, target: Any) -> Any:
        if isinstance(target, type) and issubclass(target, enum.Enum):
            return _structure_enum(value, target)
        return hook(value, target)

    return structure


def _unstructure_primitive(value: Any) -> Any:
    return value.value if isinstance(value, enum.Enum) else value


def _is_tuple(tp: Any) -> bool:
    return (typing.get_origin(tp) or tp) is tuple


def _is_frozenset(tp: Any) -> bool:
    return (typing.get_origin(tp) or tp) is frozenset


def _is_collection(tp: Any) -> bool:
    return typing.get_origin(tp) in (tuple, frozenset, list, set) or tp in (
        tuple,
        frozenset,
        list,
        set,
    )


def _collection_hook(converter: cattrs.Converter) -> Callable[[Any], Callable[[Any, Any], Any]]:
    """Sequences are JSON arrays; a str or a dict is refused rather than iterated."""

    def factory(tp: Any) -> Callable[[Any, Any], Any]:
        origin = typing.get_origin(tp) or tp
        args = typing.get_args(tp)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if args == ((),):  # pragma: no cover - tuple[()] is not a useful field type
                args = ()

            def structure_fixed(value: Any, _: Any) -> Any:
                if type(value) not in (list, tuple):
                    _fail(value, f"an array of {len(args)} items")
                if len(value) != len(args):
                    _fail(value, f"an array of {len(args)} items")
                return tuple(_structure_items(converter, value, args, tp))

            return structure_fixed
        item_type = args[0] if args else Any

        def structure_many(value: Any, _: Any) -> Any:
            if type(value) not in (list, tuple):
                _fail(value, "an array")
            return origin(_structure_items(converter, value, itertools.repeat(item_type), tp))

        return structure_many

    return factory


def make_converter() -> cattrs.Converter:
    """A cattrs converter with the strict rules messagebus uses for payloads.

    Exposed for applications that want to register hooks for their own field
    types before giving the converter to a :class:`Serializer`.
    """
    converter = cattrs.Converter(forbid_extra_keys=True, detailed_validation=True)
    # cattrs dispatches on the class's MRO, so these hooks also receive str,
    # int and float enums (class Colour(str, Enum)): each hands those on.
    converter.register_structure_hook(int, _enum_aware(_structure_int))
    converter.register_structure_hook(float, _enum_aware(_structure_float))
    converter.register_structure_hook(str, _enum_aware(_structure_str))
    converter.register_structure_hook(bool, _structure_bool)
    converter.register_structure_hook(enum.Enum, _structure_enum)
    for primitive in (str, int, float, enum.Enum):
        converter.register_unstructure_hook(primitive, _unstructure_primitive)
    converter.register_unstructure_hook_func(
        _is_tuple, lambda value: [converter.unstructure(item) for item in value]
    )
    converter.register_structure_hook(decimal.Decimal, _structure_decimal)
    converter.register_unstructure_hook(decimal.Decimal, str)
    converter.register_structure_hook(_dt.datetime, _structure_datetime)
    converter.register_unstructure_hook(_dt.datetime, _dt.datetime.isoformat)
    converter.register_structure_hook(_dt.date, _structure_date)
    converter.register_unstructure_hook(_dt.date, _dt.date.isoformat)
    converter.register_structure_hook(uuid.UUID, _structure_uuid)
    converter.register_unstructure_hook(uuid.UUID, str)
    converter.register_unstructure_hook_func(
        _is_frozenset, lambda value: _unstructure_frozenset(value, converter)
    )
    converter.register_structure_hook_factory(_is_collection, _collection_hook(converter))
    converter.register_structure_hook_factory(attrs.has, _object_hook(converter))
    return converter


def _object_hook(converter: cattrs.Converter) -> Callable[[Any], Callable[[Any, Any], Any]]:
    """Nested attrs classes are JSON objects: anything else is refused as such."""

    def factory(cls: Any) -> Callable[[Any, Any], Any]:
        hints = field_types(cls)
        overrides = {
            field.name: override(struct_hook=_nonfinite_hook(converter, hints.get(field.name)))
            for field in attrs.fields(cls)
            if field.metadata.get(_NONFINITE) and hints.get(field.name) is not None
        }
        structure = make_dict_structure_fn(cls, converter, **overrides)  # type: ignore[arg-type]

        def structure_object(value: Any, target: Any) -> Any:
            if not isinstance(value, Mapping):
                _fail(value, "an object")
            return structure(value, target)

        return structure_object

    return factory


def sensitive(**field_options: Any) -> Any:
    """An attrs field whose value logs never show: ``card: str = sensitive()``.

    It takes the options of ``attrs.field`` (``default=...``, ...). The field
    is serialised as usual (a stored or sent message keeps it); log lines, the
    message's repr (and so tracebacks and error messages), deserialisation
    errors and replay's reports show ``'[redacted]'`` instead (so a repr with
    one does not re-create the message exactly). Fields of nested attrs classes
    are hidden wherever the class is held: optional, in a union, a tuple, a
    list or a dict's values. Equivalent to
    ``attrs.field(metadata={"messagebus_sensitive": True})``.
    """
    metadata = dict(field_options.pop("metadata", None) or {})
    metadata[SENSITIVE] = True
    return attrs.field(metadata=metadata, **field_options)


def allow_nonfinite(**field_options: Any) -> Any:
    """A float field that accepts NaN and the infinities: ``ratio: float = allow_nonfinite()``.

    Other float fields refuse them when data is loaded (JSON has no such
    numbers, and a NaN compares unequal to itself). It takes the options of
    ``attrs.field``; equivalent to
    ``attrs.field(metadata={"messagebus_nonfinite": True})``.
    """
    metadata = dict(field_options.pop("metadata", None) or {})
    metadata[_NONFINITE] = True
    return attrs.field(metadata=metadata, **field_options)


_redact_data = redact


def _has_sensitive(cls: Any) -> bool:
    """Whether a type has a sensitive field, itself or in anything it holds."""
    return holds_sensitive(cls)


class Serializer:
    """Turns registered messages into JSON-safe dicts and back.

    Args:
        message_types: Message types to register now (more with :meth:`register`).
        converter: A converter made by :func:`make_converter`, with the
            application's own hooks added; by default a new one.
    """

    def __init__(
        self,
        message_types: Iterable[type[Message]] = (),
        *,
        converter: cattrs.Converter | None = None,
    ) -> None:
        self._converter = converter if converter is not None else make_converter()
        self._types: dict[str, type[Message]] = {}
        self._lock = threading.Lock()
        self.register(*message_types)

    @property
    def names(self) -> Mapping[str, type[Message]]:
        """The registered message types by name (a read-only view)."""
        return types.MappingProxyType(self._types)

    def register(self, *message_types: type[Message]) -> None:
        """Allow these message types to be loaded by name.

        Raises:
            MessageNameConflictError: Another type already has the same name.
            ConfigurationError: A type is not an attrs (or dataclass) message.
        """
        with self._lock:
            for message_type in message_types:
                if not (isinstance(message_type, type) and issubclass(message_type, Message)):
                    raise ConfigurationError(f"{message_type!r} is not a Command or Event type")
                structured = attrs.has(message_type) or dataclasses.is_dataclass(message_type)
                if not structured:
                    raise ConfigurationError(
                        f"message type {message_type.__qualname__} must be an attrs class "
                        "(decorate it with @attrs.frozen)"
                    )
                name = message_name(message_type)
                hide_sensitive_reprs(message_type)
                known = self._types.get(name)
                if known is not None and known is not message_type:
                    raise MessageNameConflictError(name, known, message_type)
                self._types[name] = message_type

    def type_for(self, name: str) -> type[Message]:
        """The registered message type with this name.

        Raises:
            UnknownMessageError: No registered type has this name.
        """
        try:
            return self._types[name]
        except (KeyError, TypeError):
            raise UnknownMessageError(name, tuple(self._types)) from None

    def dump_payload(self, message: Message, *, redact: bool = False) -> dict[str, Any]:
        """The message's fields as a JSON-safe dict.

        Args:
            redact: Replace the value of every field marked sensitive (see
                :func:`sensitive`), in nested attrs classes too, with
                ``"[redacted]"``: for logs, which must never hold them in clear.
        """
        data: dict[str, Any] = self._converter.unstructure(message)
        if redact:
            message_type: Any = message.__class__
            if holds_sensitive(message_type):
                redacted: dict[str, Any] = _redact_data(message_type, data)
                return redacted
        return data

    def redact_payload(self, name: str, payload: dict[str, Any]) -> dict[str, Any]:
        """A dumped payload of the registered message ``name``, its sensitive fields
        replaced by ``"[redacted]"`` as in log lines (unchanged when the name is unknown)."""
        message_type: Any = self._types.get(name) if isinstance(name, str) else None
        if message_type is None or not holds_sensitive(message_type):
            return payload
        redacted: dict[str, Any] = _redact_data(message_type, payload)
        return redacted

    def load_payload(self, name: str, payload: object, *, version: int | None = None) -> Message:
        """Construct the registered message called ``name`` from its fields.

        Raises:
            UnknownMessageError: ``name`` is not registered.
            InvalidMessageDataError: The payload does not fit the message, or
                ``version`` is not the registered type's version.
        """
        given: object = name  # an untyped caller may pass the class
        if isinstance(given, type):
            raise TypeError(
                f"load_payload() takes a message name, not the class {given.__qualname__}: "
                f"use load({given.__qualname__}, payload), which is typed"
            )
        message_type = self.type_for(name)
        expected = message_version(message_type)
        if version is not None and version != expected:
            raise InvalidMessageDataError(
                name,
                [f"version {shorten(version)} is not the registered version {expected}"],
                payload,
            )
        if not isinstance(payload, Mapping):
            raise InvalidMessageDataError(
                name, [f"payload must be an object, not {type(payload).__name__}"], payload
            )
        try:
            return self._converter.structure(payload, message_type)
        except Exception as exc:  # cattrs raises exception groups and plain errors
            raise InvalidMessageDataError(
                name, _error_lines(exc, name, message_type), payload
            ) from exc

    def dump(self, message: Message, metadata: Metadata | None = None) -> dict[str, Any]:
        """The wire form of a message, with its metadata when given."""
        data: dict[str, Any] = {
            "name": message_name(message),
            "version": message_version(message),
            "payload": self.dump_payload(message),
        }
        if metadata is not None:
            data["metadata"] = self.dump_metadata(metadata)
        return data

    @overload
    def load(self, data: object) -> Message: ...

    @overload
    def load(self, message_type: type[M], payload: object, /) -> M: ...

    def load(self, data: object, payload: object = _NO_PAYLOAD) -> Message:
        """A message from data: a wire-form dict, or a registered class and its fields.

        ``load(data)`` reads the wire form (its metadata is ignored);
        ``load(BorrowBook, body)`` builds a ``BorrowBook`` from its fields (a
        request's JSON body, say), typed as one. Both check the data as
        strictly, and build only registered message types.

        Raises:
            UnknownMessageError: The name in the data, or the class given, is
                not registered.
            InvalidMessageDataError: The data does not fit the message.
        """
        if payload is _NO_PAYLOAD:
            if isinstance(data, type):
                raise TypeError(
                    f"load({data.__qualname__}) needs the fields too: "
                    f"load({data.__qualname__}, payload)"
                )
            return self.load_with_metadata(data)[0]
        if not (isinstance(data, type) and issubclass(data, Message)):
            raise TypeError(f"load(message_type, payload) takes a message class, not {data!r}")
        name = message_name(data)
        if self._types.get(name) is not data:
            raise UnknownMessageError(data.__qualname__, tuple(self._types))
        return self.load_payload(name, payload)

    def load_with_metadata(self, data: object) -> tuple[Message, Metadata | None]:
        """The message and, when the data has it, its metadata."""
        if not isinstance(data, Mapping):
            raise InvalidMessageDataError(
                "?", [f"a message must be an object, not {type(data).__name__}"], data
            )
        name = data.get("name")
        if not isinstance(name, str):
            raise UnknownMessageError(name, tuple(self._types))
        self.type_for(name)  # an unknown name is reported before anything else
        version = data.get("version")
        if type(version) is not int:
            raise InvalidMessageDataError(name, [f"version must be an int, not {shorten(version)}"])
        message = self.load_payload(name, data.get("payload"), version=version)
        raw_metadata = data.get("metadata")
        if raw_metadata is None:
            return message, None
        try:
            return message, self.load_metadata(raw_metadata)
        except InvalidMessageDataError as exc:
            lines = [f"{line} (in {name})" for line in exc.errors]
            raise InvalidMessageDataError(name, lines, data) from exc.__cause__

    def dump_metadata(self, metadata: Metadata) -> dict[str, Any]:
        """Metadata as a JSON-safe dict (``trace_context`` only when there is one)."""
        data = typing.cast(dict[str, Any], self._converter.unstructure(metadata))
        if data.get("trace_context", 0) is None:
            del data["trace_context"]
        return data

    def load_metadata(self, data: object) -> Metadata:
        """Metadata from a dict made by :meth:`dump_metadata`.

        Raises:
            InvalidMessageDataError: The data is not metadata; each line names
                the field (``metadata.message_id``). Its ``name`` is ``"metadata"``.
        """
        if not isinstance(data, Mapping):
            raise InvalidMessageDataError(
                "metadata", [f"metadata must be an object, not {type(data).__name__}"], data
            )
        try:
            return self._converter.structure(data, Metadata)
        except Exception as exc:  # cattrs raises exception groups and plain errors
            raise InvalidMessageDataError(
                "metadata", _error_lines(exc, "metadata", None), data
            ) from exc
