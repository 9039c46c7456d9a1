"""Atomic checkpoints: model, optimizer and trainer position, written by rank 0.

Each checkpoint is a fresh folder, its files and the folder fsynced, then renamed into place;
`latest.json` names the newest one and is itself replaced atomically. A crash mid-write leaves
the previous checkpoint in charge. A damaged `latest.json` or newest checkpoint falls back, with a
warning, to the newest intact one kept beside it. Before writing, the weights are checked to be
finite and the disk to have room.
"""
import errno
import json
import logging
import os
import shutil
import tempfile

import numpy as np
import tensorflow as tf

from common.faults import fault_point
from common.optimizers import unwrapped

LATEST = "latest.json"
STATE = "state.json"
FILES = "files.json"  # the size of each data file: a truncated checkpoint is not intact
SPACE_MARGIN = 1.2    # room asked for beyond the estimate: files grow, other writers


class CheckpointError(RuntimeError):
    pass


class NonFiniteWeights(CheckpointError):
    pass


class CheckpointStore:
    def __init__(self, directory, keep=2):
        self.directory = directory
        self.keep = max(int(keep), 1)
        self.log = logging.getLogger("train")

    def latest(self):
        """The trainer state of the newest intact checkpoint (with its 'name' and 'path'), or
        None when there is none."""
        pointer = os.path.join(self.directory, LATEST)
        if os.path.exists(pointer):
            try:
                named = _read_json(pointer)["name"]
                return self._intact(named)
            except (CheckpointError, KeyError, TypeError) as err:
                problem = f"{pointer} unusable ({err})"
        else:
            problem = None
        state = self._newest_intact()
        if state is not None and problem:
            self.log.warning(f"WARNING: {problem}; falling back to {state['path']}, the newest "
                             "intact checkpoint")
        elif state is not None:
            self.log.warning(f"WARNING: {pointer} is missing; using {state['path']}, the newest "
                             "intact checkpoint")
        elif problem:
            raise CheckpointError(f"{problem}, and no intact checkpoint is left in "
                                  f"{self.directory}")
        return state

    def _intact(self, name):
        """The state stored in checkpoint `name`, after checking its files are whole."""
        path = os.path.join(self.directory, name)
        if not os.path.isdir(path):
            raise CheckpointError(f"{path} is missing")
        state = _read_json(os.path.join(path, STATE))
        if not isinstance(state, dict) or "stage" not in state or "epoch" not in state:
            raise CheckpointError(f"{os.path.join(path, STATE)}: no stage and epoch in it")
        sizes = (_read_json(os.path.join(path, FILES)) if os.path.exists(os.path.join(path, FILES))
                 else {"ckpt.index": None})  # written before files.json existed
        for file, size in sizes.items():
            full = os.path.join(path, file)
            if not os.path.exists(full):
                raise CheckpointError(f"{full} is missing")
            if size is not None and os.path.getsize(full) != size:
                raise CheckpointError(f"{full} holds {os.path.getsize(full)} bytes, "
                                      f"{size} were written")
        return {**state, "name": name, "path": path}

    def _newest_intact(self):
        """The newest (by write time) intact checkpoint folder's state, or None."""
        if not os.path.isdir(self.directory):
            return None
        folders = [n for n in os.listdir(self.directory)
                   if n.startswith("stage") and os.path.isdir(os.path.join(self.directory, n))]
        folders.sort(key=lambda n: (os.path.getmtime(os.path.join(self.directory, n)), n))
        for name in reversed(folders):
            try:
                return self._intact(name)
            except CheckpointError as err:
                self.log.warning(f"WARNING: skipping checkpoint {name}: {err}")
        return None

    def save(self, model, optimizer, state, before_publish=None):
        """Write a checkpoint for `state` (a dict with 'stage' and 'epoch', and 'step' for one
        inside that epoch; numpy scalars are stored as the Python numbers they hold).
        `before_publish()` runs once the checkpoint is on disk and before it is renamed into place
        and named by latest.json (the metrics record: a kill in between leaves the older
        checkpoint in charge and the record is trimmed)."""
        state = plain(state)
        text = json.dumps(state, indent=1)  # before any file is written: a bad value costs nothing
        check_finite(model)
        os.makedirs(self.directory, exist_ok=True)
        self.check_space(model.variables + unwrapped(optimizer).variables)
        name = f"stage{state['stage']}-epoch{state['epoch']:04d}"
        if state.get("step") is not None:  # inside the epoch: sorts after the previous epoch's end
            name += f"-step{state['step']:06d}"
        tmp = tempfile.mkdtemp(prefix=".tmp-", dir=self.directory)
        ckpt = tf.train.Checkpoint(model=model, optimizer=unwrapped(optimizer))
        ckpt.write(os.path.join(tmp, "ckpt"))
        fault_point("checkpoint.write")  # between the weights and the rename
        sizes = {n: os.path.getsize(os.path.join(tmp, n)) for n in os.listdir(tmp)}
        _write_synced(os.path.join(tmp, STATE), text)
        _write_synced(os.path.join(tmp, FILES), json.dumps(sizes))
        for file in sizes:
            _fsync_path(os.path.join(tmp, file))
        _fsync_path(tmp)
        if before_publish is not None:
            before_publish()
        final = os.path.join(self.directory, name)
        if os.path.exists(final):  # re-run of the same epoch after a resume
            shutil.rmtree(final)
        os.replace(tmp, final)
        _fsync_path(self.directory)
        fault_point("checkpoint.publish")
        write_atomically(os.path.join(self.directory, LATEST), json.dumps({**state, "name": name}))
        self._prune(keep_name=name)
        return final

    def check_space(self, variables):
        """Raise ENOSPC naming the folder when the disk cannot hold one more checkpoint, estimated
        from the last one's size and the variables' bytes."""
        estimate = max(sum(v.numpy().nbytes for v in variables), self._last_size())
        need = int(estimate * SPACE_MARGIN)
        free = shutil.disk_usage(self.directory).free
        if need > free:
            raise OSError(errno.ENOSPC, f"{self.directory}: a checkpoint needs about {need} bytes "
                          f"but {free} are free; free space or pass another --output-dir")

    def _last_size(self):
        sizes = [0]
        for name in os.listdir(self.directory):
            folder = os.path.join(self.directory, name)
            if name.startswith("stage") and os.path.isdir(folder):
                sizes.append(sum(os.path.getsize(os.path.join(folder, f))
                                 for f in os.listdir(folder)))
        return max(sizes)

    def restore(self, model, optimizer, state):
        ckpt = tf.train.Checkpoint(model=model, optimizer=unwrapped(optimizer))
        path = os.path.join(state["path"], "ckpt")
        try:
            ckpt.read(path).assert_existing_objects_matched()
        except (tf.errors.OpError, AssertionError, ValueError) as err:
            raise CheckpointError(f"{state['path']}: cannot restore the checkpoint ({err})") \
                from None

    def _prune(self, keep_name):
        names = sorted(n for n in os.listdir(self.directory)
                       if n.startswith("stage") and n != keep_name)
        for name in names[: max(len(names) - (self.keep - 1), 0)]:
            shutil.rmtree(os.path.join(self.directory, name), ignore_errors=True)
        for name in os.listdir(self.directory):  # debris of an interrupted write
            if name.startswith(".tmp-"):
                shutil.rmtree(os.path.join(self.directory, name), ignore_errors=True)


def resume_point(store, world, resume, metrics_log, log):
    """The checkpoint state this run continues from (None: from scratch), agreed on every rank
    from rank 0's reading of `store`; `resume` is --resume. Refuses to overwrite a checkpointed
    run without it. Rank 0 drops the records of `metrics_log` beyond that checkpoint."""
    latest = world.broadcast_object(store.latest() if world.is_root else None)
    if latest and not resume:
        raise RuntimeError(f"{store.directory} already holds a checkpoint ({latest['name']}); "
                           "pass --resume to continue it or choose another --output-dir")
    if world.is_root:  # drop records of epochs whose checkpoint never landed; a mid-epoch
        # checkpoint's epoch is logged when that epoch ends
        metrics_log.truncate_after(
            *(latest["stage"], latest["epoch"] - (latest.get("step") is not None)) if latest
            else (-1, -1))
    if latest is None:
        if resume:
            log.info(f"no checkpoint in {store.directory}; starting from scratch")
        return None
    log.info(f"resuming from {latest['path']}")
    return latest


def check_finite(model):
    """Raise NonFiniteWeights naming the variables holding NaN or Inf: such weights would
    become the 'last good' checkpoint."""
    bad = [v.name for v in model.variables
           if v.dtype.is_floating and not bool(tf.reduce_all(tf.math.is_finite(v)))]
    if bad:
        raise NonFiniteWeights(f"non-finite weights in {', '.join(bad[:5])}"
                               + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
                               + "; not saving them: the last good checkpoint stays in charge")


def plain(value):
    """A copy of `value` with numpy scalars and arrays turned into Python numbers and lists."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, (np.generic, np.ndarray)):
        return value.tolist()
    return value


def _read_json(path):
    """The JSON in `path`; any failure is a CheckpointError naming the file."""
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as err:
        raise CheckpointError(f"{path}: cannot read ({err})") from None


def _write_synced(path, text):
    with open(path, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def _fsync_path(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomically(path, text):
    """Replace `path` with `text` whole: a kill leaves the old or the new file, synced."""
    tmp = f"{path}.tmp"
    _write_synced(tmp, text)
    os.replace(tmp, path)
    _fsync_path(os.path.dirname(path) or ".")
