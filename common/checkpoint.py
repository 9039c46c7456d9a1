"""Atomic checkpoints: model, optimizer and trainer position, written by rank 0.

Each checkpoint is a fresh folder, renamed into place when complete; `latest.json` names the newest
one and is itself replaced atomically. A crash mid-write leaves the previous checkpoint in charge.
"""
import json
import os
import shutil
import tempfile

import numpy as np
import tensorflow as tf

from common.faults import fault_point
from common.optimizers import unwrapped

LATEST = "latest.json"


class CheckpointStore:
    def __init__(self, directory, keep=2):
        self.directory = directory
        self.keep = max(int(keep), 1)

    def latest(self):
        """The trainer state of the newest checkpoint (with its 'path'), or None."""
        pointer = os.path.join(self.directory, LATEST)
        if not os.path.exists(pointer):
            return None
        with open(pointer) as f:
            state = json.load(f)
        state["path"] = os.path.join(self.directory, state["name"])
        if not os.path.isdir(state["path"]):
            raise FileNotFoundError(f"{pointer} names {state['path']}, which is missing")
        return state

    def save(self, model, optimizer, state):
        """Write a checkpoint for `state` (a dict with 'stage' and 'epoch', and 'step' for one
        inside that epoch; numpy scalars are stored as the Python numbers they hold)."""
        state = plain(state)
        text = json.dumps(state, indent=1)  # before any file is written: a bad value costs nothing
        os.makedirs(self.directory, exist_ok=True)
        name = f"stage{state['stage']}-epoch{state['epoch']:04d}"
        if state.get("step") is not None:  # inside the epoch: sorts after the previous epoch's end
            name += f"-step{state['step']:06d}"
        tmp = tempfile.mkdtemp(prefix=".tmp-", dir=self.directory)
        ckpt = tf.train.Checkpoint(model=model, optimizer=unwrapped(optimizer))
        ckpt.write(os.path.join(tmp, "ckpt"))
        fault_point("checkpoint.write")
        with open(os.path.join(tmp, "state.json"), "w") as f:
            f.write(text)
        final = os.path.join(self.directory, name)
        if os.path.exists(final):  # re-run of the same epoch after a resume
            shutil.rmtree(final)
        os.replace(tmp, final)
        _write_atomically(os.path.join(self.directory, LATEST), json.dumps({**state, "name": name}))
        self._prune(keep_name=name)
        return final

    def restore(self, model, optimizer, state):
        ckpt = tf.train.Checkpoint(model=model, optimizer=unwrapped(optimizer))
        ckpt.read(os.path.join(state["path"], "ckpt")).assert_existing_objects_matched()

    def _prune(self, keep_name):
        names = sorted(n for n in os.listdir(self.directory)
                       if n.startswith("stage") and n != keep_name)
        for name in names[: max(len(names) - (self.keep - 1), 0)]:
            shutil.rmtree(os.path.join(self.directory, name), ignore_errors=True)
        for name in os.listdir(self.directory):  # debris of an interrupted write
            if name.startswith(".tmp-"):
                shutil.rmtree(os.path.join(self.directory, name), ignore_errors=True)


def plain(value):
    """A copy of `value` with numpy scalars and arrays turned into Python numbers and lists."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, (np.generic, np.ndarray)):
        return value.tolist()
    return value


def _write_atomically(path, text):
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
