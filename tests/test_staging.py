"""data.stage_dir: input copied to node-local storage before training, GZIP decompressed, a
complete stage reused and an incomplete or stale one redone, bad stage folders stopping every
rank. Multi-rank cases run under mpiexec -n 2 (one node: its two ranks share the copying)."""
import json
import logging
import os
import re
from collections import namedtuple
from pathlib import Path

import numpy as np
import pytest

from common import staging
from common.distributed import World
from common.staging import SplitFiles, files_read, stage_folder, stage_inputs
from conftest import REPO, read_metrics, run_ranks, write_config
from cosmoflow.data import GZIP_MAGIC, make_datasets
from cosmoflow.make_data import write_tfrecord

TRAIN = REPO / "cosmoflow" / "train.py"
MODEL = {"name": "mlperf", "head": "flatten", "width_scale": 0.0625, "dropout": 0.0}
NUM_FILES = 12  # 8 train + 4 validation


@pytest.fixture(scope="module")
def gzip_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("cosmo-gz")
    write_tfrecord(str(root), size=8, train=8, val=4, seed=4, gzip=True)
    return root


def config(path, data_root, out, stage_dir=""):
    return write_config(path, {
        "output_dir": str(out), "seed": 3, "model": MODEL,
        "data": {"format": "tfrecord", "root": str(data_root), "resolution": 8,
                 "stage_dir": str(stage_dir)},
        "train": {"epochs": 2, "local_batch": 2, "optimizer": "adam"},
        "log": {"progress": False}})


def train(tmp_path, name, data_root, stage_dir=""):
    cfg = config(tmp_path / f"{name}.yaml", data_root, tmp_path / name, stage_dir)
    return run_ranks(2, [TRAIN, "--config", cfg], 240)


Runs = namedtuple("Runs", "base source staged stage_root")


@pytest.fixture(scope="module")
def runs(tmp_path_factory, gzip_data):
    base = tmp_path_factory.mktemp("runs")
    source = train(base, "source", gzip_data)
    staged = train(base, "staged", gzip_data, base / "stage")
    for result in (source, staged):
        assert result.returncode == 0, result.stdout[-3000:]
    _, stage_root = stage_folder({"root": str(gzip_data), "stage_dir": str(base / "stage")})
    return Runs(base, source, staged, stage_root)


def test_training_from_the_stage_matches_training_from_the_source(runs):
    source, staged = read_metrics(runs.base / "source"), read_metrics(runs.base / "staged")
    assert len(source) == len(staged) == 2
    for a, b in zip(source, staged):
        for key in ("train_loss", "val_loss", "val_mae"):
            assert b[key] == pytest.approx(a[key], rel=1e-5), (key, a, b)
    assert f"staged {NUM_FILES} files" in runs.staged.stdout
    assert "reused 0 staged earlier" in runs.staged.stdout


def test_gzip_source_is_staged_decompressed(runs, gzip_data):
    sources = sorted(gzip_data.glob("*/*.tfrecord"))
    staged = sorted(os.path.join(runs.stage_root, p.relative_to(gzip_data)) for p in sources)
    assert len(staged) == NUM_FILES
    for source, copy in zip(sources, staged):
        with open(source, "rb") as f:
            assert f.read(2) == GZIP_MAGIC
        with open(copy, "rb") as f:
            assert f.read(2) != GZIP_MAGIC
        assert os.path.getsize(copy) > os.path.getsize(source)
    with open(os.path.join(runs.stage_root, "manifest.json")) as f:
        manifest = json.load(f)
    assert manifest["complete"] is True and list(manifest)[-1] == "complete"
    assert len(manifest["files"]) == NUM_FILES
    assert all(entry["decompressed"] for entry in manifest["files"].values())
    assert not list(Path(runs.stage_root).rglob(".*"))  # no plan, part or probe files left


def test_a_complete_stage_is_reused_by_the_next_job(runs, gzip_data):
    copies = sorted(str(p) for p in Path(runs.stage_root).rglob("*.tfrecord"))
    before = [os.stat(p).st_mtime_ns for p in copies]
    again = train(runs.base, "again", gzip_data, runs.base / "stage")
    assert again.returncode == 0, again.stdout[-3000:]
    assert "staged 0 files (0 B)" in again.stdout
    assert f"reused {NUM_FILES} staged earlier" in again.stdout
    assert [os.stat(p).st_mtime_ns for p in copies] == before
    first, second = read_metrics(runs.base / "staged"), read_metrics(runs.base / "again")
    assert [r["val_loss"] for r in first] == pytest.approx([r["val_loss"] for r in second],
                                                           rel=1e-5)


def test_an_unwritable_stage_dir_stops_every_rank_naming_it(tmp_path, gzip_data):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    result = train(tmp_path, "bad", gzip_data, blocker / "stage")
    assert result.returncode != 0, result.stdout[-2000:]
    assert "not writable" in result.stdout and str(blocker / "stage") in result.stdout
    assert result.stdout.count("ERROR: data.stage_dir") == 2, result.stdout[-3000:]  # both ranks


# --- in one process: the manifest's decisions, space checks, and the other apps --------------

class Lines(logging.Handler):
    def __init__(self):
        super().__init__()
        self.lines = []

    def emit(self, record):
        self.lines.append(record.getMessage())


@pytest.fixture
def log_lines():
    logger, handler = logging.getLogger("train"), Lines()
    logger.addHandler(handler)
    old_level, logger.level = logger.level, logging.INFO
    yield handler.lines
    logger.removeHandler(handler)
    logger.setLevel(old_level)


def stage_tfrecords(root, stage_dir):
    data_cfg = {"root": str(root), "stage_dir": str(stage_dir)}
    paths = sorted(str(p) for p in root.glob("*/*.tfrecord"))
    return stage_inputs(data_cfg, World(), {"all": SplitFiles(paths, gunzip=True)})["all"]


def mtimes(paths):
    return [os.stat(p).st_mtime_ns for p in paths]


def test_incomplete_truncated_or_stale_stages_are_redone(tmp_path, gzip_data, log_lines):
    stage = tmp_path / "stage"
    located = stage_tfrecords(gzip_data, stage)
    assert log_lines[-1].startswith(f"staged {NUM_FILES} files")
    manifest_path = os.path.join(os.path.dirname(os.path.dirname(located[0])), "manifest.json")
    first = mtimes(located)

    stage_tfrecords(gzip_data, stage)  # complete and current: nothing copied
    assert log_lines[-1].startswith("staged 0 files") and mtimes(located) == first

    with open(located[3], "r+b") as f:  # a truncated copy: that file alone is redone
        f.truncate(10)
    stage_tfrecords(gzip_data, stage)
    assert log_lines[-1].startswith("staged 1 files")
    redone = mtimes(located)
    assert redone[3] != first[3] and redone[:3] + redone[4:] == first[:3] + first[4:]
    assert os.path.getsize(located[3]) == os.path.getsize(located[2])  # whole again

    with open(manifest_path) as f:  # a job cut short: no complete flag, everything redone
        manifest = json.load(f)
    manifest["complete"] = False
    with open(manifest_path, "w") as f:
        json.dump(manifest, f)
    stage_tfrecords(gzip_data, stage)
    assert log_lines[-1].startswith(f"staged {NUM_FILES} files")
    assert all(a != b for a, b in zip(mtimes(located), redone))

    source = sorted(gzip_data.glob("*/*.tfrecord"))[5]  # a changed source: its copy is redone
    os.utime(source, ns=(os.stat(source).st_atime_ns, os.stat(source).st_mtime_ns + 10**9))
    stage_tfrecords(gzip_data, stage)
    assert log_lines[-1].startswith("staged 1 files")


def test_staged_reader_sees_the_same_samples(tmp_path, gzip_data):
    cfg = {"format": "tfrecord", "root": str(gzip_data), "resolution": 8, "compression": "auto",
           "log_transform": True, "count_scale": 1.0, "max_train": None, "max_val": None}
    source = make_datasets(cfg, 2)[1]
    staged = make_datasets({**cfg, "stage_dir": str(tmp_path / "s")}, 2)[1]
    assert all(str(tmp_path / "s") in str(key) for key in staged.keys)
    a = np.concatenate([x.numpy() for x, _, _ in source.epoch(0)])
    b = np.concatenate([x.numpy() for x, _, _ in staged.epoch(0)])
    assert a.shape == (4, 8, 8, 8, 4) and np.array_equal(a, b)


def test_not_enough_space_names_the_numbers(tmp_path, gzip_data, monkeypatch):
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(staging.shutil, "disk_usage", lambda path: usage(1000, 900, 100))
    with pytest.raises(staging.StagingError) as err:
        stage_tfrecords(gzip_data, tmp_path / "full")
    text = str(err.value)
    assert "not enough space" in text and str(tmp_path / "full") in text
    assert "(100 bytes) free" in text and f"to stage {NUM_FILES} files" in text


def test_a_node_stages_only_the_files_its_ranks_read():
    """Two nodes of one rank each: local shuffle splits the training files between them; global
    shuffle gives each node all of them. Validation shards are fixed either way."""
    train = SplitFiles([f"/d/train/{i}" for i in range(10)], np.arange(10)[:, None], True)
    val = SplitFiles([f"/d/val/{i}" for i in range(4)], np.arange(4)[:, None], False)
    splits = {"train": train, "validation": val}

    def node_files(node, shuffle):
        return set(files_read(splits, "/d", [node], 2, shuffle, seed=1))

    local = [node_files(n, "local") for n in (0, 1)]
    assert not local[0] & local[1] and len(local[0] | local[1]) == 14
    assert {f for f in local[0] if "/val/" in f} == {"/d/val/0", "/d/val/2"}
    assert all(len({f for f in files if "/train/" in f}) == 5 for files in local)
    everything = [node_files(n, "global") for n in (0, 1)]
    assert all(len({f for f in files if "/train/" in f}) == 10 for files in everything)


def test_deepcam_raw_pairs_are_staged_together(tmp_path):
    from deepcam import data
    from deepcam.convert import convert
    from deepcam.make_data import write_dataset
    write_dataset(str(tmp_path / "h5"), 16, 24, train=4, val=2, seed=1)
    convert(str(tmp_path / "h5"), str(tmp_path / "raw"))
    cfg = {"format": "raw", "root": str(tmp_path / "raw"), "shape": [16, 24], "num_channels": 16,
           "channels": None, "max_train": None, "max_val": None, "shuffle": "local"}
    source = data.make_datasets(cfg, 2, World(), 0)
    staged = data.make_datasets({**cfg, "stage_dir": str(tmp_path / "s")}, 2, World(), 0)
    copies = sorted(p.name for p in (tmp_path / "s").rglob("*") if p.suffix in (".data", ".label"))
    assert len(copies) == 12  # 6 samples x (data, label)
    for a, b in zip(source, staged):
        assert all(str(tmp_path / "s") in str(key) for key in b.keys)
        for (xa, ya, _), (xb, yb, _) in zip(a.epoch(0), b.epoch(0)):
            assert np.array_equal(xa.numpy(), xb.numpy()) and np.array_equal(ya.numpy(),
                                                                              yb.numpy())


def test_edsr_images_are_read_from_the_stage(tmp_path, monkeypatch):
    from edsr import data
    from edsr.make_data import write_dataset
    write_dataset(str(tmp_path / "d"), 20, 36, train=3, val=2, test=1, seed=2)
    cfg = {"root": str(tmp_path / "d"), "num_rows": 20, "num_cols": 36, "depth": 1, "crop": 8,
           "crops_per_image": 2, "eval_batch": 1, "max_train": None, "max_val": None,
           "stage_dir": str(tmp_path / "s")}
    read = []
    monkeypatch.setattr(data, "read_png", lambda path, depth, real=data.read_png: (
        read.append(path), real(path, depth))[1])
    train, val = data.make_datasets(cfg, 2, World(), 0)
    assert len(read) == 10 and all(p.startswith(str(tmp_path / "s")) for p in read)
    staged_val = np.concatenate([y.numpy() for _, y, _ in val.epoch(0)])
    source_val = data.full_images({**cfg, "stage_dir": ""}, "val", World())
    assert np.array_equal(staged_val, np.concatenate([y.numpy() for _, y, _ in
                                                      source_val.epoch(0)]))


def test_staging_benchmark_prints_every_figure(tmp_path):
    result = run_ranks(1, [REPO / "scripts" / "benchmark.py", "--app", "cosmoflow", "--staging",
                           "--set", "data.resolution=8", "--set", "model.width_scale=0.125",
                           "--local-batch", "2", "--steps", "1", "--pipeline-steps", "2",
                           "--repeats", "2"], timeout=300, env={"TMPDIR": str(tmp_path)})
    assert result.returncode == 0, result.stdout[-4000:]
    assert "staged 18 files" in result.stdout  # 16 train + 2 validation
    for way in ("GZIP files", "plain files", "staged files"):
        for kind in ("pipeline", "train"):
            found = re.search(rf"{kind}, {way}\s+([0-9.]+) samples/s", result.stdout)
            assert found and float(found.group(1)) > 0, (kind, way, result.stdout[-3000:])
    assert re.search(r"train staged / GZIP\s+[0-9.]+ x", result.stdout)
    assert not list(tmp_path.iterdir()), "the benchmark left its files behind"
