"""Fault injection for the conformance suite (``DIST_DATA_FAULT``): the states a killed or failing
job leaves, made on purpose at named points."""

from __future__ import annotations

import os

from .errors import RunConflictError


def fault(point: str) -> None:
    """Fault injection for the conformance suite: ``DIST_DATA_FAULT=kill:POINT`` kills this process
    with SIGKILL at ``POINT`` (no clean-up runs: the state a killed job leaves); ``error:POINT``
    raises a user error there (a bad row found late, as the command's own errors are). The points:
    ``embedded`` (the first set of texts embedded and its blocks cached), ``merge`` (every part
    written, nothing published), ``body`` (a command of named results, its results recorded as
    about to be written)."""
    if os.environ.get("DIST_DATA_FAULT") == f"kill:{point}":
        import signal

        os.kill(os.getpid(), signal.SIGKILL)
    if os.environ.get("DIST_DATA_FAULT") == f"error:{point}":
        raise RunConflictError(f"DIST_DATA_FAULT: an injected error at {point}")
