"""User-facing errors: each carries the exit code the CLI turns it into.

Raised anywhere in the trainer, caught once in `skfleet.__main__`, printed as one line.
A stack trace is for our bugs, never for a user's typo.
"""

from __future__ import annotations


class TrainerError(Exception):
    """Base of every error the CLI reports as a one-line message."""

    exit_code = 2


class InputError(TrainerError):
    """Bad data, layout, grid or option: exit 2."""

    exit_code = 2


class LeakError(InputError):
    """A column known only after departure reached the feature matrix: exit 2."""


class ClusterError(TrainerError):
    """Cluster unreachable, no workers in time, scheduler lost: exit 3."""

    exit_code = 3


class TrackingError(TrainerError):
    """The MLflow tracking server refused or could not be reached (`python -m skfleet track`): exit 3.

    The trainer never raises it: a run whose tracking fails still writes its folder (skfleet.tracking).
    """

    exit_code = 3


class VersionMismatchError(TrainerError):
    """Client and cluster disagree on a package that matters: exit 4."""

    exit_code = 4


def first_line(error: BaseException) -> str:
    """Give the first line of an exception's message (its type name when it has none)."""
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0]
