"""A handler that returns what its command does not declare: mypy must reject it.

``tests/typing/test_typing.py`` expects exactly the errors marked ``# E: <code>``
on the lines where they are marked, and no others.
"""

from __future__ import annotations

import attrs

from messagebus import Command, Registry


@attrs.frozen
class Allocate(Command[str]):
    orderid: str
    sku: str
    qty: int


registry = Registry()


@registry.register(message=Allocate)  # E: arg-type
def allocate(command: Allocate) -> int:
    return command.qty
