"""Crash injection for the crash tests: ``PIPELINE_CRASH_AFTER=<stage>`` kills the process.

Right after the named stage finishes, the process gets SIGKILL, as a power cut or an OOM kill
would end it: no ``finally``, no report. The tests use it to prove that a killed release never
leaves a release tag on an unchecked image and that re-running converges. Nothing else in the
product reads it; the runner only calls the hook it is given.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Mapping

VARIABLE = "PIPELINE_CRASH_AFTER"


def from_env(env: Mapping[str, str]) -> Callable[[str], None] | None:
    """The after-stage hook ``PIPELINE_CRASH_AFTER`` asks for, or ``None``."""
    target = env.get(VARIABLE) or None
    if target is None:
        return None

    def after(stage: str) -> None:
        if stage == target:
            os.kill(os.getpid(), signal.SIGKILL)

    return after
