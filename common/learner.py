"""What trains a model: the model, its optimizer and LR schedule, and the compiled steps.

Consecutive stages that train the same network share one learner: weights, compiled steps and
(with train.carry_optimizer) the optimizer state carry over, and the LR schedule restarts.
"""
from dataclasses import dataclass
from typing import Callable, Optional

import tensorflow as tf

from common import lr as lr_rules
from common.data import common_spec
from common.evaluation import task_eval_step
from common.multires import same_network, transfer_weights
from common.optimizers import make_optimizer, unwrapped, with_loss_scaling
from common.steps import StepRunner


@dataclass
class Learner:
    model: object
    optimizer: object
    schedule: object
    train_spec: object = None  # batch shapes loosened to fit every stage sharing the learner
    val_spec: object = None
    runner: Optional[StepRunner] = None
    eval_step: Optional[Callable] = None


class LearnerBuilder:
    """Builds each stage's learner for the Trainer: the app's model in the stage's precision,
    its optimizer (with loss scaling for mixed_float16) and LR schedule, the state restored on
    a resume, and the same starting point on every rank. Remembers which later stages continue
    a learner it built (`continues`)."""

    def __init__(self, stages, task, world, store, log):
        self.stages, self.task, self.world, self.store, self.log = stages, task, world, store, log
        self.continues = [False] * len(stages)

    def model(self, stage):
        """The app's model for `stage`, its layers computing in the stage's precision."""
        tf.keras.mixed_precision.set_global_policy(stage.train["precision"])
        return self.task.build_model(stage)

    def build(self, stage, setups, previous, state):
        """The learner of `stage` (`setups`: every stage's StageSetup): the previous stage's
        one when this stage continues it, else a new one, its weights handed over from
        `previous` or restored from the checkpoint `state`."""
        setup = setups[stage.index]
        if previous is not None and state is None and self.continues[stage.index]:
            return switch(previous, stage, setup, self.log)
        model = self.model(stage)
        if previous is not None and state is None:
            for line in transfer_weights(previous.model, model).lines():
                self.log.info(line)
        learner = self._new(model, stage, setup, state)
        group = self._stages_continuing(stage, model)
        if len(group) > 1:
            learner.train_spec = common_spec([setups[i].train_data for i in group])
            learner.val_spec = common_spec([setups[i].val_data for i in group])
        learner.eval_step = task_eval_step(model, self.task, learner.val_spec)
        return learner

    def _new(self, model, stage, setup, state):
        schedule = lr_rules.WarmupDecay(*schedule_args(stage, setup))
        optimizer = make_optimizer(stage.train, schedule)
        optimizer.build(model.trainable_variables)
        optimizer = with_loss_scaling(optimizer, stage.train["precision"])
        if state is not None:
            self.store.restore(model, optimizer, state)
            continue_schedule(optimizer, schedule, stage, setup, state)
            change = world_change(state, self.world, setup, float(schedule(optimizer.iterations)))
            if change:
                self.log.info(change)
        # Same starting point everywhere: re-initialised layers, restored or fresh optimizer state.
        self.world.broadcast_variables(model.variables + optimizer.variables)
        return Learner(model, optimizer, schedule)

    def _stages_continuing(self, stage, model):
        """Indices of `stage` and of the later stages that keep training `model` (marked in
        `continues`). Their batches are traced once, with the dimensions that differ between
        stages left open."""
        group = continuing_stages(self.stages, stage, model, self.model)
        for index in group[1:]:
            self.continues[index] = True
        tf.keras.mixed_precision.set_global_policy(stage.train["precision"])
        return group


def average_non_trainable(model, world):
    """Batch-norm statistics are updated per rank: average them so all ranks agree."""
    if world.hvd is None:
        return
    for var in model.non_trainable_variables:
        if var.dtype.is_floating:  # not RNG states
            var.assign(world.hvd.allreduce(var, op=world.hvd.Average, name=f"sync_{var.name}"))


def schedule_args(stage, setup):
    """The stage's WarmupDecay arguments, for its steps per epoch and peak LR."""
    lr = stage.train["lr"]
    return (lr["base"], setup.peak_lr, setup.train_data.steps_per_epoch, stage.epochs,
            lr["warmup_epochs"], lr["decay"], lr["decay_epochs"], lr["decay_factors"],
            lr["min_lr"])


def continuing_stages(stages, stage, model, build_model):
    """Indices of `stage` and of the stages after it that will keep training `model`: same
    model and step settings, and every weight the same name and shape. `build_model(stage)`
    builds a later stage's own model, to compare its weights."""
    group = [stage.index]
    for later in stages[stage.index + 1:]:
        if not same_network(stages[group[-1]], later, model, build_model(later)):
            break
        group.append(later.index)
    return group


def switch(learner, stage, setup, log):
    """Carry `learner` into `stage`: the LR schedule restarts at this stage's step 0; the
    optimizer starts afresh (zeroed slots and step count, as a new one would) unless
    train.carry_optimizer."""
    optimizer = unwrapped(learner.optimizer)
    if not stage.train["carry_optimizer"]:
        for var in optimizer.variables:
            var.assign(tf.zeros_like(var))
    learner.schedule.restart(*schedule_args(stage, setup), first_step=int(optimizer.iterations))
    kept = "carried over" if stage.train["carry_optimizer"] else "reset"
    log.info(f"stage '{stage.name}' continues training the same network: every weight and the "
             f"compiled steps carry over, the optimizer state is {kept}")
    return learner


def continue_schedule(optimizer, schedule, stage, setup, state):
    """Put the LR schedule at the restored epoch in this run's steps: steps per epoch change
    when the rank count does (weak scaling, uneven shards), the epoch does not. The optimizer's
    own step count (Adam's bias correction) stays as restored. A mid-epoch checkpoint adds its
    steps within the epoch."""
    steps_done = (state["epoch"] + 1) * setup.train_data.steps_per_epoch
    if state.get("step") is not None:  # a checkpoint inside the epoch (same rank count)
        steps_done = state["epoch"] * setup.train_data.steps_per_epoch + state["step"]
    schedule.restart(*schedule_args(stage, setup),
                     first_step=int(optimizer.iterations) - steps_done)


def world_change(state, world, setup, lr_now):
    """The log line of a resume on another rank count or accumulation, or None on the same."""
    before = state.get("world")
    if not before or (before["size"], before.get("accumulate_steps", 1)) == \
            (world.size, setup.accumulate):
        return None
    return (f"resuming on {world.size} rank(s){_accumulating(setup.accumulate)} a run "
            f"checkpointed on {before['size']}{_accumulating(before.get('accumulate_steps', 1))}: "
            f"local batch {before['local_batch']} -> {setup.local_batch}, global batch "
            f"{before['global_batch']} -> {setup.global_batch}, peak LR {before['peak_lr']:g} -> "
            f"{setup.peak_lr:g}; the LR schedule continues at epoch {state['epoch'] + 1} with LR "
            f"{lr_now:g}")


def _accumulating(steps):
    return f" accumulating {steps} micro-batches" if steps != 1 else ""
