import json
import os

import numpy as np
import pytest
import tensorflow as tf

from common.checkpoint import CheckpointStore


def tiny_model():
    model = tf.keras.Sequential([tf.keras.Input((3,)), tf.keras.layers.Dense(2, name="d")])
    opt = tf.keras.optimizers.SGD(0.1, momentum=0.9)
    opt.build(model.trainable_variables)
    return model, opt


def train_once(model, opt):
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(model(tf.ones((4, 3))) ** 2)
    opt.apply_gradients(zip(tape.gradient(loss, model.trainable_variables),
                            model.trainable_variables))


def test_save_restore_round_trip_with_optimizer_state(tmp_path):
    store = CheckpointStore(str(tmp_path), keep=2)
    model, opt = tiny_model()
    train_once(model, opt)
    state = {"stage": 1, "epoch": 3, "stopped_early": False, "early_stop": {"best": 0.5}}
    store.save(model, opt, state)
    latest = store.latest()
    assert {k: latest[k] for k in state} == state
    fresh, fresh_opt = tiny_model()
    store.restore(fresh, fresh_opt, latest)
    assert int(fresh_opt.iterations) == 1
    for a, b in zip(model.variables + opt.variables, fresh.variables + fresh_opt.variables):
        assert np.array_equal(a.numpy(), b.numpy())


def test_keeps_only_the_newest_and_survives_a_crash_mid_write(tmp_path, monkeypatch):
    store = CheckpointStore(str(tmp_path), keep=2)
    model, opt = tiny_model()
    for epoch in range(3):
        store.save(model, opt, {"stage": 0, "epoch": epoch})
    assert sorted(n for n in os.listdir(tmp_path) if n.startswith("stage")) == [
        "stage0-epoch0001", "stage0-epoch0002"]

    def crash(*args, **kwargs):
        raise OSError("disk full")
    train_once(model, opt)
    monkeypatch.setattr(json, "dump", crash)
    with pytest.raises(OSError):
        store.save(model, opt, {"stage": 0, "epoch": 3})
    monkeypatch.undo()
    latest = store.latest()
    assert latest["epoch"] == 2  # the pointer still names the last complete checkpoint
    restored, restored_opt = tiny_model()
    store.restore(restored, restored_opt, latest)
    assert int(restored_opt.iterations) == 0


def test_no_checkpoint_and_dangling_pointer(tmp_path):
    store = CheckpointStore(str(tmp_path / "none"))
    assert store.latest() is None
    (tmp_path / "latest.json").write_text(json.dumps({"name": "stage0-epoch0007", "stage": 0,
                                                      "epoch": 7}))
    with pytest.raises(FileNotFoundError, match="stage0-epoch0007"):
        CheckpointStore(str(tmp_path)).latest()
