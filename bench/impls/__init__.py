"""One module per implementation; each has ``setup(scenario, variant) -> Case`` and ``versions()``.

A module is imported only in its own environment: ``floor``, ``messagebus``
and ``messagebus_async`` in the project's, each peer's in the peer's.
"""
