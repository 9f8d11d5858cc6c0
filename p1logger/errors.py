"""The project's own error types.

Every failure that bad input can cause is one of these, so callers (and the
fuzz tests) can tell an expected rejection from a bug.
"""


class P1Error(Exception):
    """Base class of every error p1logger raises on purpose."""


class DecodeError(P1Error):
    """A telegram whose content cannot be decoded."""


class ConfigError(P1Error):
    """A configuration problem; the message says what to fix, on one line."""


class SourceError(P1Error):
    """The serial port, socket or file cannot be read; the message says what to do."""


class SinkError(P1Error):
    """The database refused or could not take a write."""
