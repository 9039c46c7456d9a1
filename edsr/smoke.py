"""Tiny synthetic data and size-shrinking overrides that run a shipped EDSR config in seconds
(the test suite runs every YAML in edsr/configs/ through `tiny_args`)."""
import os

from edsr.make_data import write_dataset

ROWS, COLS = 24, 40


def tiny_args(cfg, workdir):
    """Write tiny image pairs under `workdir`; return train.py arguments (output: workdir/out)."""
    root = os.path.join(workdir, "data")
    depth = cfg.get("data", {}).get("depth", 1)
    write_dataset(root, ROWS, COLS, train=4, val=2, test=2, depth=depth, seed=1)
    args = ["--data-dir", root, "--output-dir", os.path.join(workdir, "out"), "--epochs", "1",
            "--set", f"data.num_rows={ROWS}", "--set", f"data.num_cols={COLS}",
            "--set", "data.crops_per_image=2", "--set", "model.layers=1",
            "--set", "model.filters=4", "--set", "log.progress=false"]
    train = cfg.get("train", {})
    if train.get("scaling") == "strong":
        args += ["--set", "train.global_batch=2"]
    else:
        args += ["--local-batch", "2"]
    stages = cfg.get("stages") or []
    crops = [s.get("data", {}).get("crop") for s in stages] or [cfg.get("data", {}).get("crop")]
    largest = max(c or 32 for c in crops)
    for i, crop in enumerate(crops):  # keep each stage's crop in proportion, within the images
        key = f"stages.{i}.data.crop" if stages else "data.crop"
        args += ["--set", f"{key}={max(4, 16 * (crop or 32) // largest)}"]
    return args
