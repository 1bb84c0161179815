"""What crosses a process boundary: the outgoing record, and its form on the wire.

The outbox keeps an :class:`OutgoingMessage` per message that leaves the
process; the relay publishes it to a broker; a consumer reads it back as
fields and parses them with :func:`parse_fields`. The fields are the same for
every broker (a Redis stream entry's field/value pairs, an AMQP message's
headers and body), so a broker adapter only moves them.

Fields on the wire (all text; a broker may give them back as bytes):

=============  ==========================================================
``id``         the message id (a UUID)
``name``       the message's stable name
``version``    its schema version (a decimal integer)
``payload``    its fields, as JSON (:meth:`Serializer.dump_payload`)
``metadata``   its metadata, as JSON (:meth:`Serializer.dump_metadata`)
``key``        the partition key (text; empty when none)
=============  ==========================================================

Other fields are ignored by the reader, so a later version can add some.
"""

from __future__ import annotations

from collections.abc import Mapping

import attrs

__all__ = ["WIRE_FIELDS", "OutgoingMessage", "WireFormatError", "parse_fields"]

#: The fields every entry has, in this order.
WIRE_FIELDS = ("id", "name", "version", "payload", "metadata", "key")


@attrs.frozen
class OutgoingMessage:
    """One message on its way out of the process, as the outbox keeps it.

    Attributes:
        message_id: Its id (a UUID, as text): the same id its local handlers saw.
        name: Its stable name.
        version: Its schema version.
        payload: Its fields as JSON text.
        metadata: Its metadata as JSON text.
        destination: Where it goes (a stream, or a queue).
        key: The partition key: messages with the same key keep their order.
    """

    message_id: str
    name: str
    version: int
    payload: str
    metadata: str
    destination: str
    key: str

    def fields(self) -> dict[str, str]:
        """The message as the wire's field/value pairs."""
        return {
            "id": self.message_id,
            "name": self.name,
            "version": str(self.version),
            "payload": self.payload,
            "metadata": self.metadata,
            "key": self.key,
        }


class WireFormatError(ValueError):
    """An entry read from a broker is not a message of this format; says what is wrong."""


def parse_fields(fields: Mapping[bytes | str, bytes | str], destination: str) -> OutgoingMessage:
    """An entry read from a broker, checked: untrusted data, nothing evaluated.

    Raises:
        WireFormatError: A field is missing, is not UTF-8, or the version is
            not a small positive integer. The payload and metadata are left as
            text: the serializer checks them against the registered type.
    """
    text: dict[str, str] = {}
    for raw_key, raw_value in fields.items():
        key = raw_key.decode("utf-8", "replace") if isinstance(raw_key, bytes) else raw_key
        if key not in WIRE_FIELDS:
            continue
        if isinstance(raw_value, bytes):
            try:
                value = raw_value.decode("utf-8")
            except UnicodeDecodeError:
                raise WireFormatError(f"field {key!r} is not UTF-8 text") from None
        else:
            value = raw_value
        text[key] = value
    missing = [name for name in WIRE_FIELDS if name not in text]
    if missing:
        raise WireFormatError(f"missing field(s): {', '.join(missing)}")
    version = text["version"]
    if not (version.isascii() and version.isdigit() and 0 < len(version) <= 9):
        raise WireFormatError(f"field 'version' is not a positive integer: {version[:40]!r}")
    return OutgoingMessage(
        message_id=text["id"],
        name=text["name"],
        version=int(version),
        payload=text["payload"],
        metadata=text["metadata"],
        destination=destination,
        key=text["key"],
    )
