"""Entry points: the web API, and the process that serves it."""
