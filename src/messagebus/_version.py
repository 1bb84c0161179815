"""The version of messagebus: read by the build (pyproject.toml) and `messagebus.__version__`."""

__version__ = "0.1.0.dev0"
