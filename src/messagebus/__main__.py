"""``python -m messagebus``: the ``messagebus`` command."""

from .cli import main

raise SystemExit(main())
