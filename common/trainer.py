"""The one training loop: every app, every stage of a multi-resolution plan, resume included."""
import json
import math
import os
import sys
import time
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np
import tensorflow as tf
from tqdm import tqdm

from common import lr as lr_rules
from common import watchdog
from common.accumulation import update_batches
from common.checkpoint import CheckpointStore
from common.logs import MetricsLog
from common.data import common_spec
from common.faults import fault_point
from common.learner import (Learner, continue_schedule, continuing_stages, schedule_args, switch,
                            world_change)
from common.multires import (EarlyStopping, FinalStageProbe, describe_target, early_stop_value,
                             memory_equivalent_batches, plan_stages,
                             reached, transfer_weights)
from common.optimizers import make_optimizer, with_loss_scaling
from common.preemption import (Preempted, StopRequests, check_mid_epoch_world, epoch_losses,
                               signal_names)
from common.run_identity import check_stage
from common.steps import StepRunner, draws_random_numbers, make_eval_step, make_train_step
from common.summary import run_summary, summary_lines
from common.mlperf_log import MLPerfLog
from common.tensorboard import TensorBoardLog


class NonFiniteLoss(RuntimeError):
    pass


@dataclass
class Task:
    """What an app hands the Trainer."""
    build_model: Callable      # (stage) -> tf.keras.Model; layer names stable across stages
    make_datasets: Callable    # (stage, local_batch, world, seed) -> (train, val) ShardedDataset
    loss: Callable             # (y, pred) -> per-sample loss
    metrics: dict              # name -> (y, pred) -> per-sample value, reported as val_<name>
    # (model, stage, epoch, output_dir), called on rank 0 after each validation: pictures people
    # look at (predicted masks, restored images); returns the PNG's path (TensorBoard shows it)
    # or None. Must not run collectives.
    on_validation: Optional[Callable] = None
    maximize: tuple = ()       # metric names where higher is better (IoU, PSNR); others: lower
    make_test_data: Optional[Callable] = None  # (stage, local_batch, world) -> ShardedDataset
    sample_pixels: Optional[Callable] = None  # (stage) -> pixels (voxels) of a training sample


@dataclass
class StageSetup:
    local_batch: int
    global_batch: int
    peak_lr: float
    train_data: object          # batches of one update: accumulate x local_batch per rank
    val_data: object
    accumulate: int = 1         # train.accumulate_steps: micro-batches per update


class Trainer:
    def __init__(self, cfg, task, world, logger, name="train"):
        self.cfg, self.task, self.world, self.log = cfg, task, world, logger
        self.out = cfg["output_dir"]
        self.stages = plan_stages(cfg)
        for line in memory_equivalent_batches(self.stages, task.sample_pixels):
            logger.info(line)
        self.store = CheckpointStore(os.path.join(self.out, "checkpoints"),
                                     cfg["log"]["checkpoint_keep"])
        fmt = cfg["log"]["metrics_format"]
        self.metrics_log = MetricsLog(os.path.join(self.out, f"metrics.{fmt}"), fmt)
        self.history = []
        self.requests = StopRequests(world, cfg["log"]["checkpoint_every_minutes"])
        self.tensorboard = (TensorBoardLog(os.path.join(self.out, "tensorboard"), self.stages)
                            if cfg["log"]["tensorboard"] and world.is_root else None)
        self.mlperf = (MLPerfLog(cfg, world, name, self.stages)
                       if cfg["log"]["mlperf"]["enabled"] and world.is_root else None)
        self.model = None  # the last stage's model once fit() returns
        self._check_metric_names()
        self._check_compilation()

    def _check_metric_names(self):
        known = ["train_loss", "val_loss"] + [f"val_{name}" for name in self.task.metrics]
        # early stop may also watch a coarse stage's full-resolution score (log.final_val)
        probed = known + ([f"final_{name}" for name in known[1:]] if self._probing() else [])
        for stage in self.stages:
            for section, choices in (("early_stop", probed), ("target", known)):
                metric = stage.train[section]["metric"]
                if metric not in choices:
                    raise ValueError(f"config key 'train.{section}.metric': unknown metric "
                                     f"{metric!r} (choose from {', '.join(choices)})")

    def _check_compilation(self):
        """XLA's CPU compiler (TensorFlow 2.15) rejects mixed-precision convolution gradients
        ("Seen floating point types of different precisions"): say so before any work."""
        if tf.config.list_logical_devices("GPU"):
            return
        for stage in self.stages:
            if stage.train["jit_compile"] and stage.train["precision"] != "float32":
                raise ValueError(
                    f"stage '{stage.name}': train.jit_compile with train.precision="
                    f"{stage.train['precision']} needs a GPU (XLA on CPU cannot compile "
                    "mixed-precision convolution gradients); turn one of them off")

    def fit(self):
        """Run every stage (or what is left of them after a resume); return the epoch records.
        A scheduler's signal ends it on every rank with a checkpoint (raises Preempted)."""
        self.requests.install()
        stopped = False
        try:
            return self._fit()
        except Preempted:
            # Leave together, once every rank has let go of its input pipeline (slow to stop):
            # a launcher ends the job when the first rank exits non-zero. The handlers stay, so
            # its SIGTERM to a slower rank does not turn that rank's 75 into a death by signal.
            stopped = True
            self.world.allreduce_sum([0.0])
            raise
        finally:
            if not stopped:
                self.requests.uninstall()

    def _fit(self):
        self._t0 = time.perf_counter()
        resume = self._resume_state()
        check_stage(resume, self.stages, self.store.directory)
        if resume:  # wall-clock time counts across resumes
            self._t0 -= resume.get("elapsed_s", 0.0)
        setups = [self._setup(stage) for stage in self.stages]  # validates all data up front
        self.setups, self.continues = setups, [False] * len(setups)
        self.probe = self._final_stage_probe(setups[-1])
        if self.mlperf:
            self.mlperf.settings(self.stages[0], setups[0], setups[-1].train_data.num_samples,
                                 setups[-1].val_data.num_samples)
        if resume and resume.get("run_done"):
            self.log.info(f"the run already finished at stage {resume['stage']} epoch "
                          f"{resume['epoch'] + 1}: {resume.get('done_reason', 'target reached')}"
                          "; nothing to do")
            return self.history
        learner, finished_run = None, False
        for stage, setup in zip(self.stages, setups):
            if resume and stage.index < resume["stage"]:
                continue
            state = resume if resume and stage.index == resume["stage"] else None
            learner, finished_run = self._run_stage(stage, setup, learner, state)
            if finished_run:
                break
        if self.mlperf:
            self.mlperf.run_stop(success=finished_run)
        self.model = learner.model
        self._write_summary()
        return self.history

    def test(self):
        """Evaluate the latest checkpoint's model on the task's test split (--test)."""
        if self.task.make_test_data is None:
            raise ValueError("--test: this app has no test split")
        latest = self.world.broadcast_object(self.store.latest() if self.world.is_root else None)
        if latest is None:
            raise FileNotFoundError(f"--test: no checkpoint in {self.store.directory}")
        check_stage(latest, self.stages, self.store.directory)
        stage = self.stages[latest["stage"]]
        model = self._build_model(stage)
        tf.train.Checkpoint(model=model).read(
            os.path.join(latest["path"], "ckpt")).expect_partial()
        local, _ = lr_rules.batch_sizes(stage.train["scaling"], stage.train["local_batch"],
                                        stage.train["global_batch"], self.world.size,
                                        stage.train["accumulate_steps"])
        data = self.task.make_test_data(stage, local, self.world)
        step = make_eval_step(model, self.task.loss, list(self.task.metrics.values()))
        results = {k.replace("val_", "test_", 1): v
                   for k, v in self._evaluate(data, step).items()}
        self.log.info(f"test split, checkpoint {latest['name']} ({data.num_samples} samples): "
                      + " ".join(f"{k} {v:.4g}" for k, v in results.items()))
        if self.world.is_root:
            with open(os.path.join(self.out, "test.json"), "w") as f:
                json.dump({"checkpoint": latest["name"], **results}, f, indent=1)
            if self.task.on_validation is not None:
                self.task.on_validation(model, stage, "test", self.out)
        return results

    def _write_summary(self):
        """Rank 0: time, epochs, best/final metrics, time to target, over the whole run's log."""
        if not self.world.is_root:
            return
        summary = run_summary(self.metrics_log.read(), self.stages[-1].train["target"],
                              self.task.maximize)
        for line in summary_lines(summary):
            self.log.info(line)
        with open(os.path.join(self.out, "summary.json"), "w") as f:
            json.dump(summary, f, indent=1)

    def _probing(self):
        return self.cfg["log"]["final_val"] and len(self.stages) > 1

    def _final_stage_probe(self, last_setup):
        """With log.final_val, earlier stages are also scored on the last stage's validation
        data, so every epoch of a multi-resolution run has a full-resolution metric."""
        if not self._probing():
            return None
        last = self.stages[-1]

        def build():
            model = self._build_model(last)
            step = make_eval_step(model, self.task.loss, list(self.task.metrics.values()))
            return model, lambda: self._evaluate(last_setup.val_data, step)
        return FinalStageProbe(build, self.log)

    def _resume_state(self):
        latest = self.store.latest() if self.world.is_root else None
        latest = self.world.broadcast_object(latest)
        if latest and not self.cfg["resume"]:
            raise RuntimeError(f"{self.store.directory} already holds a checkpoint "
                               f"({latest['name']}); pass --resume to continue it or choose "
                               "another --output-dir")
        if self.world.is_root:  # drop records of epochs whose checkpoint never landed; a
            # mid-epoch checkpoint's epoch is logged when that epoch ends
            self.metrics_log.truncate_after(
                *(latest["stage"], latest["epoch"] - (latest.get("step") is not None)) if latest
                else (-1, -1))
        if latest is None:
            if self.cfg["resume"]:
                self.log.info(f"no checkpoint in {self.store.directory}; starting from scratch")
            return None
        self.log.info(f"resuming from {latest['path']}")
        return latest

    def _setup(self, stage):
        watchdog.progress("reading", stage.index)
        train = stage.train
        accumulate = train["accumulate_steps"]
        local, global_ = lr_rules.batch_sizes(train["scaling"], train["local_batch"],
                                              train["global_batch"], self.world.size, accumulate)
        peak = lr_rules.scaled_lr(train["lr"]["base"], train["lr"]["base_batch"], global_,
                                  train["lr"]["rule"])
        train_data, val_data = self.task.make_datasets(stage, local, self.world,
                                                       self.cfg["seed"] + 1000 * stage.index)
        train_data = update_batches(train_data, accumulate)  # K micro-batches per update
        self.log.info(
            f"stage {stage.index} '{stage.name}': {train['scaling']} scaling, local batch {local}"
            f"{f' x {accumulate} accumulated' if accumulate > 1 else ''}, "
            f"global batch {global_} over {self.world.size} ranks, LR {train['lr']['base']:g} -> "
            f"{peak:g} ({train['lr']['rule']} rule), {train_data.num_samples} train / "
            f"{val_data.num_samples} val samples, {train_data.steps_per_epoch} steps/epoch")
        return StageSetup(local, global_, peak, train_data, val_data, accumulate)

    def _build_model(self, stage):
        """The app's model for `stage`, its layers computing in the stage's precision."""
        tf.keras.mixed_precision.set_global_policy(stage.train["precision"])
        return self.task.build_model(stage)

    def _build(self, stage, setup, previous, state):
        """The stage's learner: the previous stage's one when this stage continues it."""
        if previous is not None and state is None and self.continues[stage.index]:
            return switch(previous, stage, setup, self.log)
        model = self._build_model(stage)
        if previous is not None and state is None:
            for line in transfer_weights(previous.model, model).lines():
                self.log.info(line)
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
        learner = Learner(model, optimizer, schedule)
        group = self._stages_continuing(stage, model)
        if len(group) > 1:
            learner.train_spec = common_spec([self.setups[i].train_data for i in group])
            learner.val_spec = common_spec([self.setups[i].val_data for i in group])
        return learner

    def _stages_continuing(self, stage, model):
        """Indices of `stage` and of the later stages that keep training `model` (marked in
        self.continues). Their batches are traced once, with the dimensions that differ
        between stages left open."""
        group = continuing_stages(self.stages, stage, model, self._build_model)
        for index in group[1:]:
            self.continues[index] = True
        tf.keras.mixed_precision.set_global_policy(stage.train["precision"])
        return group

    def _world_state(self, setup):
        """What a resume on another rank count compares itself with."""
        return {"size": self.world.size, "local_batch": setup.local_batch,
                "accumulate_steps": setup.accumulate,
                "global_batch": setup.global_batch, "peak_lr": setup.peak_lr}

    def _run_stage(self, stage, setup, previous, state):
        watchdog.progress("building", stage.index)
        inside = state if state is not None and state.get("step") is not None else None
        if inside:
            check_mid_epoch_world(inside, self.world, setup.local_batch, setup.accumulate)
        learner = self._build(stage, setup, previous, state)
        model, optimizer = learner.model, learner.optimizer
        es_cfg = stage.train["early_stop"]
        early = EarlyStopping(es_cfg["patience"], es_cfg["min_delta"], es_cfg["mode"])
        if state is not None:
            early.load(state["early_stop"])
            if not inside and (state["stopped_early"] or state["epoch"] + 1 >= stage.epochs):
                return learner, False  # a resume with more epochs continues the stage
        if learner.eval_step is None:
            learner.eval_step = make_eval_step(model, self.task.loss,
                                               list(self.task.metrics.values()))
            if learner.val_spec:  # one trace for every stage's batches: calls dispatch to it
                learner.eval_step.get_concrete_function(*learner.val_spec)
        target = stage.train["target"]
        # Keras' random layers keep their RNG state outside the checkpoint: with any of them, each
        # epoch restarts from a seed of (run, stage, epoch) in a fresh trace, so an epoch replays
        # identically after a resume. Other models trace once per learner.
        # (An epoch resumed inside draws other random numbers from its resume step on.)
        fresh_trace_per_epoch = draws_random_numbers(model)
        first_epoch = state["epoch"] + (not inside) if state else 0
        batches = None  # one training pipeline for the stage's epochs (ShardedDataset.epochs)
        for epoch in range(first_epoch, stage.epochs):
            start = inside if epoch == first_epoch else None
            if fresh_trace_per_epoch or learner.runner is None:
                tf.random.set_seed(int(np.random.default_rng(
                    [self.cfg["seed"], stage.index, epoch] + ([start["step"]] if start else [])
                ).integers(2**31)))
                learner.runner = StepRunner(
                    make_train_step(model, optimizer, self.task.loss, self.world,
                                    stage.train["jit_compile"], self.requests.variable,
                                    accumulate_steps=setup.accumulate),
                    stage.train["steps_per_call"], learner.train_spec)
            if batches is None:
                batches = learner.runner.batches(setup.train_data.epochs(
                    epoch, stage.epochs, start["step"] if start else 0))
            record = self._epoch(stage, setup, epoch, learner, early, start, batches)
            target_hit = reached(record.get(target["metric"]), target["value"], target["mode"])
            stop = early.update(early_stop_value(record, es_cfg["metric"])) or target_hit
            ckpt_state = {"stage": stage.index, "epoch": epoch, "stopped_early": stop,
                          "run_done": target_hit, "early_stop": early.state(),
                          "world": self._world_state(setup), "elapsed_s": record["elapsed_s"]}
            if target_hit:
                ckpt_state["done_reason"] = describe_target(target, record[target["metric"]])
            self._end_epoch(model, optimizer, ckpt_state, record)
            if target_hit:
                self.log.info(f"{ckpt_state['done_reason']}; stopping the run")
                return learner, True
            if not (stage.index == len(self.stages) - 1 and (stop or epoch + 1 == stage.epochs)):
                self._stop_if_signalled(stage, epoch)  # the run goes on: unless a signal came
            if stop:
                self.log.info(f"stage '{stage.name}': no {es_cfg['metric']} improvement for "
                              f"{es_cfg['patience']} epochs; ending the stage")
                break
        return learner, False

    def _epoch(self, stage, setup, epoch, learner, early, start, batches):
        """Train one epoch on the next batches of the stage's iterator `batches` (from `start`,
        a mid-epoch checkpoint's state, if given), then validate; returns the epoch's record."""
        model, optimizer = learner.model, learner.optimizer
        if self.mlperf:
            self.mlperf.epoch_start(stage.index, epoch)
        record = self._train_epoch(stage, setup, epoch, learner, early, start, batches)
        self._average_non_trainable(model)
        watchdog.progress("validation", stage.index, epoch)
        record.update(self._evaluate(setup.val_data, learner.eval_step))
        if self.probe is not None:  # a measurement, not training: kept out of elapsed_s
            t_probe = time.perf_counter()
            record.update(self.probe.score(model, record, stage.index == len(self.stages) - 1))
            self._t0 += time.perf_counter() - t_probe
        record["elapsed_s"] = time.perf_counter() - self._t0  # since the run began
        if self.world.is_root and self.task.on_validation is not None:
            png = self.task.on_validation(model, stage, epoch, self.out)
            if png and self.tensorboard:
                self.tensorboard.image(stage, epoch, png)
        record["lr"] = float(optimizer.learning_rate)  # the LR of the epoch's last step
        return record

    def _train_epoch(self, stage, setup, epoch, learner, early, start, batches):
        """Losses stay on the device and are read back every log.every_steps steps (and after
        the first step, which times the trace, and at epoch end): a read is a sync that would
        stall a GPU's queue every step. The loss is averaged over ranks inside the step, so all
        ranks read the same values and stop together on a non-finite one; the ranks' stop and
        checkpoint requests ride in the same allreduce, so they act on them at the same read."""
        steps = setup.train_data.steps_per_epoch
        first = start["step"] if start else 0
        bar = tqdm(total=steps, initial=first,
                   desc=f"{stage.name} epoch {epoch + 1}/{stage.epochs}",
                   disable=not (self.world.is_root and self.cfg["log"]["progress"] and
                                sys.stderr.isatty()),
                   mininterval=1.0, leave=False)
        every = self.cfg["log"]["every_steps"]
        losses, pending, t_first = [], [], None
        t_start = time.perf_counter()
        for step_losses in learner.runner.epoch(batches, steps - first):
            pending.append(step_losses)
            watchdog.progress("step", stage.index, epoch, len(losses) + sum(map(len, pending)))
            if sum(map(len, pending)) >= every or not losses:
                asked = self._read_losses(pending, losses, stage, epoch, bar)
                t_first = t_first or time.perf_counter()  # after call 1: excludes tracing
                if asked.any() and first + len(losses) < steps:  # else the epoch end saves
                    self._checkpoint_inside(asked, learner, stage, setup, epoch,
                                            first + len(losses), early.state(),
                                            epoch_losses(start, losses))
            self.requests.update()  # what the next step carries
        self._read_losses(pending, losses, stage, epoch, bar)
        bar.close()
        elapsed = time.perf_counter() - t_start
        ran = steps - first
        first_call = min(stage.train["steps_per_call"], ran)
        timed_steps, timed = (ran - first_call, time.perf_counter() - t_first) \
            if ran > first_call else (ran, elapsed)
        loss_sum, loss_count = epoch_losses(start, losses)  # the whole epoch's, across a resume
        return {"stage": stage.index, "stage_name": stage.name, "epoch": epoch,
                "train_loss": loss_sum / loss_count,
                "samples_per_s": timed_steps * setup.global_batch / max(timed, 1e-9),
                "step_ms": 1000.0 * timed / max(timed_steps, 1), "epoch_s": elapsed}

    def _read_losses(self, pending, losses, stage, epoch, bar):
        """Move the pending losses to `losses`; the first non-finite one stops the run (before
        any checkpoint of its weights). Returns the requests the ranks sent with these steps."""
        if not pending:
            return np.zeros(0)
        rows = tf.concat(pending, 0).numpy()
        pending.clear()
        values = [float(v) for v in rows[:, 0]]
        for value in values:
            if not math.isfinite(value):
                raise NonFiniteLoss(
                    f"non-finite loss ({value}) in stage '{stage.name}' epoch {epoch + 1} step "
                    f"{len(losses) + 1}; stopping every rank. The last good checkpoint in "
                    f"{self.store.directory} is kept: lower the LR or check the data, then "
                    "--resume")
            losses.append(value)
        bar.update(len(values))
        bar.set_postfix(loss=f"{values[-1]:.4g}", refresh=False)
        return rows[:, 1:].max(axis=0)

    def _checkpoint_inside(self, asked, learner, stage, setup, epoch, step, early_state,
                           loss_total):
        """On every rank after the same `step` of the epoch, as the ranks asked together: rank
        0 checkpoints this point (what --resume continues from); after a signal, all stop."""
        state = {"stage": stage.index, "epoch": epoch, "step": step, "stopped_early": False,
                 "run_done": False, "early_stop": early_state, "world": self._world_state(setup),
                 "elapsed_s": time.perf_counter() - self._t0,
                 "train_loss_sum": loss_total[0], "train_loss_count": loss_total[1]}
        model = learner.model
        own = [var.numpy() for var in model.non_trainable_variables]
        self._average_non_trainable(model)  # saved as an epoch end would; linear in the updates
        if self.world.is_root:
            self.store.save(model, learner.optimizer, state)
        for var, value in zip(model.non_trainable_variables, own):  # training goes on unchanged
            var.assign(value)
        self.requests.saved()
        where = (f"stage '{stage.name}' epoch {epoch + 1} step {step}/"
                 f"{setup.train_data.steps_per_epoch}")
        if not signal_names(asked):
            self.log.info(f"checkpoint at {where} (log.checkpoint_every_minutes)")
            return
        self._stop(signal_names(asked), where)

    def _stop_if_signalled(self, stage, epoch):
        """At an epoch end, its checkpoint written: a signal any rank got during validation or
        the write stops every rank here (a collective: every rank calls it)."""
        names = self.requests.agreed_at_epoch_end()
        if names:
            self._stop(names, f"the end of stage '{stage.name}' epoch {epoch + 1}")

    def _stop(self, names, where):
        self.log.info(f"stopped by {names} at {where}; checkpoint written; continue with "
                      "--resume")
        raise Preempted()

    def _average_non_trainable(self, model):
        """Batch-norm statistics are updated per rank: average them so all ranks agree."""
        if self.world.hvd is None:
            return
        for var in model.non_trainable_variables:
            if var.dtype.is_floating:  # not RNG states
                var.assign(self.world.hvd.allreduce(var, op=self.world.hvd.Average,
                                                    name=f"sync_{var.name}"))

    def _evaluate(self, val_data, eval_step):
        fault_point("validation")
        sums = np.zeros(len(self.task.metrics) + 2)
        for x, y, w in val_data.epoch(0):
            sums += eval_step(x, y, w).numpy()
        sums = self.world.allreduce_sum(sums)
        count = max(sums[-1], 1.0)
        values = {"val_loss": sums[0] / count}
        for i, name in enumerate(self.task.metrics):
            values[f"val_{name}"] = sums[i + 1] / count
        return values

    def _end_epoch(self, model, optimizer, ckpt_state, record):
        self.history.append(record)
        watchdog.progress("checkpoint", ckpt_state["stage"], ckpt_state["epoch"])
        if self.world.is_root:
            # the record goes in before latest.json names the checkpoint: resume trims it
            self.store.save(model, optimizer, ckpt_state,
                            before_publish=lambda: self.metrics_log.append(record))
            self.requests.saved()
            if self.tensorboard:
                self.tensorboard.scalars(record)
            if self.mlperf:
                self.mlperf.epoch_end(record)
        shown = " ".join(f"{k} {v:.4g}" for k, v in record.items()
                         if isinstance(v, float) and k not in ("epoch_s", "elapsed_s"))
        self.log.info(f"{record['stage_name']} epoch {record['epoch'] + 1}: {shown}")
