"""Tiny synthetic data and size-shrinking overrides that run a shipped DeepCAM config in seconds
(the test suite runs every YAML in deepcam/configs/ through `tiny_args`)."""
import os
import shutil

from deepcam.coarsen import coarsen_dataset
from deepcam.make_data import write_dataset

ROWS, COLS = 32, 48


def tiny_args(cfg, workdir):
    """Write tiny samples under `workdir` for every stage; return train.py arguments."""
    root = os.path.join(workdir, "data")
    stages = cfg.get("stages") or [{}]
    shapes = [s.get("data", {}).get("shape") or cfg.get("data", {}).get("shape") or [768, 1152]
              for s in stages]
    largest = max(shape[0] for shape in shapes)
    args = ["--data-dir", root, "--output-dir", os.path.join(workdir, "out"), "--epochs", "1",
            "--local-batch", "2", "--set", "model.width=0.0625", "--set", "model.middle_blocks=1",
            "--set", "model.aspp_rates=[1,2,3]", "--set", "data.preview_samples=1",
            "--set", "log.progress=false"]
    full = os.path.join(workdir, "full")
    write_dataset(full, ROWS, COLS, train=4, val=2, seed=1)
    for i, (stage, shape) in enumerate(zip(stages, shapes)):
        sub = stage.get("data", {}).get("root", "")
        target = os.path.join(root, sub)
        if shape[0] == largest:
            shutil.copytree(full, target, dirs_exist_ok=True)
            tiny = [ROWS, COLS]
        else:  # a coarse stage: 2x averaged fields, labels kept at full resolution
            coarsen_dataset(full, target, labels="full")
            tiny = [ROWS // 2, COLS // 2]
        key = f"stages.{i}.data.shape" if cfg.get("stages") else "data.shape"
        args += ["--set", f"{key}=[{tiny[0]},{tiny[1]}]"]
    return args

