"""Every YAML shipped in a registered app's configs/ folder runs one epoch per stage on tiny
synthetic data in its own format, with only size-shrinking overrides (each app's tiny_args hook,
common/apps.py), so its optimizer, schedule, early-stop and target settings run exactly as
shipped. New configs and new apps are picked up without editing this file."""
import json
import math
import os

import pytest
import yaml

from common import apps
from conftest import REPO, read_metrics, run_ranks

CONFIGS = [path for name in apps.REGISTERED for path in sorted(REPO.glob(f"{name}/configs/*.yaml"))]
SHIPPED_TRAIN_KEYS = ("optimizer", "scaling", "early_stop", "target")
SHIPPED_LR_KEYS = ("rule", "warmup_epochs", "decay", "decay_epochs", "decay_factors")


def test_every_app_is_registered_and_ships_configs():
    assert {p.parent.name for p in REPO.glob("*/train.py")} == set(apps.REGISTERED)
    assert set(apps.REGISTERED) == {p.parent.parent.name for p in CONFIGS}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: f"{p.parent.parent.name}-{p.stem}")
def test_shipped_config_runs_one_epoch_per_stage(path, tmp_path):
    user_kernels = "TF_ENABLE_ONEDNN_OPTS" in os.environ
    app = apps.load(path.parent.parent.name)
    if not user_kernels:  # the app's request in this process: the run below makes its own
        os.environ.pop("TF_ENABLE_ONEDNN_OPTS", None)
    shipped = yaml.safe_load(path.read_text())
    args = app.hook("tiny_args")(shipped, str(tmp_path))
    result = run_ranks(1, [app.train_script, "--config", path, *args], timeout=400)
    assert result.returncode == 0, result.stdout[-4000:]

    records = read_metrics(tmp_path / "out")
    n_stages = len(shipped.get("stages") or [None])
    assert [(r["stage"], r["epoch"]) for r in records] == [(i, 0) for i in range(n_stages)]
    assert all(math.isfinite(r["train_loss"]) and math.isfinite(r["val_loss"]) for r in records)
    assert (tmp_path / "out" / "checkpoints" / "latest.json").exists()
    if not user_kernels and app.onednn:
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
