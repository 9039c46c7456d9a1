"""Train EDSR to remove JPEG compression artifacts from climate images (same-size restoration).

    mpiexec -n N python edsr/train.py --config edsr/configs/demo.yaml [overrides]
    mpiexec -n N python edsr/train.py --dataset DIR --batchsize 32 ...   (the seed's flags)

This file only wires the pieces: config sections and the task (model, data, loss, metrics).
"""
import os
import sys

from common.apps import App
from common.config import Choice, Range
from common.launch import run
from common.trainer import Task
from edsr import data
from edsr.metrics import make_metrics
from edsr.model import build_model
from edsr.preview import write_strip
from edsr.seed_flags import translate

DEFAULTS = {
    "output_dir": "runs/edsr",
    "data": {
        "root": "data/edsr",
        "num_rows": Range(312, low=1),      # image height
        "num_cols": Range(640, low=1),      # image width
        "depth": Choice(1, 3),              # channels: 1 grayscale, 3 RGB
        "crop": Range(32, low=1),           # training crop edge; stages may change it
        "crops_per_image": Range(16, low=1),  # random crops drawn per image and epoch
        "eval_batch": Range(4, low=1),      # full images per rank and validation step
        "max_train": Range(None, low=1, kind=int),  # use only the first N images
        "max_val": Range(None, low=1, kind=int),
        "preview_images": Range(3, low=0),  # validation images in each PNG strip (0: none)
    },
    "model": {
        "layers": Range(16, low=0),         # residual blocks
        "filters": Range(256, low=1),
        "res_scale": Range(0.1, low=0.0),
    },
}


def make_task(cfg):
    loss, metrics = make_metrics(cfg["data"]["depth"])
    return Task(
        build_model=lambda stage: build_model(stage.model, stage.data["depth"]),
        make_datasets=lambda stage, local_batch, world, seed: data.make_datasets(
            stage.data, local_batch, world, seed),
        loss=loss, metrics=metrics, maximize=("psnr", "psnr_jpeg", "psnr_gain", "ssim"),
        on_validation=preview(cfg),
        make_test_data=lambda stage, local_batch, world: data.full_images(
            stage.data, "test", world),
        sample_pixels=lambda stage: stage.data["crop"] ** 2)


def preview(cfg):
    """Rank 0's PNG strip of the first validation (or test) images, read once."""
    images = {}

    def write(model, stage, epoch, out):
        count = cfg["data"]["preview_images"]
        split = "test" if epoch == "test" else "val"
        if not count:
            return
        if split not in images:
            ids = data.split_ids(stage.data["root"], split)[:count]
            images[split] = data.load_pairs(stage.data, split, ids)
        name = "test.png" if epoch == "test" else f"{stage.name}-epoch{epoch + 1:04d}.png"
        path = os.path.join(out, "images", name)
        write_strip(model, *images[split], path)
        return path
    return write


APP = App("edsr", "EDSR", DEFAULTS, make_task,
          single_stage_config="edsr/configs/single_stage.yaml",
          full_size_config="edsr/configs/seed.yaml")

if __name__ == "__main__":
    run(APP.defaults, APP.make_task, APP.title, translate(sys.argv[1:], APP.title))
