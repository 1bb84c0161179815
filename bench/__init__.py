"""Benchmarks of messagebus against a direct call and against peer libraries.

Run them with ``python -m bench`` (``make bench``); ``python -m bench --help``
lists the options. Each peer runs from a virtual environment of its own under
``bench/.venvs/``, and every measurement runs in a process of its own: see
``docs/how-to/benchmarks.md``.

This package imports nothing outside the standard library at import time, so
that its worker runs in any of those environments.
"""
