"""A stall watchdog per rank: a job whose rank stops making progress ends, non-zero, with the
position where each rank stood, instead of hanging until the wall time.

The trainer reports its position (`progress(phase, stage, epoch, step)`: a tuple assignment, cheap
enough for every step). A daemon thread checks it; when nothing moved for train.stall_timeout_s
it prints this rank's last position, waits GRACE_S so that every rank reports (the rank behind the
others is the stuck one; the others wait in a collective), then stops the job with MPI_Abort.
Horovod's own stall check (set in common/distributed.py) names the ranks missing from a
collective and shuts Horovod down shortly after, as a backstop.
"""
import os
import sys
import threading
import time

GRACE_S = 10.0

_state = {"position": ("start", None, None, None), "since": time.monotonic()}
_stop = threading.Event()


def progress(phase, stage=None, epoch=None, step=None):
    """This rank is in `phase` (reading, step, validation, checkpoint, ...) at this position."""
    _state["position"] = (phase, stage, epoch, step)
    _state["since"] = time.monotonic()


def describe(position):
    phase, stage, epoch, step = position
    where = [f"stage {stage}" if stage is not None else "",
             f"epoch {epoch + 1}" if isinstance(epoch, int) else "",
             f"after step {step}" if step is not None else ""]
    return ", ".join(w for w in where if w) + (", " if any(where) else "") + f"phase {phase}"


def start(timeout_s, rank, size):
    """Watch this rank's progress (timeout_s 0: off)."""
    _stop.clear()
    progress("start")
    if not timeout_s:
        return
    poll = min(max(timeout_s / 10, 0.2), 10.0)

    def watch():
        while not _stop.wait(poll):
            idle = time.monotonic() - _state["since"]
            if idle >= timeout_s:
                _abort(rank, size, idle, timeout_s)
    threading.Thread(target=watch, name="stall-watchdog", daemon=True).start()


def stop():
    _stop.set()


def _abort(rank, size, idle, timeout_s):
    prefix = f"[rank {rank}] " if size > 1 else ""
    print(f"{prefix}ERROR: stalled: no progress for {idle:.0f} s (train.stall_timeout_s "
          f"{timeout_s:g}), last at {describe(_state['position'])}; stopping the job. The rank "
          "furthest behind is the stuck one; the others wait for it in a collective.",
          file=sys.stderr, flush=True)
    if _stop.wait(GRACE_S if size > 1 else 0):  # let the other ranks report too
        return
    from common.run_lock import release_all
    release_all()
    if size > 1:
        try:
            from mpi4py import MPI
            MPI.COMM_WORLD.Abort(3)
        except ImportError:
            pass
    os._exit(3)
