"""Errors that end a run. Each carries a one-line message meant for the user, never a secret."""

from __future__ import annotations


class EnchargeTargetError(Exception):
    """A reason to stop the run, told to the user in one line."""


class ConfigError(EnchargeTargetError):
    """The configuration cannot work (missing key, unknown object name, bad header...)."""


class AuthError(EnchargeTargetError):
    """Encharge refused a key (401/403): every further call would fail the same way."""


class TooManyFailures(EnchargeTargetError):  # noqa: N818 - says what happened, as the others do
    """More records failed for good than ``max_failures`` allows."""


class InputError(EnchargeTargetError):
    """A line of input that is not a Singer message, or not UTF-8."""


class EnchargeUnavailable(EnchargeTargetError):  # noqa: N818 - says what happened, as the others do
    """Encharge keeps failing (calls in a row failing after their retries, or a Retry-After beyond reason):
    the run stops early; nothing is dead-lettered for it, the tap resumes from the last STATE written."""


class OutputError(EnchargeTargetError):
    """An output cannot be written (a full disk for dead letters, stdout closed by the reader)."""
