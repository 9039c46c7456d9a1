"""The study's two coarse-stage plans: a batch derived from the resolutions (the same pixels per
step as the full stage, the LR following the configured rule) and a stage switch on a plateau of
the full-resolution score (train.early_stop on final_val_*)."""
import pytest

from common.lr import scaled_lr
from common.multires import Stage, memory_equivalent_batches
from conftest import REPO, read_metrics, run_ranks, write_config, write_cosmo_stages
from cosmoflow.train import make_task as cosmoflow_task
from deepcam.train import make_task as deepcam_task
from edsr.train import make_task as edsr_task

TRAIN = REPO / "cosmoflow" / "train.py"


def stages(data_key, coarse, full, local_batch=2, global_batch=None, flag=True):
    def train(on):
        return {"local_batch": local_batch, "global_batch": global_batch,
                "memory_equivalent_batch": on}
    return [Stage(0, "coarse", {data_key: coarse}, {}, train(flag)),
            Stage(1, "full", {data_key: full}, {}, train(False))]


@pytest.mark.parametrize("make_task, data_key, coarse, full, factor", [
    (cosmoflow_task, "resolution", 16, 32, 8),          # 3D at half resolution
    (cosmoflow_task, "resolution", 32, 128, 64),
    (deepcam_task, "shape", [48, 72], [96, 144], 4),    # 2D at half resolution
    (deepcam_task, "shape", [384, 576], [768, 1152], 4),  # the seed's 8 then 2
    (edsr_task, "crop", 16, 32, 4),
])
def test_the_coarse_batch_is_the_full_one_times_the_pixel_ratio(make_task, data_key, coarse,
                                                                  full, factor):
    plan = stages(data_key, coarse, full, global_batch=6)
    task = make_task({"model": {"class_power": 0.125}, "data": {"depth": 1}})
    lines = memory_equivalent_batches(plan, task.sample_pixels)
    assert plan[0].train["local_batch"] == 2 * factor
    assert plan[0].train["global_batch"] == 6 * factor  # strong scaling keeps the ratio too
    assert plan[1].train["local_batch"] == 2 and plan[1].train["global_batch"] == 6
    assert lines == [f"stage 'coarse': a sample holds 1/{factor} of the pixels of a stage 'full' "
                     f"one, so {factor}x its batch: local batch {2 * factor} "
                     "(train.memory_equivalent_batch)"]


def test_without_the_flag_or_with_a_fractional_ratio_the_batch_is_kept_or_refused():
    plan = stages("crop", 16, 32, flag=False)
    assert memory_equivalent_batches(plan, edsr_task({"data": {"depth": 1}}).sample_pixels) == []
    assert plan[0].train["local_batch"] == 2
    with pytest.raises(ValueError, match=r"stage 'coarse'.*whole number.*1\.77778 \(1024 / 576"):
        memory_equivalent_batches(stages("crop", 24, 32),
                                  edsr_task({"data": {"depth": 1}}).sample_pixels)
    with pytest.raises(ValueError, match="stage 'coarse'.*this app does not"):
        memory_equivalent_batches(stages("crop", 16, 32), None)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_cosmo_stages(tmp_path_factory.mktemp("cosmo"), train=32, val=8, seed=4)


def two_stages(data, out, coarse_train, final_val=True):
    return {"output_dir": str(out), "seed": 2,
            "data": {"format": "tfrecord", "root": str(data)},
            "model": {"name": "mlperf", "head": "global_pool", "width_scale": 0.125,
                      "dropout": 0.0},
            "train": {"local_batch": 2, "optimizer": "adam",
                      "lr": {"base": 0.001, "base_batch": 4, "rule": "sqrt"}},
            "log": {"progress": False, "final_val": final_val},
            "stages": [{"name": "coarse", "data": {"root": "coarse", "resolution": 8},
                        "train": {"epochs": 5, **coarse_train}},
                       {"name": "full", "data": {"root": "full", "resolution": 16},
                        "train": {"epochs": 1}}]}


def test_memory_equivalent_coarse_stage_switches_on_a_full_resolution_plateau(data, tmp_path):
    out = tmp_path / "run"
    # min_delta far above any change: the first epoch sets the best, the second is a plateau
    plateau = {"metric": "final_val_mae", "patience": 1, "min_delta": 100.0}
    cfg = two_stages(data, out, {"memory_equivalent_batch": True, "early_stop": plateau})
    result = run_ranks(1, [TRAIN, "--config", write_config(tmp_path / "c.yaml", cfg)])
    assert result.returncode == 0, result.stdout[-3000:]
    log = result.stdout
    # 8^3 against 16^3: 8x the full stage's local batch of 2; LR by the sqrt rule for batch 16.
    coarse_lr = scaled_lr(0.001, 4, 16, "sqrt")
    assert coarse_lr == pytest.approx(0.002)
    assert f"local batch 16, global batch 16 over 1 ranks, LR 0.001 -> {coarse_lr:g}" in log
    assert "32 train / 8 val samples, 2 steps/epoch" in log  # 32 samples in batches of 16
    assert "local batch 2, global batch 2 over 1 ranks, LR 0.001 -> 0.000707107" in log
    records = read_metrics(out)
    assert [(r["stage_name"], r["epoch"]) for r in records] == [
        ("coarse", 0), ("coarse", 1), ("full", 0)]  # 2 of the 5 coarse epochs, then the switch
    assert records[0]["lr"] == pytest.approx(coarse_lr)
    assert "stage 'coarse': no final_val_mae improvement for 1 epochs; ending the stage" in log


def test_early_stop_on_final_val_without_the_probe_is_refused_before_training(data, tmp_path):
    cfg = two_stages(data, tmp_path / "run", {"early_stop": {"metric": "final_val_mae"}},
                     final_val=False)
    result = run_ranks(1, [TRAIN, "--config", write_config(tmp_path / "c.yaml", cfg)])
    assert result.returncode != 0
    assert "config key 'train.early_stop.metric': unknown metric 'final_val_mae'" in result.stdout
    assert "epoch 1" not in result.stdout
