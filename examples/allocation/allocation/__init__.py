"""The allocation service of "Architecture Patterns with Python", rebuilt on messagebus.

Folders are the architecture, dependencies pointing inward: ``domain`` (the
model, its commands and events) knows nothing else; ``service_layer`` (the
handlers) knows the domain; ``adapters`` (database, notifications, publishing)
and ``entrypoints`` (the web API) are on the outside; ``bootstrap`` wires them.
Importing any of it does no work: no engine or connection is made until an
entry point asks for one.
"""
