"""Train DeepCAM: DeepLabv3+ segmentation of tropical cyclones and atmospheric rivers.

    mpiexec -n N python deepcam/train.py --config deepcam/configs/demo.yaml [overrides]

This file only wires the pieces: config sections and the task (model, data, loss, metrics).
"""
import os

import deepcam  # noqa: F401  first: its __init__ picks the CPU kernels before TensorFlow loads
from common.apps import App
from common.config import Choice, Range
from common.launch import run
from common.trainer import Task
from deepcam import data
from deepcam.metrics import iou, make_loss
from deepcam.model import build_model
from deepcam.preview import write_masks

DEFAULTS = {
    "output_dir": "runs/deepcam",
    "data": {
        "format": Choice("hdf5", "raw"),    # raw: the fast path (python -m deepcam.convert)
        "root": "data/deepcam",
        "shape": Range([768, 1152], low=1),  # height, width of the data the model sees
        "num_channels": Range(16, low=1),   # channels in the files
        "channels": Range(None, low=0, kind=list),  # indices to keep; null: all
        "max_train": Range(None, low=1, kind=int),  # use only the first N files
        "max_val": Range(None, low=1, kind=int),
        "preview_samples": Range(3, low=0),  # validation samples in each PNG (0: none)
    },
    "model": {
        "width": Range(1.0, low=0.0, open_low=True),  # scales every filter count
        "middle_blocks": Range(16, low=0),  # Xception middle-flow depth
        "aspp_rates": Range([6, 12, 18], low=1, increasing=True),
        "class_power": Range(0.125, low=0.0),  # loss weight of a class: frequency ** -power
    },
}


def make_task(cfg):
    channels = lambda stage: len(data.channel_indices(stage.data))  # noqa: E731
    return Task(
        build_model=lambda stage: build_model(stage.model, channels(stage)),
        make_datasets=lambda stage, local_batch, world, seed: data.make_datasets(
            stage.data, local_batch, world, seed),
        loss=make_loss(cfg["model"]["class_power"]), metrics={"iou": iou}, maximize=("iou",),
        on_validation=preview(cfg),
        sample_pixels=lambda stage: stage.data["shape"][0] * stage.data["shape"][1])


def preview(cfg):
    """Rank 0's PNG of the first validation samples, read once per stage."""
    samples = {}

    def write(model, stage, epoch, out):
        count = cfg["data"]["preview_samples"]
        if not count:
            return
        if stage.index not in samples:
            val = data.split_dataset(stage.data, "validation", count, limit=count)
            x, y, _ = next(iter(val.epoch(0)))
            samples[stage.index] = (x.numpy(), y.numpy())
        path = os.path.join(out, "images", f"{stage.name}-epoch{epoch + 1:04d}.png")
        write_masks(model, *samples[stage.index], path)
        return path
    return write


APP = App("deepcam", "DeepCAM", DEFAULTS, make_task, onednn=True,
          single_stage_config="deepcam/configs/full_only.yaml",
          full_size_config="deepcam/configs/mlperf.yaml")

if __name__ == "__main__":
    run(APP.defaults, APP.make_task, APP.title)
