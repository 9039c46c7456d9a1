"""Fault injection, a testing aid: the one place that reads the TRAIN_FAULTS variable.

The code marks named points (`fault_point("checkpoint.write")`); TRAIN_FAULTS makes a point fail
in a chosen way, so tests and scripts/fault_matrix-style runs exercise the real failure paths.
Unset (the normal case) every point is a dictionary look-up that does nothing.

Points: `step` (before each training call), `validation`, `checkpoint.write` (weights written,
not yet renamed into place), `checkpoint.publish` (renamed, latest.json not yet moved),
`edsr.list_ids` (before EDSR's rank 0 reads or writes list.txt).

TRAIN_FAULTS holds faults separated by ';', each `<point>:<action>[,rank=<r>][,at=<n>]`:
  action   sleep=<seconds> | hang | kill (SIGKILL this process) | signal=<NAME> (to this
           process, e.g. signal=USR1) | raise=<message> (RuntimeError) | enospc (OSError ENOSPC)
  rank=r   only on rank r (default: every rank)
  at=n     only the n-th time this process reaches the point, counting from 1 (default: every time)
Example: TRAIN_FAULTS="step:signal=USR1,rank=1,at=3;checkpoint.write:sleep=2"
"""
import errno
import os
import signal
import time
from dataclasses import dataclass
from typing import Optional

VARIABLE = "TRAIN_FAULTS"
_ACTIONS = ("sleep", "hang", "kill", "signal", "raise", "enospc")


@dataclass
class Fault:
    point: str
    action: str
    arg: Optional[str] = None
    rank: Optional[int] = None
    at: Optional[int] = None


def parse(text):
    """The faults described by `text` (TRAIN_FAULTS' syntax); a malformed entry raises
    ValueError naming it."""
    faults = []
    for entry in filter(None, (part.strip() for part in (text or "").split(";"))):
        try:
            point, rest = entry.split(":", 1)
            action, *options = rest.split(",")
            action, _, arg = action.partition("=")
            fault = Fault(point.strip(), action.strip(), arg or None)
            for option in options:
                key, value = option.split("=", 1)
                if key.strip() not in ("rank", "at"):
                    raise ValueError(f"unknown option {key.strip()!r}")
                setattr(fault, key.strip(), int(value))
            if fault.action not in _ACTIONS:
                raise ValueError(f"unknown action {fault.action!r} (choose from "
                                 f"{', '.join(_ACTIONS)})")
        except ValueError as exc:
            raise ValueError(f"{VARIABLE}: bad entry {entry!r}: {exc}") from None
        faults.append(fault)
    return faults


_faults = parse(os.environ.get(VARIABLE))
_counts = {}
_rank = 0


def set_rank(rank):
    """This process's rank, for faults restricted to one rank (set once the world exists)."""
    global _rank
    _rank = rank


def fault_point(point):
    """Fail here if TRAIN_FAULTS asks for it; otherwise do nothing."""
    if not _faults:
        return
    _counts[point] = count = _counts.get(point, 0) + 1
    for fault in _faults:
        if fault.point != point or (fault.rank is not None and fault.rank != _rank) or \
                (fault.at is not None and fault.at != count):
            continue
        _act(fault)


def _act(fault):
    if fault.action == "sleep":
        time.sleep(float(fault.arg))
    elif fault.action == "hang":
        while True:
            time.sleep(3600)
    elif fault.action == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif fault.action == "signal":
        os.kill(os.getpid(), getattr(signal, "SIG" + fault.arg.upper().removeprefix("SIG")))
    elif fault.action == "raise":
        raise RuntimeError(fault.arg or f"injected fault at {fault.point}")
    elif fault.action == "enospc":
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC) + f" (injected at {fault.point})")
