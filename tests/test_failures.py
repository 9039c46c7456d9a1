"""Bad input and failures: a clear message, a non-zero exit on every rank, no hang, no lost
checkpoint. Multi-rank cases run under mpiexec -n 2 with a timeout."""
import json

import pytest

from conftest import REPO, read_metrics, run_ranks, write_config
from cosmoflow.make_data import write_hdf5, write_tfrecord

TRAIN = REPO / "cosmoflow" / "train.py"
MODEL = {"name": "mlperf", "head": "flatten", "width_scale": 0.0625, "dropout": 0.0}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("cosmo")
    write_tfrecord(str(root), size=8, train=8, val=4, seed=4)
    return root


def config(tmp_path, data_root, fmt="tfrecord", **train):
    return write_config(tmp_path / "c.yaml", {
        "output_dir": str(tmp_path / "out"), "model": MODEL,
        "data": {"format": fmt, "root": str(data_root), "resolution": 8},
        "train": {"epochs": 1, "local_batch": 2, **train}, "log": {"progress": False}})


def assert_failed(result, *needles):
    assert result.returncode != 0, result.stdout[-2000:]
    for needle in needles:
        assert needle in result.stdout, (needle, result.stdout[-3000:])


def test_missing_data_folder(tmp_path):
    result = run_ranks(2, [TRAIN, "--config", config(tmp_path, tmp_path / "nowhere")], 120)
    assert_failed(result, str(tmp_path / "nowhere"))


def test_empty_train_folder(tmp_path):
    (tmp_path / "d" / "train").mkdir(parents=True)
    (tmp_path / "d" / "validation").mkdir()
    result = run_ranks(2, [TRAIN, "--config", config(tmp_path, tmp_path / "d")], 120)
    assert_failed(result, str(tmp_path / "d" / "train"))


def test_truncated_hdf5_file(tmp_path):
    write_hdf5(str(tmp_path / "d"), size=8, train=8, val=4, seed=4, samples_per_file=4)
    victim = tmp_path / "d" / "cosmo-rec1.h5"
    victim.write_bytes(victim.read_bytes()[:3000])
    result = run_ranks(2, [TRAIN, "--config", config(tmp_path, tmp_path / "d", "hdf5")], 120)
    assert_failed(result, str(victim))


def test_unknown_config_key(tmp_path, data):
    cfg = config(tmp_path, data)
    result = run_ranks(2, [TRAIN, "--config", cfg, "--set", "train.lr.warmup=3"], 120)
    assert_failed(result, "unknown config key 'train.lr.warmup'")


def test_wrong_shape_file_found_while_training_stops_every_rank(tmp_path, data):
    bad = tmp_path / "d"
    write_tfrecord(str(bad), size=8, train=8, val=4, seed=4)
    write_tfrecord(str(tmp_path / "other"), size=4, train=1, val=1, seed=4)
    victim = sorted((bad / "train").glob("*.tfrecord"))[-1]  # not the first: passes the check
    victim.write_bytes(next((tmp_path / "other" / "train").glob("*.tfrecord")).read_bytes())
    result = run_ranks(2, [TRAIN, "--config", config(tmp_path, bad)], 120)
    assert_failed(result, victim.name)


def test_without_horovod_one_rank_trains_and_several_refuse(tmp_path, data):
    fake = tmp_path / "fake" / "horovod"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('horovod hidden by the test')\n")
    env = {"PYTHONPATH": f"{tmp_path / 'fake'}:{REPO}"}
    result = run_ranks(2, [TRAIN, "--config", config(tmp_path, data)], 120, env=env)
    assert_failed(result, "launched as 2 ranks", "horovod.tensorflow cannot be imported")
    assert not (tmp_path / "out" / "metrics.jsonl").exists()
    alone = run_ranks(1, [TRAIN, "--config", config(tmp_path, data)], 120, env=env)
    assert alone.returncode == 0, alone.stdout[-3000:]  # a world of one needs no Horovod
    assert len(read_metrics(tmp_path / "out")) == 1


def test_non_finite_loss_stops_all_ranks_and_keeps_the_last_checkpoint(tmp_path, data):
    cfg = config(tmp_path, data, optimizer="sgd")
    first = run_ranks(2, [TRAIN, "--config", cfg], 120)
    assert first.returncode == 0, first.stdout[-3000:]
    latest = tmp_path / "out" / "checkpoints" / "latest.json"
    good = json.loads(latest.read_text())

    again = run_ranks(1, [TRAIN, "--config", cfg], 120)
    assert_failed(again, "already holds a checkpoint", "--resume")

    # Losses are read back every 3 steps: the first bad step is still named, on every rank.
    blown = run_ranks(2, [TRAIN, "--config", cfg, "--resume", "--epochs", "3", "--lr", "1e30",
                          "--set", "log.every_steps=3"], 120)
    assert_failed(blown, "non-finite loss", "stage 'main' epoch 2 step 2;")
    assert json.loads(latest.read_text()) == good
    assert len(read_metrics(tmp_path / "out")) == 1

    resumed = run_ranks(1, [TRAIN, "--config", cfg, "--resume", "--epochs", "2"], 120)
    assert resumed.returncode == 0, resumed.stdout[-3000:]
    assert [r["epoch"] for r in read_metrics(tmp_path / "out")] == [0, 1]


def test_unknown_metric_name_is_a_config_error(tmp_path, data):
    cfg = config(tmp_path, data)
    result = run_ranks(1, [TRAIN, "--config", cfg, "--set", "train.target.metric=val_iou"], 120)
    assert_failed(result, "'train.target.metric': unknown metric 'val_iou'", "val_mae")


def test_xla_with_mixed_precision_on_cpu_is_refused_before_training(tmp_path, data):
    cfg = config(tmp_path, data, jit_compile=True, precision="mixed_bfloat16")
    result = run_ranks(2, [TRAIN, "--config", cfg], 120)
    assert_failed(result, "train.jit_compile with train.precision=mixed_bfloat16 needs a GPU")
    assert not (tmp_path / "out" / "metrics.jsonl").exists()
