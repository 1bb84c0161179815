"""Async handlers registered for a command: mypy must reject the one whose result
is not what its command declares, and accept the one whose result is.

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


@attrs.frozen
class Deallocate(Command[str]):
    orderid: str


registry = Registry()


@registry.register(message=Allocate)  # E: arg-type
async def allocate(command: Allocate) -> int:
    return command.qty


@registry.register(message=Deallocate)
async def deallocate(command: Deallocate) -> str:
    return command.orderid
