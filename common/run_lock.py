"""One job at a time in an output folder: an exclusive lock file naming its holder.

Two jobs training into one folder (a job submitted twice, a chain whose predecessor still runs)
would prune each other's checkpoints. The lock holds the holder's host, pid and batch job id and
is refreshed every HEARTBEAT_S while the holder lives. A lock is stale, and taken over with a log
line, when its holder's process is gone from this host, when it was held by an earlier run of
this same batch job (a requeue), or when its heartbeat stopped STALE_AFTER_S ago: a holder on
another node that died (killed by MPI_Abort, a node failure). For a holder on another node the
lock is watched until its heartbeat shows it alive or stale (at most STALE_AFTER_S). Rank 0 takes it; launch.py broadcasts the outcome so every rank stops together.
"""
import atexit
import json
import logging
import os
import socket
import threading
import time

LOCK = "run.lock"
HEARTBEAT_S = 20.0
STALE_AFTER_S = 5 * HEARTBEAT_S

_held = {}  # path -> this process's record, while held


class RunLocked(RuntimeError):
    every_rank = True  # raised on every rank together: no MPI_Abort needed to stop the others


def hold(world, folder):
    """Rank 0 takes the lock on `folder`; every rank learns the outcome and stops together."""
    refusal = None
    if world.is_root:
        try:
            acquire(folder)
        except RunLocked as exc:
            refusal = str(exc)
    refusal = world.broadcast_object(refusal)
    if refusal:
        raise RunLocked(refusal)


def job_id():
    """The batch system's job id (SLURM or LSF), or None outside a job."""
    return os.environ.get("SLURM_JOB_ID") or os.environ.get("LSB_JOBID")


def describe(holder):
    job = f", job {holder['job']}" if holder.get("job") else ""
    return f"pid {holder.get('pid')} on {holder.get('host')}{job}"


def acquire(folder):
    """Take the lock on `folder` for this process (released at exit); raise RunLocked naming
    the holder when another live job has it."""
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, LOCK)
    mine = {"host": socket.gethostname(), "pid": os.getpid(), "job": job_id(),
            "since": time.strftime("%Y-%m-%d %H:%M:%S")}
    draft = f"{path}.new-{socket.gethostname()}-{os.getpid()}"
    with open(draft, "w") as f:
        json.dump(mine, f)
    try:
        for _ in range(3):
            if _link(draft, path):
                _held[path] = mine
                _heartbeat(path)
                return path
            text, holder = _read(path)
            try:
                why = stale_reason(path, holder)
            except FileNotFoundError:  # released meanwhile
                continue
            if why is None:
                raise RunLocked(f"{folder} is in use by another job ({describe(holder)}, since "
                                f"{holder.get('since')}; lock {path}). Wait for it to end or "
                                "choose another --output-dir; if that job is gone, delete "
                                "the lock file")
            if _set_aside(path, text):
                logging.getLogger("train").warning(
                    f"WARNING: taking over the stale lock {path} of {describe(holder)}: {why}")
    finally:
        os.remove(draft)
    raise RunLocked(f"{path}: could not take the lock (another job is taking it too)")


def stale_reason(path, holder):
    """Why the lock `path` held by `holder` is stale, or None when its holder lives."""
    if holder is None:
        return "the lock file is unreadable"
    touched = os.path.getmtime(path)
    if holder.get("job") and holder.get("job") == job_id() and holder.get("pid") != os.getpid():
        return "an earlier run of this job (requeued)"
    if holder.get("host") == socket.gethostname() and not _alive(holder.get("pid")):
        return "that process has ended"
    if holder.get("host") == socket.gethostname():
        return None
    while time.time() - touched <= STALE_AFTER_S:  # another node: is its heartbeat going?
        time.sleep(min(HEARTBEAT_S / 4, STALE_AFTER_S))
        if os.path.getmtime(path) != touched:
            return None
    return f"not refreshed for {time.time() - touched:.0f} s"


def release_all():
    """Remove the locks this process holds (also run at exit and before an abort)."""
    for path, mine in list(_held.items()):
        _held.pop(path, None)
        if _read(path)[1] == mine:
            try:
                os.remove(path)
            except OSError:
                pass


atexit.register(release_all)


def _link(draft, path):
    """Create `path` holding the draft's record in one step (never half written); False when
    it exists."""
    try:
        os.link(draft, path)
    except FileExistsError:
        return False
    return True


def _read(path):
    try:
        with open(path) as f:
            text = f.read()
        return text, json.loads(text)
    except (OSError, ValueError):
        return None, None


def _alive(pid):
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, TypeError, ValueError):
        return True  # someone else's process, or nothing to check: assume it lives
    return True


def _set_aside(path, text):
    """Move the stale lock out of the way; True when it was still the one judged stale (another
    job may have replaced it meanwhile: then it is put back)."""
    aside = f"{path}.stale-{socket.gethostname()}-{os.getpid()}"
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        return False
    if _read(aside)[0] != text:
        try:
            os.link(aside, path)  # fails if a third job holds it now: its lock stays
        except OSError:
            pass
        os.remove(aside)
        return False
    os.remove(aside)
    return True


def _heartbeat(path):
    def beat():
        while path in _held:
            try:
                os.utime(path)
            except OSError:
                pass
            time.sleep(HEARTBEAT_S)
    threading.Thread(target=beat, name="run-lock-heartbeat", daemon=True).start()
