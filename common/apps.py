"""The app contract and the registry every script, benchmark and test looks apps up in.

An app is one folder next to common/ (a Python package of the same name) whose train.py declares
`APP = App(...)`: what the Trainer needs (config sections, the task) and where the tools find the
rest. Adding an app: that folder, and its name in REGISTERED below. Its package provides, by the
hook paths of App (defaults shown, "module:attribute" within the package):

    train.py       APP, and `python <name>/train.py --config ...` (common.launch.run)
    data.py        make_datasets(data_cfg, local_batch, world=None, seed=0) -> (train,
                   validation) ShardedDatasets, which the Task's make_datasets wraps
    make_data.py   write_demo(folder): the data set of configs/demo.yaml (the epoch benchmark;
                   `python -m <name>.make_data --demo DIR` for scripts/demo.sh)
    smoke.py       tiny_args(shipped YAML dict, workdir) -> train.py arguments that run the
                   config in seconds on tiny data written there (tests/test_shipped_configs.py)
    benchmark.py   main(argv) (python scripts/benchmark.py --app NAME) and SCALING, a
                   benchmarks.scaling.ScalingApp (--scaling, --model-scaling, the bucket benchmark)
    configs/       YAML scenarios, each run by the test suite at tiny size

Hooks are imported only when a tool asks for them, so training never loads tooling. This module
imports nothing heavy: `load` imports the app's package first, whose __init__ may pick
TensorFlow's CPU kernels (common/cpu_kernels.py), so call it before anything imports TensorFlow.
"""
import importlib
import os
from dataclasses import dataclass
from typing import Callable

REGISTERED = ("cosmoflow", "deepcam", "edsr")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@dataclass(frozen=True)
class App:
    """What an app declares (its train.py's APP); hook fields name "module:attribute"."""
    name: str                 # package and folder name, as in `--app NAME`
    title: str                # in logs and --help: "CosmoFlow"
    defaults: dict            # config sections added to common.config.COMMON_DEFAULTS
    make_task: Callable       # (resolved config) -> common.trainer.Task
    single_stage_config: str  # one short stage (path from the repository root): epoch and
    #                           bucket benchmarks train it on the app's demo data
    full_size_config: str     # the full-size scenario (MLPerf or seed) the benchmarks measure
    onednn: bool = False      # its package __init__ asks for oneDNN's CPU kernels
    write_demo: str = "make_data:write_demo"
    tiny_args: str = "smoke:tiny_args"
    benchmark: str = "benchmark:main"
    scaling: str = "benchmark:SCALING"

    def hook(self, field):
        """The object a hook field names, its module imported now."""
        module, attribute = getattr(self, field).split(":")
        return getattr(importlib.import_module(f"{self.name}.{module}"), attribute)

    @property
    def train_script(self):
        return os.path.join(REPO, self.name, "train.py")


def load(name):
    """The registered app `name`: its package first (CPU kernels), then its train.py's APP."""
    if name not in REGISTERED:
        raise ValueError(f"unknown app {name!r}: registered apps are {', '.join(REGISTERED)} "
                         "(common/apps.py)")
    importlib.import_module(name)
    app = importlib.import_module(f"{name}.train").APP
    if app.name != name:
        raise ValueError(f"{name}/train.py declares APP named {app.name!r}")
    return app

