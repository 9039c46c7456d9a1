import json
import os

import numpy as np
import pytest
import tensorflow as tf

from common.checkpoint import CheckpointError, CheckpointStore


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
    monkeypatch.setattr(os, "replace", crash)  # dies after writing, before the rename
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
    with pytest.raises(CheckpointError, match="stage0-epoch0007 is missing"):
        CheckpointStore(str(tmp_path)).latest()


def test_numpy_values_in_every_field_are_stored_as_plain_python(tmp_path):
    store = CheckpointStore(str(tmp_path))
    model, opt = tiny_model()
    state = {"stage": np.int64(1), "epoch": np.int32(4), "stopped_early": np.bool_(True),
             "run_done": np.bool_(False), "world": {"size": np.int64(2), "lr": np.float32(0.5)},
             "early_stop": {"best": np.float64(0.25), "bad_epochs": np.int64(3)},
             "history": np.array([1.5, 2.0]), "pair": (np.float32(1.0), np.bool_(True))}
    store.save(model, opt, state)
    with open(tmp_path / "stage1-epoch0004" / "state.json") as f:
        written = json.load(f)
    latest = store.latest()
    for stored in (written, latest):
        assert stored["stage"] == 1 and type(stored["stage"]) is int
        assert stored["stopped_early"] is True and stored["run_done"] is False
        assert stored["world"] == {"size": 2, "lr": 0.5}
        assert stored["early_stop"] == {"best": 0.25, "bad_epochs": 3}
        assert stored["history"] == [1.5, 2.0] and stored["pair"] == [1.0, True]


def test_a_state_that_cannot_be_stored_leaves_the_previous_checkpoint(tmp_path):
    store = CheckpointStore(str(tmp_path))
    model, opt = tiny_model()
    store.save(model, opt, {"stage": 0, "epoch": 0})
    with pytest.raises(TypeError):
        store.save(model, opt, {"stage": 0, "epoch": 1, "bad": object()})
    assert store.latest()["epoch"] == 0
    assert sorted(os.listdir(tmp_path)) == ["latest.json", "stage0-epoch0000"]
