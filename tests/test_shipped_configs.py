"""Every YAML shipped in an app's configs/ folder runs one epoch per stage on tiny synthetic data
in its own format, with only size-shrinking overrides (each app's `<app>.smoke.tiny_args`), so its
optimizer, schedule, early-stop and target settings run exactly as shipped. New configs and new
apps are picked up without editing this file."""
import importlib
import json
import math
import os

import pytest
import yaml

from conftest import REPO, read_metrics, run_ranks

CONFIGS = sorted(REPO.glob("*/configs/*.yaml"))
SHIPPED_TRAIN_KEYS = ("optimizer", "scaling", "early_stop", "target")
SHIPPED_LR_KEYS = ("rule", "warmup_epochs", "decay", "decay_epochs", "decay_factors")


ONEDNN_APPS = ("cosmoflow", "deepcam")  # common/cpu_kernels.py


def test_every_app_ships_configs():
    apps = {p.parent.name for p in REPO.glob("*/train.py")}
    assert apps and apps <= {p.parent.parent.name for p in CONFIGS}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: f"{p.parent.parent.name}-{p.stem}")
def test_shipped_config_runs_one_epoch_per_stage(path, tmp_path):
    app = path.parent.parent.name
    shipped = yaml.safe_load(path.read_text())
    args = importlib.import_module(f"{app}.smoke").tiny_args(shipped, str(tmp_path))
    result = run_ranks(1, [REPO / app / "train.py", "--config", path, *args], timeout=400)
    assert result.returncode == 0, result.stdout[-4000:]

    records = read_metrics(tmp_path / "out")
    n_stages = len(shipped.get("stages") or [None])
    assert [(r["stage"], r["epoch"]) for r in records] == [(i, 0) for i in range(n_stages)]
    assert all(math.isfinite(r["train_loss"]) and math.isfinite(r["val_loss"]) for r in records)
    assert (tmp_path / "out" / "checkpoints" / "latest.json").exists()
    if app in ONEDNN_APPS and "TF_ENABLE_ONEDNN_OPTS" not in os.environ:
        assert json.loads((tmp_path / "out" / "run.json").read_text())["onednn"] is True

    resolved = yaml.safe_load((tmp_path / "out" / "config.yaml").read_text())
    shipped_train = shipped.get("train", {})
    for key in SHIPPED_TRAIN_KEYS:
        if key in shipped_train:
            assert subset(resolved["train"][key], shipped_train[key]) == shipped_train[key], key
    for key in SHIPPED_LR_KEYS:
        if key in shipped_train.get("lr", {}):
            assert resolved["train"]["lr"][key] == shipped_train["lr"][key], key


def subset(resolved, shipped):
    """The resolved value restricted to the keys the shipped YAML sets."""
    return {k: resolved[k] for k in shipped} if isinstance(shipped, dict) else resolved
