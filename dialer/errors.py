"""Every error dialer raises on purpose, in one shallow tree.

    DialerError                 base; ``str(error)`` is one line that says what to do
    ├── UsageError              a bad option or campaign value            (exit 2)
    ├── InputError              the contacts file cannot be used          (exit 2)
    │   └── ColumnError         no phone column, or an ambiguous one      (exit 2)
    └── FatalProviderError      every call would fail: bad key, bad agent (exit 1)

The CLI prints ``dialer: <message>`` and exits with ``error.exit_code``; it never prints a
traceback for these. Messages never contain the API key.
"""

from __future__ import annotations

__all__ = ["DialerError", "UsageError", "InputError", "ColumnError", "FatalProviderError"]


class DialerError(Exception):
    """Base class: a message for the user and the exit code that goes with it."""

    exit_code = 2


class UsageError(DialerError):
    """An option or campaign value is missing or wrong."""


class InputError(DialerError):
    """The contacts file is missing, unreadable, empty or malformed."""


class ColumnError(InputError):
    """The phone column cannot be found, or several columns could be it."""


class FatalProviderError(DialerError):
    """The provider refused in a way that makes every call fail (401, unknown agent)."""

    exit_code = 1
