"""Runs an app's training exactly as <app>/train.py does, and also saves each rank's weights when
every stage starts (after the weight hand-over and broadcast) and when training ends, and how
many times the training steps were traced and whether TensorFlow's deterministic kernels were on
(traces-rank<r>.json).

    python tests/mpi_driver.py APP DUMP_DIR --config FILE [train.py options]
"""
import json
import sys

from common import apps

app = apps.load(sys.argv[1])  # first: the app picks TensorFlow's CPU kernels

import numpy as np  # noqa: E402
from tensorflow.python.framework import config as tf_config  # noqa: E402

from common import trainer as trainer_module  # noqa: E402
from common.launch import run  # noqa: E402
from common.trainer import Trainer  # noqa: E402

dump_dir, argv = sys.argv[2], sys.argv[3:]
build, fit = Trainer._build, Trainer.fit
make_train_step, train_steps = trainer_module.make_train_step, []


def make_and_count(*args, **kwargs):
    train_steps.append(make_train_step(*args, **kwargs))
    return train_steps[-1]


def build_and_dump(self, stage, *args):
    learner = build(self, stage, *args)
    np.savez(f"{dump_dir}/start-stage{stage.index}-rank{self.world.rank}.npz",
             *learner.model.get_weights())
    return learner


def fit_and_dump(self):
    history = fit(self)
    np.savez(f"{dump_dir}/end-rank{self.world.rank}.npz", *self.model.get_weights())
    with open(f"{dump_dir}/traces-rank{self.world.rank}.json", "w") as f:
        json.dump({"train_steps": len(train_steps), "traces": sum(
            step.experimental_get_tracing_count() for step in train_steps),
            "op_determinism": tf_config.is_op_determinism_enabled()}, f)
    return history


Trainer._build, Trainer.fit = build_and_dump, fit_and_dump
trainer_module.make_train_step = make_and_count
run(app.defaults, app.make_task, app.title, argv)
