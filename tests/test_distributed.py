"""Multi-rank behaviour of the Trainer on tiny CosmoFlow data, under mpiexec -n 2."""
import json
import os
import signal
import subprocess
import time

import numpy as np
import pytest
import tensorflow as tf
import yaml

from conftest import (REPO, command, launch_env, read_metrics, run_ranks, write_config,
                      write_cosmo_stages)
from cosmoflow.model import build_model
from cosmoflow.make_data import write_tfrecord

TRAIN = REPO / "cosmoflow" / "train.py"
DRIVER = REPO / "tests" / "mpi_driver.py"
MODEL = {"name": "seed7", "head": "global_pool", "width_scale": 0.125, "dropout": 0.05}
LEARNER = {"name": "mlperf", "head": "global_pool", "width_scale": 0.5, "dropout": 0.0}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_cosmo_stages(tmp_path_factory.mktemp("cosmo"), train=256, val=64, seed=1)


def two_stage(data, out, model=MODEL, max_train=64, epochs=(4, 3)):
    return {
        "output_dir": str(out), "seed": 5,
        "data": {"format": "tfrecord", "root": str(data), "max_train": max_train},
        "model": dict(model),
        "train": {"local_batch": 4, "optimizer": "adam",
                  "lr": {"base": 0.002, "base_batch": 8, "rule": "linear"}},
        "log": {"progress": False},
        "stages": [{"name": "coarse", "data": {"root": "coarse", "resolution": 8},
                    "train": {"epochs": epochs[0]}},
                   {"name": "full", "data": {"root": "full", "resolution": 16},
                    "train": {"epochs": epochs[1]}}],
    }


def checkpoint_weights(out_dir, model_cfg, size):
    with open(os.path.join(out_dir, "checkpoints", "latest.json")) as f:
        name = json.load(f)["name"]
    model = build_model(model_cfg, (size, size, size, 4))
    tf.train.Checkpoint(model=model).read(
        os.path.join(out_dir, "checkpoints", name, "ckpt")).expect_partial()
    return model.get_weights()


def targets(folder):
    ys = []
    for path in sorted(folder.glob("*.tfrecord")):
        example = tf.train.Example.FromString(next(iter(tf.data.TFRecordDataset(str(path)))).numpy())
        ys.append(example.features.feature["y"].float_list.value)
    return np.array(ys)


def assert_same(a_files, b_files):
    a, b = np.load(a_files), np.load(b_files)
    assert len(a.files) == len(b.files) > 0
    for key in a.files:
        np.testing.assert_array_equal(a[key], b[key])


def test_two_ranks_agree_switch_stages_and_beat_the_mean(data, tmp_path):
    run = two_stage(data, tmp_path / "out", LEARNER, None, epochs=(3, 8))
    run["log"]["final_val"] = True
    cfg = write_config(tmp_path / "c.yaml", run)
    result = run_ranks(2, [DRIVER, "cosmoflow", tmp_path, "--config", cfg])
    assert result.returncode == 0, result.stdout[-3000:]
    for dump in ["start-stage0", "start-stage1", "end"]:
        assert_same(tmp_path / f"{dump}-rank0.npz", tmp_path / f"{dump}-rank1.npz")
    # Every weight carries over, so the full stage keeps the model, Adam and the one trace.
    assert "continues training the same network" in result.stdout
    assert json.loads((tmp_path / "traces-rank0.json").read_text())["traces"] == 1
    records = read_metrics(tmp_path / "out")
    assert [(r["stage"], r["epoch"]) for r in records] == [(0, e) for e in range(3)] + [
        (1, e) for e in range(8)]
    baseline = np.abs(targets(data / "full" / "validation") -
                      targets(data / "full" / "train").mean(axis=0)).mean()
    assert records[-1]["val_mae"] < 0.9 * baseline, (records[-1]["val_mae"], baseline)
    # The coarse stage is also scored on full-resolution validation data (log.final_val).
    assert all(0 < r["final_val_mae"] < 2 for r in records)
    assert all(r["final_val_mae"] != r["val_mae"] for r in records[:3])
    assert all(r["final_val_mae"] == r["val_mae"] for r in records[3:])
    assert [r["elapsed_s"] for r in records] == sorted(r["elapsed_s"] for r in records)
    run = json.loads((tmp_path / "out" / "run.json").read_text())
    assert run["ranks"] == 2 and run["launcher"] == "mpiexec (Open MPI)"
    assert run["tensorflow"] == tf.__version__ and run["horovod"] and "MPI" in run["mpi"]
    assert run["commit"] and run["python"].count(".") == 2
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["epochs"] == 11 and set(summary["stage_s"]) == {"coarse", "full"}
    assert summary["final"]["val_mae"] == records[-1]["val_mae"]
    assert summary["best"]["val_mae"] == min(r["val_mae"] for r in records)
    assert "summary: 11 epochs in" in result.stdout
    assert all(r["samples_per_s"] > 0 for r in records)


def test_gradient_averaging_matches_one_rank_with_the_double_batch(data, tmp_path):
    """...and with the horovod section's knobs set, float16 gradients stay within float16's
    rounding of it while differing from the float32 result, and rank 0 writes the timeline."""
    model = {"name": "mlperf", "head": "flatten", "width_scale": 0.125, "dropout": 0.0}
    knobs = {"compression": "fp16", "fusion_threshold_mb": 1, "cycle_time_ms": 2,
             "timeline": "timeline.json"}
    weights = []
    for ranks, name, horovod in ((1, "r1", {}), (2, "r2", {}), (2, "fp16", knobs)):
        out = tmp_path / name
        cfg = write_config(tmp_path / f"{name}.yaml", {
            "output_dir": str(out), "seed": 3, "model": model,
            "data": {"format": "tfrecord", "root": str(data / "full"), "resolution": 16,
                     "max_train": 8, "max_val": 4},
            "train": {"epochs": 2, "scaling": "strong", "global_batch": 8, "optimizer": "sgd",
                      "momentum": 0.0, "lr": {"base": 0.5, "base_batch": 8}},
            "log": {"progress": False}, "horovod": horovod})
        result = run_ranks(ranks, [TRAIN, "--config", cfg])
        assert result.returncode == 0, result.stdout[-3000:]
        assert f"local batch {8 // ranks}, global batch 8" in result.stdout
        weights.append(checkpoint_weights(out, model, 16))
    one_rank, two_ranks, fp16 = weights
    initial = build_model(model, (16, 16, 16, 4))
    moved = 0
    for one, two in zip(one_rank, two_ranks):
        np.testing.assert_allclose(one, two, rtol=1e-4, atol=1e-6)
        moved += int(not np.allclose(one, 0))
    assert moved > 0 and len(one_rank) == len(initial.get_weights())
    assert any(not np.allclose(w, i) for w, i in zip(one_rank, initial.get_weights()))
    for one, half in zip(one_rank, fp16):
        np.testing.assert_allclose(one, half, rtol=2e-2, atol=2e-3)
    assert any(not np.array_equal(two, half) for two, half in zip(two_ranks, fp16))
    timeline = (tmp_path / "fp16" / "timeline.json").read_text()
    assert "ALLREDUCE" in timeline.upper()


def test_deterministic_runs_repeat_bit_for_bit_on_two_ranks(data, tmp_path):
    """`deterministic: true` turns TensorFlow's deterministic kernels on in every rank, and two
    runs of one seed (two stages, the continuing one included) end with identical weights."""
    for name in ("a", "b"):
        (tmp_path / f"dumps-{name}").mkdir()
        cfg = two_stage(data, tmp_path / name, model=LEARNER, max_train=32, epochs=(2, 2))
        config = write_config(tmp_path / f"{name}.yaml", {**cfg, "deterministic": True})
        result = run_ranks(2, [DRIVER, "cosmoflow", tmp_path / f"dumps-{name}",
                               "--config", config])
        assert result.returncode == 0, result.stdout[-3000:]
        assert "deterministic kernels" in result.stdout
        for rank in (0, 1):
            traces = json.loads((tmp_path / f"dumps-{name}" / f"traces-rank{rank}.json")
                                .read_text())
            assert traces["op_determinism"] is True
    assert_same(tmp_path / "dumps-a" / "end-rank0.npz", tmp_path / "dumps-b" / "end-rank0.npz")
    assert_same(tmp_path / "dumps-a" / "end-rank0.npz", tmp_path / "dumps-a" / "end-rank1.npz")
    first, last = read_metrics(tmp_path / "a")[0], read_metrics(tmp_path / "a")[-1]
    assert last["val_loss"] != first["val_loss"]  # it trained: equal weights mean something

def test_killed_mid_stage_then_resumed_ends_with_the_same_weights(data, tmp_path):
    whole = write_config(tmp_path / "whole.yaml", two_stage(data, tmp_path / "whole"))
    result = run_ranks(2, [TRAIN, "--config", whole])
    assert result.returncode == 0, result.stdout[-3000:]

    cut = two_stage(data, tmp_path / "cut")
    cfg = write_config(tmp_path / "cut.yaml", cut)
    latest = tmp_path / "cut" / "checkpoints" / "latest.json"
    proc = subprocess.Popen(command(2, [TRAIN, "--config", cfg]), cwd=REPO, env=launch_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if latest.exists() and json.loads(latest.read_text())["epoch"] >= 1:
            break
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_at = json.loads(latest.read_text())
    assert killed_at["stage"] == 0 and killed_at["epoch"] < 3, killed_at  # mid-stage

    result = run_ranks(2, [TRAIN, "--config", cfg, "--resume"])
    assert result.returncode == 0, result.stdout[-3000:]
    assert "resuming from" in result.stdout
    for a, b in zip(checkpoint_weights(tmp_path / "whole", MODEL, 16),
                    checkpoint_weights(tmp_path / "cut", MODEL, 16)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    records = read_metrics(tmp_path / "cut")
    assert [(r["stage"], r["epoch"]) for r in records] == [
        (r["stage"], r["epoch"]) for r in read_metrics(tmp_path / "whole")]


def test_three_files_over_two_ranks_finish(tmp_path):
    write_tfrecord(str(tmp_path / "d"), size=8, train=3, val=3, seed=2)
    cfg = write_config(tmp_path / "c.yaml", {
        "output_dir": str(tmp_path / "out"), "model": dict(MODEL, width_scale=0.0625),
        "data": {"format": "tfrecord", "root": str(tmp_path / "d"), "resolution": 8},
        "train": {"epochs": 2, "local_batch": 1}, "log": {"progress": False}})
    result = run_ranks(2, [TRAIN, "--config", cfg], timeout=180)
    assert result.returncode == 0, result.stdout[-3000:]
    assert len(read_metrics(tmp_path / "out")) == 2
    resolved = yaml.safe_load((tmp_path / "out" / "config.yaml").read_text())
    assert resolved["train"]["local_batch"] == 1 and resolved["train"]["scaling"] == "weak"
    assert resolved["data"]["compression"] == "auto"  # defaults filled in, as the run used them
