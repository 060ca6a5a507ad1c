"""Errors users see: one clear sentence naming the file, row and field, never a traceback.

Raise :class:`CuratuneError` (or a subclass) for anything caused by the user's input or
environment; the CLI prints its message and exits with status 2. Bugs stay ordinary
exceptions so they keep their traceback.
"""
from __future__ import annotations


class CuratuneError(Exception):
    """A problem with the user's input, config or environment, explained in the message."""


class ConfigError(CuratuneError):
    pass


class DataError(CuratuneError):
    pass


class ModelError(CuratuneError):
    pass
