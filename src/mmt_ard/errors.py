"""Errors a user can act on.

Library code raises :class:`UserError` (or a subclass) for problems with the user's input:
an unknown name, a missing file, an out-of-range value. The message names the problem and
the fix. The CLI turns these into a one-line message and exit code 2; anything else is a bug
and keeps its traceback.
"""

from __future__ import annotations


class UserError(Exception):
    """Bad input from the user: the message says what is wrong and how to fix it."""


class ConfigError(UserError):
    """A configuration value, file or override that cannot be used."""


class CheckpointError(UserError):
    """A checkpoint that is missing, corrupt, or does not fit the model."""
