"""Throughput of one app config on this machine: training samples/s on in-memory synthetic
batches and on real files, input-pipeline-only samples/s, and Keras model.fit on the same network
and batch for comparison. Medians over repeats; ratios come from the same run.

    python scripts/benchmark.py --config cosmoflow/configs/mlperf.yaml --data-dir DIR \
        [--local-batch 4] [--steps 10] [--repeats 3]

Without --data-dir it writes synthetic files in the real format at the config's resolution.
"""
import argparse
import importlib
import statistics
import sys
import tempfile
import time
from pathlib import Path

import tensorflow as tf

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root
from common.config import COMMON_DEFAULTS, merge_defaults, resolve  # noqa: E402
from common.distributed import init_world  # noqa: E402
from common.optimizers import make_optimizer  # noqa: E402
from common.multires import plan_stages  # noqa: E402
from common.steps import make_train_step  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--app", default="cosmoflow")
    parser.add_argument("--config", default="cosmoflow/configs/mlperf.yaml")
    parser.add_argument("--data-dir", help="real files (default: synthetic files written here)")
    parser.add_argument("--local-batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=10, help="timed steps per repeat")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    return parser.parse_args(argv)


def measure(fns, steps, batch, repeats):
    """Samples/s of each `fn(steps)`, measured round-robin so that a noisy neighbour hits them
    alike; returns the per-repeat rates after one untimed warm-up call of each."""
    for fn in fns.values():
        fn(1)
    rates = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn(steps)
            rates[name].append(steps * batch / (time.perf_counter() - start))
    return rates


def ratio(rates, a, b):
    """Median over repeats of the ratio of two rates measured side by side."""
    return statistics.median(x / y for x, y in zip(rates[a], rates[b]))


def endless(dataset):
    """Batches of epoch after epoch, as training sees them."""
    epoch = 0
    while True:
        yield from dataset.epoch(epoch)
        epoch += 1


def synthetic_files(app, stage, count, folder):
    if app != "cosmoflow":
        raise SystemExit(f"no synthetic writer for app {app!r}: pass --data-dir")
    writer = importlib.import_module("cosmoflow.make_data")
    print(f"writing {count} synthetic {stage.data['resolution']}^3 samples to {folder}")
    writer.write_tfrecord(folder, size=stage.data["resolution"], train=count, val=2, seed=0)
    return folder


def main(argv=None):
    args = parse_args(argv)
    train_mod = importlib.import_module(f"{args.app}.train")
    schema = merge_defaults(COMMON_DEFAULTS, train_mod.DEFAULTS)
    cfg = resolve(schema, args.config, args.set)
    world = init_world()
    stage = plan_stages(cfg)[-1]
    batch, steps, repeats = args.local_batch, args.steps, args.repeats
    if args.data_dir:
        stage.data["root"] = args.data_dir
    else:
        stage.data["root"] = synthetic_files(args.app, stage, 8 * batch, tempfile.mkdtemp())
    task = train_mod.make_task(cfg)
    train_data, _ = task.make_datasets(stage, batch, world, 0)

    pipeline_batches, file_batches = endless(train_data), endless(train_data)
    x, y, w = next(endless(train_data))
    model = task.build_model(stage)
    step = make_train_step(model, make_optimizer(stage.train, stage.train["lr"]["base"]),
                           task.loss, world)

    def pipeline(n):
        for _ in range(n):
            next(pipeline_batches)

    def train_memory(n):
        for _ in range(n):
            float(step(x, y, w))  # the Trainer also reads the loss back every step

    def train_files(n):
        for _ in range(n):
            float(step(*next(file_batches)))

    keras_model = task.build_model(stage)
    keras_model.compile(make_optimizer(stage.train, stage.train["lr"]["base"]),
                        loss=lambda yt, yp: task.loss(yt, yp))
    in_memory = tf.data.Dataset.from_tensors((x, y)).repeat()

    def keras_fit(n):
        keras_model.fit(in_memory, steps_per_epoch=n, epochs=1, verbose=0)

    shape = "x".join(map(str, x.shape[1:]))
    print(f"{args.app} {stage.model['name']} network, input {shape}, local batch {batch}, "
          f"{world.size} rank(s), {steps} steps x {repeats} repeats (medians):")
    rates = measure({"input pipeline only": pipeline, "train, in-memory batch": train_memory,
                     "train, real files": train_files, "keras model.fit, in-memory": keras_fit},
                    steps, batch, repeats)
    results = {name: statistics.median(values) for name, values in rates.items()}
    results["pipeline / training"] = ratio(rates, "input pipeline only", "train, real files")
    results["trainer / keras fit"] = ratio(rates, "train, in-memory batch",
                                           "keras model.fit, in-memory")
    for name, value in results.items():
        unit = "x" if "/" in name else "samples/s"
        print(f"  {name:28s} {value:10.2f} {unit}")
    return results


if __name__ == "__main__":
    main()
