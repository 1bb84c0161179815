"""Adapters: the database, notifications and the publishing of events."""
