"""The app contract (common/apps.py): every registered app declares its APP under its own name,
every hook resolves, its configs exist, the benchmarks' scaling entry uses the app's own config
sections and full-size scenario, and make_datasets has one signature in every app. Checked in a
fresh process: loading the apps picks TensorFlow's CPU kernels, which must not leak into this one.
"""
import json
import os
import subprocess
import sys

import pytest

from common import apps
from conftest import REPO

CHECK = """
import inspect, json
from common import apps
report = {}
for name in apps.REGISTERED:
    app = apps.load(name)
    hooks = {field: callable(app.hook(field)) for field in ("write_demo", "tiny_args", "benchmark")}
    scaling = app.hook("scaling")
    data = __import__(f"{name}.data", fromlist=["make_datasets"])
    report[name] = {
        "name": app.name, "hooks": hooks, "train_script": app.train_script,
        "configs": [app.single_stage_config, app.full_size_config],
        "scaling": [scaling.defaults is app.defaults, scaling.make_task is app.make_task,
                    scaling.config == app.full_size_config, callable(scaling.random_batch)],
        "make_datasets": str(inspect.signature(data.make_datasets))}
print("REPORT", json.dumps(report))
"""


def test_every_registered_app_fulfils_the_contract():
    env = dict(os.environ, PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="2")
    result = subprocess.run([sys.executable, "-c", CHECK], cwd=REPO, env=env, text=True,
                            capture_output=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.split("REPORT ")[-1])
    assert list(report) == list(apps.REGISTERED)
    for name, entry in report.items():
        assert entry["name"] == name
        assert entry["hooks"] == {"write_demo": True, "tiny_args": True, "benchmark": True}
        assert entry["train_script"] == str(REPO / name / "train.py")
        for config in entry["configs"]:
            assert config.startswith(f"{name}/configs/") and (REPO / config).is_file(), config
        assert entry["scaling"] == [True, True, True, True], name
    signatures = {entry["make_datasets"] for entry in report.values()}
    assert signatures == {"(data_cfg, local_batch, world=None, seed=0)"}


def test_an_unknown_app_is_refused_with_the_registered_names():
    with pytest.raises(ValueError, match="unknown app 'nope': registered apps are cosmoflow, "
                                         "deepcam, edsr"):
        apps.load("nope")
