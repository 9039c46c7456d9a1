"""CosmoFlow throughput on this machine: training samples/s on an in-memory batch and on real
files, the input pipeline alone, and Keras model.fit on the same network and batch.

    python scripts/benchmark.py --app cosmoflow [--config cosmoflow/configs/mlperf.yaml]
        [--data-dir DIR] [--local-batch 4] [--steps 10] [--repeats 3] [--set KEY=VALUE]

Without --data-dir it writes synthetic TFRecords at the config's last-stage resolution, GZIP
compressed when the config says so.
"""
import argparse
import tempfile

import numpy as np
import tensorflow as tf

from common.bench import endless, load_config, measure, print_rates, ratio, stepper, training
from common.distributed import init_world
from common.optimizers import make_optimizer
from common.scaling import ScalingApp
from cosmoflow import make_data
from cosmoflow.data import sample_shape
from cosmoflow.train import DEFAULTS, make_task


def random_batch(stage, local_batch, rng):
    """log(counts + 1) cubes and parameters in [-1, 1]: a step's cost does not depend on the
    values, only on their shapes."""
    counts = rng.poisson(3.0, (local_batch, *sample_shape(stage.data)))
    return (np.log1p(counts).astype(np.float32),
            rng.uniform(-1, 1, (local_batch, 4)).astype(np.float32),
            np.ones(local_batch, np.float32))


# The scaling mode measures the MLPerf network on 32^3 cubes (1.5M of its 5.6M parameters)
SCALING = ScalingApp(DEFAULTS, make_task, "cosmoflow/configs/mlperf.yaml", random_batch,
                     modest=["data.resolution=32"], local_batch=4)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="cosmoflow/configs/mlperf.yaml")
    parser.add_argument("--data-dir", help="real files (default: synthetic files written here)")
    parser.add_argument("--local-batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=10, help="timed steps per repeat")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="cosmoflow-bench-") as work:
        return benchmark(args, work)


def benchmark(args, work):
    cfg, stage = load_config(DEFAULTS, args.config, args.set)
    world = init_world()
    batch = args.local_batch
    if args.data_dir:
        stage.data["root"] = args.data_dir
    else:
        stage.data["root"] = work
        size = stage.data["resolution"]
        print(f"writing {8 * batch} synthetic {size}^3 samples to {stage.data['root']}")
        make_data.write_tfrecord(stage.data["root"], size=size, train=8 * batch, val=2, seed=0,
                                 gzip=stage.data["compression"] == "gzip")
    task = make_task(cfg)
    train_data, _ = task.make_datasets(stage, batch, world, 0)
    file_batches = endless(train_data)
    x, y, w = next(endless(train_data))

    keras_model = task.build_model(stage)
    keras_model.compile(make_optimizer(stage.train, stage.train["lr"]["base"]),
                        loss=lambda yt, yp: task.loss(yt, yp))
    in_memory = tf.data.Dataset.from_tensors((x, y)).repeat()

    def keras_fit(n):
        keras_model.fit(in_memory, steps_per_epoch=n, epochs=1, verbose=0)

    rates = measure({
        "input pipeline only": (stepper(endless(train_data)), batch),
        "train, in-memory batch": (training(task, stage, world, lambda: (x, y, w)), batch),
        "train, real files": (training(task, stage, world, lambda: next(file_batches)), batch),
        "keras model.fit, in-memory": (keras_fit, batch)}, args.steps, args.repeats)
    shape = "x".join(map(str, x.shape[1:]))
    print_rates(f"cosmoflow {stage.model['name']} network, input {shape}, local batch {batch}, "
                f"{world.size} rank(s), {args.steps} steps x {args.repeats} repeats, "
                "median [min - max]:", rates)
    ratios = {"pipeline / training from files": ratio(rates, "input pipeline only",
                                                      "train, real files"),
              "trainer / keras fit": ratio(rates, "train, in-memory batch",
                                           "keras model.fit, in-memory")}
    for name, value in ratios.items():
        print(f"  {name:40s} {value:10.2f} x")
    return rates, ratios


if __name__ == "__main__":
    main()
