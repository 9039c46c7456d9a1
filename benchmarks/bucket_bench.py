"""Gradient averaging variants timed on the app's demo-size training step, on every rank of an
mpiexec run (one thread per rank, or two inter-op threads with TF_NUM_INTEROP_THREADS=2; each
rank its own in-memory batch):

    mpiexec -n 2 python -m benchmarks.bucket_bench APP [--bucket-mb 0.25 1] [--steps 20]
        [--repeats 5] [--config YAML] [--set KEY=VALUE]

- one group: every gradient in one grouped allreduce after the backward pass, the loss in it
  (horovod.bucket_mb 0);
- buckets N MB: grouped allreduces of about N MB, last layers first, the loss in the first;
- one group, loss apart: the step as it was before the loss rode with the gradients (a second
  allreduce for the loss);
- per-variable tape: Horovod's DistributedGradientTape (one allreduce per variable, fused by
  Horovod's cycle), the loss apart, as the MLPerf reference trains.

Variants alternate within every repeat, so a noisy neighbour slows them alike; rank 0 prints
each one's trace time and ms per step (median [min - max] over repeats). How far the buckets
overlap the backward pass: a training run's Horovod timeline, read by benchmarks/overlap.py.
"""
import argparse
import dataclasses
import os
import statistics
import sys
import time

from benchmarks.bench import load_config, measure, spread
from common import apps

# TensorFlow (and what imports it) loads in main, after the app: CosmoFlow and DeepCAM pick
# TensorFlow's CPU kernels when they load, so the step timed is the one their training runs.


def reference_step(model, optimizer, loss_fn, world, per_variable):
    """The step with the loss in an allreduce of its own; `per_variable`: gradients through
    Horovod's DistributedGradientTape, otherwise one group."""
    import tensorflow as tf

    from common.steps import weighted_mean
    hvd = world.hvd

    @tf.function(reduce_retracing=True)
    def step(x, y, w):
        with tf.GradientTape() as tape:
            loss = weighted_mean(loss_fn(y, tf.cast(model(x, training=True), tf.float32)), w)
        if per_variable:
            grads = hvd.DistributedGradientTape(tape).gradient(loss, model.trainable_variables)
        else:
            grads = world.average_gradients(tape.gradient(loss, model.trainable_variables))[0]
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return hvd.allreduce(loss, op=hvd.Average)

    return step


def variants(task, stage, world, bucket_mbs):
    """name -> a fresh model's training step (each its own model and optimizer)."""
    from common.optimizers import make_optimizer
    from common.steps import make_train_step

    def fresh():
        return task.build_model(stage), make_optimizer(stage.train, stage.train["lr"]["base"])

    steps = {}
    for name, mb in [("one group", 0.0)] + [(f"buckets {mb:g} MB", mb) for mb in bucket_mbs]:
        model, opt = fresh()
        steps[name] = make_train_step(model, opt, task.loss,
                                      dataclasses.replace(world, bucket_mb=mb))
    for name, per_variable in (("one group, loss apart", False), ("per-variable tape", True)):
        model, opt = fresh()
        steps[name] = reference_step(model, opt, task.loss, world, per_variable)
    return steps


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("app", choices=apps.REGISTERED)
    p.add_argument("--bucket-mb", type=float, nargs="+", default=[0.25, 1.0])
    p.add_argument("--steps", type=int, default=20, help="timed steps per repeat")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--config", help="default: the app's single-stage config")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = p.parse_args(argv)
    app_info = apps.load(args.app)  # first: the app picks TensorFlow's CPU kernels
    import numpy as np
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(1)
    if "TF_NUM_INTEROP_THREADS" not in os.environ:  # a second thread lets buckets overlap
        tf.config.threading.set_inter_op_parallelism_threads(1)
    from common.distributed import init_world

    app = app_info.hook("scaling")
    world = init_world()
    args.config = args.config or app_info.single_stage_config
    cfg, stage = load_config(app.defaults, args.config, args.set)
    task = app.make_task(cfg)
    batch = [tf.constant(a) for a in app.random_batch(
        stage, stage.train["local_batch"], np.random.default_rng(world.rank))]
    steps = variants(task, stage, world, args.bucket_mb)
    traced = {}
    for name, step in steps.items():
        start = time.perf_counter()
        float(step(*batch))
        traced[name] = time.perf_counter() - start
    fns = {name: (lambda n, step=step: [float(step(*batch)) for _ in range(n)], 1)
           for name, step in steps.items()}
    rates = measure(fns, args.steps, args.repeats)
    if world.is_root:
        model = task.build_model(stage)
        gradient_mb = sum(v.shape.num_elements() * 4 for v in model.trainable_variables) / 2**20
        report(args, stage, gradient_mb, traced, rates, world.size)


def report(args, stage, gradient_mb, traced, rates, ranks):
    threads = os.environ.get("TF_NUM_INTEROP_THREADS", "1")
    print(f"{args.app} step ({args.config} {' '.join(args.set)}, local batch "
          f"{stage.train['local_batch']}, gradient {gradient_mb:.2f} MB), {ranks} ranks x 1 "
          f"intra-op thread x {threads} inter-op, "
          f"{args.steps} steps x {args.repeats} repeats, ms per step median [min - max]:")
    base = rates["one group"]
    for name, values in rates.items():
        ms = [1e3 / r for r in values]
        mid, low, high = spread(ms)
        ratio = statistics.median(b / r for b, r in zip(base, values))  # time / one group's
        line = (f"  {name:24s} {mid:8.1f} ms [{low:.1f} - {high:.1f}]  time x{ratio:.3f} of "
                f"one group's  trace {traced[name]:.1f} s")
        print(line, flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
