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

from common import watchdog
from common.checkpoint import CheckpointStore, resume_point
from common.evaluation import evaluate, task_eval_step
from common.learner import LearnerBuilder, average_non_trainable
from common.logs import MetricsLog
from common.mlperf_log import MLPerfLog
from common.multires import (EarlyStopping, FinalStageProbe, describe_target, early_stop_value,
                             memory_equivalent_batches, plan_stages, reached)
from common.preemption import (Preempted, StopRequests, check_mid_epoch_world, epoch_losses,
                               signal_names)
from common.preflight import check_compilation, check_metric_names
from common.run_identity import check_stage
from common.stage_setup import batch_sizes, stage_setup
from common.steps import StepRunner, draws_random_numbers, make_train_step
from common.summary import write_summary
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
        self.learners = LearnerBuilder(self.stages, task, world, self.store, logger)
        self.setups = []    # each stage's StageSetup (batches, LR, data), made when fit() starts
        self.probe = None   # FinalStageProbe with log.final_val on a multi-stage run
        self.model = None   # the last stage's model once fit() returns
        self._t0 = None     # perf_counter() at the run's start, earlier runs' time taken off
        check_metric_names(self.stages, task.metrics, self._probing())
        check_compilation(self.stages)

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
        resume = resume_point(self.store, self.world, self.cfg["resume"], self.metrics_log,
                              self.log)
        check_stage(resume, self.stages, self.store.directory)
        if resume:  # wall-clock time counts across resumes
            self._t0 -= resume.get("elapsed_s", 0.0)
        self.setups = setups = [  # reads and checks all stages' data up front
            stage_setup(stage, self.task, self.world, self.cfg["seed"], self.log)
            for stage in self.stages]
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
        if self.world.is_root:  # time, epochs, best/final metrics, time to target: whole run
            write_summary(self.metrics_log.read(), self.stages[-1].train["target"],
                          self.task.maximize, os.path.join(self.out, "summary.json"), self.log)
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
        model = self.learners.model(stage)
        tf.train.Checkpoint(model=model).read(
            os.path.join(latest["path"], "ckpt")).expect_partial()
        data = self.task.make_test_data(stage, batch_sizes(stage, self.world.size)[0], self.world)
        results = evaluate(data, task_eval_step(model, self.task), self.task.metrics, self.world)
        results = {k.replace("val_", "test_", 1): v for k, v in results.items()}
        self.log.info(f"test split, checkpoint {latest['name']} ({data.num_samples} samples): "
                      + " ".join(f"{k} {v:.4g}" for k, v in results.items()))
        if self.world.is_root:
            with open(os.path.join(self.out, "test.json"), "w") as f:
                json.dump({"checkpoint": latest["name"], **results}, f, indent=1)
            if self.task.on_validation is not None:
                self.task.on_validation(model, stage, "test", self.out)
        return results

    def _probing(self):
        return self.cfg["log"]["final_val"] and len(self.stages) > 1

    def _final_stage_probe(self, last_setup):
        """With log.final_val, earlier stages are also scored on the last stage's validation
        data, so every epoch of a multi-resolution run has a full-resolution metric."""
        if not self._probing():
            return None
        last = self.stages[-1]

        def build():
            model = self.learners.model(last)
            step = task_eval_step(model, self.task)
            return model, lambda: evaluate(last_setup.val_data, step, self.task.metrics,
                                           self.world)
        return FinalStageProbe(build, self.log)

    def _build(self, stage, previous, state):
        """The stage's learner (common.learner); tests/mpi_driver.py wraps this method to save
        every stage's starting weights."""
        return self.learners.build(stage, self.setups, previous, state)

    def _run_stage(self, stage, setup, previous, state):
        """Train `stage` from `state` (a checkpoint's, on a resume) or from its start; returns
        (its learner, whether the run is done: target reached)."""
        watchdog.progress("building", stage.index)
        inside = state if state is not None and state.get("step") is not None else None
        if inside:
            check_mid_epoch_world(inside, self.world, setup.local_batch, setup.accumulate)
        learner = self._build(stage, previous, state)
        es_cfg = stage.train["early_stop"]
        early = EarlyStopping(es_cfg["patience"], es_cfg["min_delta"], es_cfg["mode"])
        if state is not None:
            early.load(state["early_stop"])
            if not inside and (state["stopped_early"] or state["epoch"] + 1 >= stage.epochs):
                return learner, False  # a resume with more epochs continues the stage
        # Keras' random layers keep their RNG state outside the checkpoint: with any of them, each
        # epoch restarts from a seed of (run, stage, epoch) in a fresh trace, so an epoch replays
        # identically after a resume. Other models trace once per learner.
        # (An epoch resumed inside draws other random numbers from its resume step on.)
        fresh_trace_per_epoch = draws_random_numbers(learner.model)
        first_epoch = state["epoch"] + (not inside) if state else 0
        batches = None  # one training pipeline for the stage's epochs (ShardedDataset.epochs)
        for epoch in range(first_epoch, stage.epochs):
            start = inside if epoch == first_epoch else None
            if fresh_trace_per_epoch or learner.runner is None:
                learner.runner = self._runner(stage, setup, learner, epoch, start)
            if batches is None:
                batches = learner.runner.batches(setup.train_data.epochs(
                    epoch, stage.epochs, start["step"] if start else 0))
            record = self._epoch(stage, setup, epoch, learner, early, start, batches)
            run_done, stage_done = self._after_epoch(stage, setup, epoch, learner, early, record)
            if run_done:
                return learner, True
            if stage_done:
                break
        return learner, False

    def _runner(self, stage, setup, learner, epoch, start):
        """A new trace of the training step, its random numbers seeded by (run, stage, epoch,
        and the step of a resume inside the epoch)."""
        tf.random.set_seed(int(np.random.default_rng(
            [self.cfg["seed"], stage.index, epoch] + ([start["step"]] if start else [])
        ).integers(2**31)))
        step = make_train_step(learner.model, learner.optimizer, self.task.loss, self.world,
                               stage.train["jit_compile"], self.requests.variable,
                               accumulate_steps=setup.accumulate)
        return StepRunner(step, stage.train["steps_per_call"], learner.train_spec)

    def _after_epoch(self, stage, setup, epoch, learner, early, record):
        """Checkpoint the epoch and decide what follows it: returns (the run is done: target
        reached, the stage is done: early stop or target). A signal stops every rank here."""
        target, es_cfg = stage.train["target"], stage.train["early_stop"]
        target_hit = reached(record.get(target["metric"]), target["value"], target["mode"])
        stop = early.update(early_stop_value(record, es_cfg["metric"])) or target_hit
        ckpt_state = {"stage": stage.index, "epoch": epoch, "stopped_early": stop,
                      "run_done": target_hit, "early_stop": early.state(),
                      "world": setup.world_state(self.world.size),
                      "elapsed_s": record["elapsed_s"]}
        if target_hit:
            ckpt_state["done_reason"] = describe_target(target, record[target["metric"]])
        self._end_epoch(learner.model, learner.optimizer, ckpt_state, record)
        if target_hit:
            self.log.info(f"{ckpt_state['done_reason']}; stopping the run")
            return True, True
        if not (stage.index == len(self.stages) - 1 and (stop or epoch + 1 == stage.epochs)):
            self._stop_if_signalled(stage, epoch)  # the run goes on: unless a signal came
        if stop:
            self.log.info(f"stage '{stage.name}': no {es_cfg['metric']} improvement for "
                          f"{es_cfg['patience']} epochs; ending the stage")
        return False, stop

    def _epoch(self, stage, setup, epoch, learner, early, start, batches):
        """Train one epoch on the next batches of the stage's iterator `batches` (from `start`,
        a mid-epoch checkpoint's state, if given), then validate; returns the epoch's record."""
        model, optimizer = learner.model, learner.optimizer
        if self.mlperf:
            self.mlperf.epoch_start(stage.index, epoch)
        record = self._train_epoch(stage, setup, epoch, learner, early, start, batches)
        average_non_trainable(model, self.world)
        watchdog.progress("validation", stage.index, epoch)
        record.update(evaluate(setup.val_data, learner.eval_step, self.task.metrics, self.world))
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
                 "run_done": False, "early_stop": early_state,
                 "world": setup.world_state(self.world.size),
                 "elapsed_s": time.perf_counter() - self._t0,
                 "train_loss_sum": loss_total[0], "train_loss_count": loss_total[1]}
        model = learner.model
        own = [var.numpy() for var in model.non_trainable_variables]
        # saved as an epoch end would save it; the averaging is linear in the updates
        average_non_trainable(model, self.world)
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
