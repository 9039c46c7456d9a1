import math

import numpy as np
import pytest

from common.lr import WarmupDecay, batch_sizes, scaled_lr


def test_weak_scaling_grows_global_batch_and_scales_lr():
    assert batch_sizes("weak", 8, None, 16) == (8, 128)
    local, global_ = batch_sizes("weak", 8, None, 16)
    assert scaled_lr(0.001, 8, global_, "linear") == pytest.approx(0.016)
    assert scaled_lr(0.001, 8, global_, "sqrt") == pytest.approx(0.004)
    assert scaled_lr(0.001, 8, global_, "none") == pytest.approx(0.001)


def test_strong_scaling_fixes_global_batch_and_lr():
    lrs = []
    for ranks in (1, 2, 4, 8):
        local, global_ = batch_sizes("strong", 999, 64, ranks)
        assert (local * ranks, global_) == (64, 64)
        lrs.append(scaled_lr(0.01, 64, global_, "linear"))
    assert lrs == [0.01] * 4


@pytest.mark.parametrize("args, message", [
    (("strong", 8, None, 2), "train.global_batch' must be set"),
    (("strong", 8, 10, 4), "does not divide over 4 ranks"),
    (("diagonal", 8, None, 2), "train.scaling"),
])
def test_batch_size_errors(args, message):
    with pytest.raises(ValueError, match=message):
        batch_sizes(*args)


def values(schedule, steps):
    return np.array([float(schedule(s)) for s in steps])


def test_warmup_goes_from_base_to_peak_then_holds():
    sched = WarmupDecay(base=0.1, peak=0.8, steps_per_epoch=10, total_epochs=5, warmup_epochs=2)
    lr = values(sched, range(50))
    assert lr[0] == pytest.approx(0.1 + 0.7 / 20)
    assert np.all(np.diff(lr[:20]) > 0) and lr[19] == pytest.approx(0.8)
    assert np.allclose(lr[20:], 0.8)


def test_warmup_from_zero_without_scaling():
    sched = WarmupDecay(base=0.5, peak=0.5, steps_per_epoch=4, total_epochs=3, warmup_epochs=1)
    assert values(sched, [0, 1, 3, 4]) == pytest.approx([0.125, 0.25, 0.5, 0.5])


def test_step_decay_multiplies_the_peak_from_each_boundary():
    sched = WarmupDecay(0.1, 0.1, steps_per_epoch=10, total_epochs=10, decay="step",
                        decay_epochs=[3, 6], decay_factors=[0.25, 0.125])
    assert values(sched, [0, 29, 30, 59, 60, 99]) == pytest.approx(
        [0.1, 0.1, 0.025, 0.025, 0.0125, 0.0125])


def test_cosine_decay_reaches_floor_at_end():
    sched = WarmupDecay(0.1, 0.1, steps_per_epoch=10, total_epochs=10, warmup_epochs=0,
                        decay="cosine", min_lr=0.001)
    lr = values(sched, [0, 50, 100])
    assert lr[0] == pytest.approx(0.1)
    assert lr[1] == pytest.approx(0.001 + 0.099 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert lr[2] == pytest.approx(0.001)


def test_mismatched_decay_lists_name_the_keys():
    with pytest.raises(ValueError, match="decay_factors"):
        WarmupDecay(0.1, 0.1, 10, 10, decay="step", decay_epochs=[3], decay_factors=[])
