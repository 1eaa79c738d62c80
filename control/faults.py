"""Fault injection for crash tests: `fault_point(name)` kills this process with
SIGKILL when ``ONAIR_FAULT_POINT`` names that point.

Multi-step flows (an upload becoming an asset, a clip, the end of a broadcast)
call it between their steps, so the tests can prove that a crash at any step
leaves nothing half done once the reconciler has run. Unset (always, outside
those tests) it costs one dictionary lookup.
"""

from __future__ import annotations

import os
import signal

ENV = "ONAIR_FAULT_POINT"


def fault_point(name: str) -> None:
    if os.environ.get(ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)
