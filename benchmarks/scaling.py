"""Scaling on this machine: training throughput at 1 and 2 ranks and the time of one gradient
allreduce, for any app (python scripts/benchmark.py --app APP --scaling [options]).

The parent launches `mpiexec -n 1` and `mpiexec -n 2` runs of this module (the child), each rank
with one thread so that two ranks never share a core, alternating the two in `--rounds` so that
a noisy neighbour slows both alike. Each child trains on an in-memory batch per rank (different
data on each rank): the input pipeline has its own benchmark, and here it would compete with the
step for the rank's one core. Weak scaling keeps the local batch; strong scaling keeps the
global batch (1 rank at G, 2 ranks at G/2 each).
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Callable

from benchmarks.bench import print_rates, spread
from common import apps

RUN_AS_ROOT = {"OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
               "OMPI_MCA_rmaps_base_oversubscribe": "1"}


@dataclass
class ScalingApp:
    """What an app's benchmark.py hands the scaling mode and the scaling model (its SCALING,
    the App's `scaling` hook)."""
    defaults: dict
    make_task: Callable
    config: str                  # the full-size (MLPerf or seed) scenario
    random_batch: Callable       # (stage, local_batch, numpy Generator) -> (x, y, w) arrays
    modest: list = field(default_factory=list)  # KEY=VALUE: a size a CPU measures in minutes
    local_batch: int = 4         # measured local batch (the full-size one is the config's)
    # (fraction, source): the step's fraction that gradient averaging overlaps, measured
    # (benchmarks/overlap.py); None: the scaling model assumes the backward pass's FLOPs share
    overlap: tuple = None


def load_app(name):
    return apps.load(name).hook("scaling")


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="config overrides on top of the app's modest size")
    p.add_argument("--local-batch", type=int, help="weak scaling (default: the app's)")
    p.add_argument("--global-batch", type=int,
                   help="strong scaling, even (default: the local batch)")
    p.add_argument("--steps", type=int, default=200, help="timed steps per repeat")
    p.add_argument("--repeats", type=int, default=3, help="timed repeats per launch")
    p.add_argument("--rounds", type=int, default=2, help="alternating 1- and 2-rank launches")
    p.add_argument("--allreduce-repeats", type=int, default=20)
    p.add_argument("--threads", type=int, default=1, help="threads per rank")
    p.add_argument("--timeout", type=float, default=1800, help="seconds per launch")
    return p.parse_args(argv)


def main(app_name, argv=None):
    args = parse_args(argv)
    app = load_app(app_name)
    local = args.local_batch or app.local_batch
    global_ = args.global_batch or local
    if global_ % 2:
        raise SystemExit(f"--global-batch {global_} must be even (split over 2 ranks)")
    plans = {1: sorted({local, global_}), 2: sorted({local, global_ // 2})}
    results = {1: [], 2: []}
    with tempfile.TemporaryDirectory(prefix="scaling-") as work:
        for round_ in range(args.rounds):
            for ranks, batches in plans.items():
                out = os.path.join(work, f"{ranks}-{round_}.json")
                launch(app_name, ranks, batches, out, args, local)
                with open(out) as f:
                    results[ranks].append(json.load(f))
    return report(app_name, args, local, global_, merge(results))


def launch(app_name, ranks, batches, out, args, independent):
    """One mpiexec run of the child; its output goes to ours as it comes."""
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), TF_CPP_MIN_LOG_LEVEL="2")
    if os.geteuid() == 0:  # OpenMPI refuses root otherwise; 2 ranks may exceed the slots
        env.update(RUN_AS_ROOT)
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [repo, env.get("PYTHONPATH")]))
    child = [sys.executable, "-m", "benchmarks.scaling", app_name, out,
             "--batches", *map(str, batches), "--steps", str(args.steps),
             "--repeats", str(args.repeats), "--allreduce-repeats", str(args.allreduce_repeats),
             "--threads", str(args.threads)] + [f"--set={kv}" for kv in args.set]
    if ranks > 1:
        child += ["--independent", str(independent)]
    print(f"launching {ranks} rank(s), local batch(es) {batches}", flush=True)
    subprocess.run(["mpiexec", "-n", str(ranks), *child], cwd=repo, env=env, check=True,
                   timeout=args.timeout)


def merge(results):
    """ranks -> {"rates": name -> rates of every round, "allreduce": ..., "model": ...}."""
    merged = {}
    for ranks, runs in results.items():
        rates = {}
        for run in runs:
            for name, values in run["rates"].items():
                rates.setdefault(name, []).extend(values)
        allreduce = {}
        for run in runs:
            for name, entry in run["allreduce"].items():
                allreduce.setdefault(name, dict(entry, seconds=[]))["seconds"] += entry["seconds"]
        merged[ranks] = {"rates": rates, "allreduce": allreduce, "model": runs[0]["model"]}
    return merged


def rate_name(ranks, local_batch):
    return f"{ranks} rank{'s' if ranks > 1 else ''}, local batch {local_batch}"


def scaling_ratio(rates_a, rates_b, factor):
    """(median(a) / (factor * median(b)), per-repeat ratios): the figure follows the printed
    medians; the per-repeat ratios (repeats paired in launch order) give its spread."""
    pairs = [a / (factor * b) for a, b in zip(rates_a, rates_b)]
    return statistics.median(rates_a) / (factor * statistics.median(rates_b)), pairs


def report(app_name, args, local, global_, merged):
    one, two = merged[1]["rates"], merged[2]["rates"]
    alone = two[f"{local} independent"]
    rates = {rate_name(1, b): one[str(b)] for b in sorted({local, global_})}
    rates.update({rate_name(2, b): two[str(b)] for b in sorted({local, global_ // 2})})
    rates[f"{rate_name(2, local)}, no allreduce"] = alone
    print_rates(f"{app_name} scaling: {merged[2]['model']}, {args.threads} thread(s) per rank, "
                f"{args.steps} steps x {args.repeats} repeats x {args.rounds} rounds, "
                "global samples/s, median [min - max]:", rates)
    figures = {
        f"weak-scaling efficiency (local batch {local})": scaling_ratio(
            two[str(local)], one[str(local)], 2),
        # two ranks training side by side without a collective: what the cores allow
        "  of which the machine (no allreduce)": scaling_ratio(alone, one[str(local)], 2),
        "  of which allreduce and waits": scaling_ratio(two[str(local)], alone, 1),
        f"strong-scaling speed-up (global batch {global_})": scaling_ratio(
            two[str(global_ // 2)], one[str(global_)], 1)}
    for name, (value, pairs) in figures.items():
        _, low, high = spread(pairs)
        print(f"  {name:40s} {value:10.3f}    [{low:.3f} - {high:.3f}]")
    print("one allreduce of a gradient-sized buffer at 2 ranks (grouped, as a training step), "
          "median [min - max]:")
    for name, entry in merged[2]["allreduce"].items():
        mid, low, high = spread(entry["seconds"])
        # bus bandwidth (NCCL-tests): bytes * 2(p-1)/p / time, what each link carries
        bus = entry["bytes"] * 2 * (2 - 1) / 2 / mid / 1e9
        print(f"  allreduce, {name} ({entry['bytes'] / 1e6:.2f} MB) {mid * 1e3:10.3f} ms  "
              f"[{low * 1e3:.3f} - {high * 1e3:.3f}]  bus bandwidth {bus:.3f} GB/s")
    return {"rates": rates, "figures": {name.strip(): value for name, (value, _) in
                                        figures.items()}, "allreduce": merged[2]["allreduce"]}


# ----- the child: one rank of an mpiexec run -------------------------------------------------

def child(argv):
    p = argparse.ArgumentParser()
    p.add_argument("app")
    p.add_argument("out")
    p.add_argument("--batches", type=int, nargs="+")
    p.add_argument("--independent", type=int, help="also this local batch without allreduce")
    for name in ("steps", "repeats", "allreduce-repeats", "threads"):
        p.add_argument(f"--{name}", type=int)
    p.add_argument("--set", action="append", default=[])
    args = p.parse_args(argv)
    app = load_app(args.app)  # first: the app picks TensorFlow's CPU kernels

    import numpy as np
    import tensorflow as tf
    # Before any op runs: one rank, `threads` cores, so two ranks do not share one.
    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    from benchmarks.bench import load_config, measure, training
    from common.distributed import World, init_world

    cfg, stage = load_config(app.defaults, app.config, app.modest + args.set)
    world = init_world(cfg["horovod"])  # the gradient buckets as configured
    task = app.make_task(cfg)
    rng = np.random.default_rng(world.rank)  # each rank its own data, as sharded training
    fns = {}
    for batch in args.batches:
        arrays = [tf.constant(a) for a in app.random_batch(stage, batch, rng)]
        fns[str(batch)] = (training(task, stage, world, lambda arrays=arrays: arrays),
                           batch * world.size)
        if batch == args.independent:  # each rank alone, at the same time: the machine's share
            fns[f"{batch} independent"] = (
                training(task, stage, World(), lambda arrays=arrays: arrays), batch)
    rates = measure(fns, args.steps, args.repeats)
    for name in rates:
        if name.endswith("independent"):  # every rank's own rate, summed
            rates[name] = world.allreduce_sum(rates[name]).tolist()
    measured = task.build_model(stage)
    allreduce = {}
    if world.parallel:
        full_cfg, full_stage = load_config(app.defaults, app.config)
        full = app.make_task(full_cfg).build_model(full_stage)
        allreduce = {"measured network": time_allreduce(world, measured, args.allreduce_repeats),
                     "full-size network": time_allreduce(world, full, args.allreduce_repeats)}
    if world.is_root:
        shape = "x".join(map(str, arrays[0].shape[1:]))
        description = (f"{measured.name} with {measured.count_params():,} parameters, "
                       f"input {shape}")
        with open(args.out, "w") as f:
            json.dump({"rates": rates, "allreduce": allreduce, "model": description}, f)


def time_allreduce(world, model, repeats):
    """Seconds of one grouped allreduce of buffers shaped like the model's gradients (the
    World.average_gradients call of a training step), per repeat, after one untimed call."""
    import tensorflow as tf
    buffers = [tf.ones(v.shape, v.dtype) for v in model.trainable_variables]
    reduce = tf.function(lambda: world.average_gradients(buffers)[0])
    seconds = []
    for i in range(repeats + 1):
        world.allreduce_sum([0.0])  # start together: the time is the collective's, not a wait
        start = time.perf_counter()
        reduce()  # returns once every output is computed
        if i:
            seconds.append(time.perf_counter() - start)
    nbytes = sum(v.shape.num_elements() * v.dtype.size for v in model.trainable_variables)
    return {"bytes": nbytes, "seconds": seconds}


if __name__ == "__main__":
    child(sys.argv[1:])
