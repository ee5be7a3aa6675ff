"""Errors a user can act on, each with the exit code ARCHITECTURE.md assigns.

Every layer may raise these; the CLI turns them into one line (problem, file, fix) and the exit code, with no
traceback. Anything else is a bug: exit 1, traceback in the run's log.
"""

from __future__ import annotations


class MedrunError(Exception):
    """Base class. ``str(err)`` is the one line shown to the user."""

    exit_code = 1

    def __init__(self, message: str, *, file: str | None = None, fix: str | None = None):
        self.message = message
        self.file = str(file) if file is not None else None
        self.fix = fix
        super().__init__(self.line())

    def line(self) -> str:
        text = self.message
        if self.file and self.file not in text:
            text = f"{self.file}: {text}"
        if self.fix:
            text = f"{text} — {self.fix}"
        return text

    def __reduce__(self):  # survive pickling across DataLoader workers and DDP ranks
        return (_rebuild, (type(self), self.message, self.file, self.fix))


def _rebuild(cls, message, file, fix):
    return cls(message, file=file, fix=fix)


class UsageError(MedrunError):
    """Manifest or argument error."""

    exit_code = 2


class DataError(MedrunError):
    """Missing, unreadable or wrongly laid out data."""

    exit_code = 3


class EnvError(MedrunError):
    """Missing package, device, or unwritable location."""

    exit_code = 4


class VerifyError(MedrunError):
    """A run's artifacts or data no longer match what was recorded."""

    exit_code = 5


INTERRUPTED = 130


def unknown_name(kind: str, name: str, choices, fallback: str = "see `medrun list`") -> UsageError:
    """``unknown <kind> 'x' — did you mean 'y'?`` (or the fallback hint when nothing is close)."""
    import difflib

    near = difflib.get_close_matches(name, list(choices), n=1)
    return UsageError(f"unknown {kind} '{name}'", fix=f"did you mean '{near[0]}'?" if near else fallback)
