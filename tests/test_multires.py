import numpy as np
import pytest

from common.multires import EarlyStopping, FinalStageProbe, reached, transfer_weights
from cosmoflow.model import build_model

TINY = {"width_scale": 0.0625, "kernel_size": None, "dense": None, "dropout": None}


def seed7(head, size):
    return build_model({"name": "seed7", "head": head, **TINY}, (size, size, size, 4))


def test_flatten_head_reinitialises_first_dense_layer_and_says_why():
    coarse, full = seed7("flatten", 64), seed7("flatten", 128)
    before = full.get_layer("dense1").get_weights()[0].copy()
    report = transfer_weights(coarse, full)
    names = dict(report.reinitialised)
    assert list(names) == ["dense1"]
    assert names["dense1"] == "shape 16x128, 128 -> 128x128, 128"  # 1^3 vs 2^3 voxels x 16 filters
    assert np.array_equal(full.get_layer("dense1").get_weights()[0], before)
    for name in ["conv1", "bn1", "conv7", "bn7", "dense2", "output"]:
        assert name in report.carried
        for old, new in zip(coarse.get_layer(name).get_weights(),
                            full.get_layer(name).get_weights()):
            assert np.array_equal(old, new)
    assert "re-initialised dense1: shape" in "\n".join(report.lines())


def test_global_pool_head_carries_every_weight():
    coarse, full = seed7("global_pool", 64), seed7("global_pool", 128)
    report = transfer_weights(coarse, full)
    assert report.reinitialised == []
    assert len(report.carried) == sum(1 for layer in full.layers if layer.get_weights())
    x = np.random.default_rng(0).random((1, 128, 128, 128, 4)).astype(np.float32)
    assert full(x).shape == (1, 4)


def test_layers_missing_from_the_source_are_reported():
    mlperf = build_model({"name": "mlperf", "head": "flatten", **TINY}, (16, 16, 16, 4))
    report = transfer_weights(mlperf, seed7("flatten", 16))
    assert dict(report.reinitialised)["bn1"] == "not in the previous stage's model"


def test_early_stopping_patience_and_min_delta():
    stop = EarlyStopping(patience=2, min_delta=0.1)
    assert [stop.update(v) for v in [1.0, 0.95, 0.85, 0.8, 0.79]] == [
        False, False, False, False, True]
    assert stop.best == pytest.approx(0.85)
    restored = EarlyStopping(patience=2, min_delta=0.1)
    restored.load(EarlyStopping(2, 0.1).state() | {"best": 0.5, "bad_epochs": 1})
    assert restored.update(0.45) is True
    assert EarlyStopping(0, 0.0).update(5.0) is False  # patience 0 = off
    assert [EarlyStopping(1, 0.0, mode="max").update(v) for v in [1.0]] == [False]


def test_target_reached():
    assert reached(0.12, 0.124, "min") and not reached(0.13, 0.124, "min")
    assert reached(0.9, 0.8, "max") and not reached(float("nan"), 0.8, "max")
    assert not reached(0.1, None, "min")


class Log:
    def __init__(self):
        self.lines = []

    def info(self, line):
        self.lines.append(line)


def probe_for(head, size=16):
    """A FinalStageProbe whose 'validation' is the full-size model's output on a fixed input."""
    x = np.random.default_rng(1).random((2, size, size, size, 4)).astype(np.float32)

    def build():
        model = seed7(head, size)
        return model, lambda: {"val_out": float(np.mean(model(x, training=False)))}
    return FinalStageProbe(build, Log()), x


def test_final_stage_probe_scores_the_coarse_weights_at_full_size():
    probe, x = probe_for("global_pool")
    coarse = seed7("global_pool", 8)
    scored = probe.score(coarse, {"val_out": 9.0}, last_stage=False)
    full = seed7("global_pool", 16)
    transfer_weights(coarse, full)
    assert scored == {"final_val_out": pytest.approx(float(np.mean(full(x, training=False))))}
    assert probe.score(full, {"val_out": 0.5, "train_loss": 1.0}, last_stage=True) == {
        "final_val_out": 0.5}


def test_final_stage_probe_turns_off_when_a_layer_cannot_carry_over():
    probe, _ = probe_for("flatten", 128)  # seed7 shrinks 64x: 1^3 vs 2^3 voxels at dense1
    assert probe.score(seed7("flatten", 64), {"val_out": 1.0}, last_stage=False) == {}
    assert "dense1 cannot carry over" in probe.log.lines[0]
    assert probe.score(seed7("flatten", 128), {"val_out": 1.0}, last_stage=True) == {}
