"""Runs an app's training exactly as <app>/train.py does, and also saves each rank's weights when
every stage starts (after the weight hand-over and broadcast) and when training ends.

    python tests/mpi_driver.py APP DUMP_DIR --config FILE [train.py options]
"""
import importlib
import sys

import numpy as np

from common.launch import run
from common.trainer import Trainer

app = importlib.import_module(f"{sys.argv[1]}.train")
dump_dir, argv = sys.argv[2], sys.argv[3:]
build, fit = Trainer._build, Trainer.fit


def build_and_dump(self, stage, *args):
    model, optimizer = build(self, stage, *args)
    np.savez(f"{dump_dir}/start-stage{stage.index}-rank{self.world.rank}.npz",
             *model.get_weights())
    return model, optimizer


def fit_and_dump(self):
    history = fit(self)
    np.savez(f"{dump_dir}/end-rank{self.world.rank}.npz", *self.model.get_weights())
    return history


Trainer._build, Trainer.fit = build_and_dump, fit_and_dump
run(app.DEFAULTS, app.make_task, sys.argv[1], argv)
