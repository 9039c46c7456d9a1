"""Scheduler signals and periodic checkpoints: requests that every rank acts on together.

SLURM and LSF warn a job before ending it (`sbatch --signal=B:USR1@180`, `bsub -wa USR1 -wt 3`,
SIGTERM then a grace period on preemption). The handlers installed here only note the signal: a
handler that raised (Python's KeyboardInterrupt) or wrote files could strike inside a collective
or in the middle of a checkpoint write. Each training step carries this rank's requests with
its loss in its gradient allreduce (common.steps.make_train_step), so every rank reads the same
combined requests at the same steps and stops, or checkpoints, together: never a rank-local
decision before a collective. Rank 0's clock asks for the periodic checkpoints
(log.checkpoint_every_minutes) the same way, so the other ranks join the collective that averages
the batch-norm statistics.
"""
import math
import signal
import time

import numpy as np
import tensorflow as tf

# Every rank exits with this code after a signal once the checkpoint is on disk: a job script
# requeues the job with --resume on 75 (EX_TEMPFAIL), stops on 0 (finished), reports anything else.
EXIT_PREEMPTED = 75
SIGNALS = ("SIGTERM", "SIGUSR1", "SIGINT")
SAVE = len(SIGNALS)  # the requests vector: one entry per signal, then rank 0's periodic save


class Preempted(SystemExit):
    """Raised on every rank once the stop checkpoint is written: the process exits with 75."""

    def __init__(self):
        super().__init__(EXIT_PREEMPTED)


class StopRequests:
    """This rank's pending requests: signals received and, on rank 0, a periodic save due."""

    def __init__(self, world, every_minutes):
        self.world = world
        self.interval_s = 60.0 * every_minutes if every_minutes else None
        self.received = np.zeros(len(SIGNALS) + 1, np.float32)
        self.last_save = time.monotonic()
        # What the training step reduces; assigned only when a request changes, so the step
        # pays one small variable read and a few more floats in its gradient allreduce.
        self.variable = tf.Variable(self.received, trainable=False, name="stop_requests")
        self._sent = self.received.copy()
        self._previous = {}

    def install(self):
        for name in SIGNALS:
            self._previous[name] = signal.signal(getattr(signal, name), self._note)

    def uninstall(self):
        for name, handler in self._previous.items():
            signal.signal(getattr(signal, name), handler)
        self._previous.clear()

    def _note(self, signum, frame):  # the handler: a flag, nothing that could fail or block
        self.received[SIGNALS.index(signal.Signals(signum).name)] = 1.0

    def update(self):
        """Between training calls: this rank's requests into the variable the next step reduces."""
        self.received[SAVE] = float(self.interval_s is not None and self.world.is_root and
                                    time.monotonic() - self.last_save >= self.interval_s)
        if not np.array_equal(self.received, self._sent):
            self._sent = self.received.copy()
            self.variable.assign(self._sent)

    def saved(self):
        """A checkpoint was written: the periodic interval starts again."""
        self.last_save = time.monotonic()

    def agreed_at_epoch_end(self):
        """The signals any rank received, combined over ranks (a collective: call it on every
        rank at the same point); what a signal during validation or a checkpoint write stops."""
        combined = self.world.allreduce_sum(self.received[:SAVE])
        return signal_names(combined)


def signal_names(combined):
    """'SIGUSR1' (or 'SIGTERM+SIGUSR1') for the requests any rank sent; '' for none."""
    return "+".join(name for name, value in zip(SIGNALS, combined[:len(SIGNALS)]) if value > 0)


def epoch_losses(start, losses):
    """(sum, count) of the epoch's training losses: those before a resume (kept in the
    mid-epoch checkpoint `start`, or None) and `losses`."""
    before = (start["train_loss_sum"], start["train_loss_count"]) if start else (0.0, 0)
    return before[0] + math.fsum(losses), before[1] + len(losses)


def check_mid_epoch_world(state, world, local_batch, accumulate_steps=1):
    """A mid-epoch checkpoint resumes only where it was written: the remaining samples of the
    epoch are this rank count's shards of the epoch's order, from the update it stopped at."""
    before = state.get("world") or {}
    then = (before.get("size"), before.get("local_batch"), before.get("accumulate_steps", 1))
    if then == (world.size, local_batch, accumulate_steps):
        return
    raise ValueError(
        f"checkpoint {state['name']} was written inside epoch {state['epoch'] + 1} (step "
        f"{state['step']}) on {then[0]} rank(s) with {_batch(*then[1:])}; it resumes exactly "
        f"only on the same: resume on {then[0]} rank(s) with that local batch (this run has "
        f"{world.size} with {_batch(local_batch, accumulate_steps)})")


def _batch(local_batch, accumulate_steps):
    """'local batch 4', or 'local batch 4 x 2 accumulated' with gradient accumulation."""
    return f"local batch {local_batch}" + (
        f" x {accumulate_steps} accumulated" if accumulate_steps != 1 else "")
