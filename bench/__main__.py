"""``python -m bench``: see ``bench/_cli.py``."""

from bench._cli import main

raise SystemExit(main())
