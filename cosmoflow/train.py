"""Train CosmoFlow: regress 4 cosmological parameters from dark-matter density cubes.

    mpiexec -n N python cosmoflow/train.py --config cosmoflow/configs/demo.yaml [overrides]

This file only wires the pieces: config sections and the task (model, data, loss, metrics).
"""
import cosmoflow  # noqa: F401  first: its __init__ picks the CPU kernels before TensorFlow loads
import tensorflow as tf

from common.apps import App
from common.config import Choice, Range
from common.launch import run
from common.trainer import Task
from cosmoflow.data import make_datasets, sample_shape
from cosmoflow.model import build_model

DEFAULTS = {
    "output_dir": "runs/cosmoflow",
    "data": {
        "format": Choice("tfrecord", "hdf5", "raw"),
        "root": "data/cosmoflow",
        "resolution": Range(128, low=1),  # cube edge the model sees
        "compression": Choice("auto", "none", "gzip"),   # tfrecord only
        "split_file": "split.yaml",     # hdf5 only: train/validation/test file indices
        "prefix": "cosmo",              # hdf5 only: <prefix>-rec<idx>.h5
        "log_transform": True,          # x -> log(x + 1), as the MLPerf reference
        # x is multiplied by this first: 0.125 turns 2x2x2 sums of counts (python -m
        # cosmoflow.coarsen) back into counts per full-resolution voxel, so coarse and full
        # cubes reach the network on the same intensity scale.
        "count_scale": Range(1.0, low=0.0, open_low=True),
        "max_train": Range(None, low=1, kind=int),  # use only the first N samples
        "max_val": Range(None, low=1, kind=int),
    },
    "model": {
        "name": Choice("mlperf", "seed7"),
        "head": Choice("flatten", "global_pool"),   # global_pool: every weight carries over
        "width_scale": Range(1.0, low=0.0, open_low=True),  # thin variants for smoke tests
        "kernel_size": Range(None, low=1, kind=int),  # null: the network's own
        "dense": Range(None, low=1, kind=list),
        "dropout": Range(None, low=0.0, high=1.0, kind=float),  # a probability
        "l2": Range(None, low=0.0, kind=float),  # weight of an L2 penalty on hidden dense kernels
    },
}


def mse(y, pred):
    return tf.reduce_mean(tf.square(y - pred), axis=-1)


def mae(y, pred):
    return tf.reduce_mean(tf.abs(y - pred), axis=-1)


# The four targets in unitPar order: val_mae_<name> says which of them a model has learnt.
TARGETS = ("omega_m", "sigma_8", "n_s", "h0")


def target_mae(index):
    return lambda y, pred: tf.abs(y[:, index] - pred[:, index])


def make_task(cfg):
    return Task(
        build_model=lambda stage: build_model(stage.model, sample_shape(stage.data)),
        make_datasets=lambda stage, local_batch, world, seed: make_datasets(
            stage.data, local_batch, world, seed),
        loss=mse,
        metrics={"mae": mae, **{f"mae_{name}": target_mae(i) for i, name in enumerate(TARGETS)}},
        sample_pixels=lambda stage: sample_shape(stage.data)[0] ** 3,
    )


APP = App("cosmoflow", "CosmoFlow", DEFAULTS, make_task, onednn=True,
          single_stage_config="cosmoflow/configs/demo_full_only.yaml",
          full_size_config="cosmoflow/configs/mlperf.yaml")

if __name__ == "__main__":
    run(APP.defaults, APP.make_task, APP.title)
