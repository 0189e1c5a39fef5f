"""Named points where a crash test makes the worker kill itself (SIGKILL, as `kill -9` would), to aim a crash
at the worst instant instead of at a random time. Armed by PACKWISE_FAILPOINT=NAME or NAME:N (the Nth time
the point is reached); unarmed, a point costs one comparison.

Points:
- stats.applied  a statistics batch is applied and its outputs are handed to the producer; no flush yet
- flush.sending  a state flush has handed half of its changelog records to the producer
- flush.sent     a state flush has handed all its changelog records to the producer, none acknowledged yet
"""

from __future__ import annotations

import os
import signal

POINTS = ("stats.applied", "flush.sending", "flush.sent")
_armed = ""
_remaining = 0


def arm(spec: str) -> None:
    """Arm the point named in `spec` (NAME or NAME:N); an empty spec disarms."""
    global _armed, _remaining
    name, _, count = spec.partition(":")
    if name and name not in POINTS:
        raise ValueError(f"unknown failpoint {name!r} (known: {', '.join(POINTS)})")
    _armed, _remaining = name, int(count or 1)


def reached(name: str) -> None:
    global _remaining
    if name != _armed:
        return
    _remaining -= 1
    if _remaining <= 0:
        os.kill(os.getpid(), signal.SIGKILL)
