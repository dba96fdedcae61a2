"""The one error type of the data package: bad input that a user can fix."""

from __future__ import annotations


class DataError(Exception):
    """Bad input a user can fix; the message names the file, column, value and the fix."""
