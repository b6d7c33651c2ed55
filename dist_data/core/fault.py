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
    about to be written). With ``DIST_DATA_FAULT_ONCE=PATH`` the fault happens once over all processes:
    the first to create ``PATH`` (a preempted node, then a restart that runs clean)."""
    once = os.environ.get("DIST_DATA_FAULT_ONCE")
    if once and os.environ.get("DIST_DATA_FAULT", "").endswith(f":{point}"):
        try:
            os.close(os.open(once, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            return
    if os.environ.get("DIST_DATA_FAULT") == f"kill:{point}":
        import signal

        os.kill(os.getpid(), signal.SIGKILL)
    if os.environ.get("DIST_DATA_FAULT") == f"error:{point}":
        raise RunConflictError(f"DIST_DATA_FAULT: an injected error at {point}")
