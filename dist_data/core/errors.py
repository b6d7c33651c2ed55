"""The errors a user sees as one line: a bad input (:class:`InputError`), a bad row named by file and
line (:class:`BadRowError`), and an output folder that is not this run's to write
(:class:`RunConflictError`)."""

from __future__ import annotations



class InputError(ValueError):
    """A user-facing problem with the input (path, format); printed as one line."""


class BadRowError(ValueError):
    """A malformed row, named by file and line."""

    def __init__(self, source: str, line: int, reason: str):
        super().__init__(f"{source}:{line}: {reason}")
        self.source, self.line, self.reason = source, line, reason

    def __reduce__(self):  # picklable, so it can travel between ranks
        return (BadRowError, (self.source, self.line, self.reason))


class RunConflictError(RuntimeError):
    """The output folder holds another run's results, or another job is writing it."""
