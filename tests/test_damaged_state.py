"""Damaged output state: errors name the file, a damaged newest checkpoint or pointer falls back
to the intact one before it, checkpoint data is on disk before the pointer moves, non-finite
weights and a full disk never replace the last good checkpoint, and the metrics file survives a
kill at any point."""
import errno
import json
import logging
import os
import shutil

import numpy as np
import pytest

from common import checkpoint
from common.checkpoint import CheckpointError, CheckpointStore, NonFiniteWeights
from common.logs import MetricsLog
from test_checkpoint import tiny_model, train_once


def two_checkpoints(tmp_path):
    store = CheckpointStore(str(tmp_path), keep=2)
    model, opt = tiny_model()
    store.save(model, opt, {"stage": 0, "epoch": 0})
    train_once(model, opt)
    store.save(model, opt, {"stage": 0, "epoch": 1})
    return store, model, opt


def data_file(folder):
    return next(folder.glob("ckpt.data-*"))


def test_truncated_pointer_falls_back_to_the_newest_intact_checkpoint(tmp_path, caplog):
    store, _, _ = two_checkpoints(tmp_path)
    (tmp_path / "latest.json").write_text('{"name": "stage0-ep')
    with caplog.at_level(logging.WARNING, logger="train"):
        latest = store.latest()
    assert latest["epoch"] == 1 and latest["path"] == str(tmp_path / "stage0-epoch0001")
    assert str(tmp_path / "latest.json") in caplog.text and "falling back" in caplog.text


def test_truncated_newest_checkpoint_falls_back_to_the_previous_one(tmp_path, caplog):
    store, _, _ = two_checkpoints(tmp_path)
    victim = data_file(tmp_path / "stage0-epoch0001")
    victim.write_bytes(victim.read_bytes()[:-8])
    with caplog.at_level(logging.WARNING, logger="train"):
        latest = store.latest()
    assert latest["epoch"] == 0
    assert str(victim) in caplog.text  # the warning names the damaged file
    fresh, fresh_opt = tiny_model()
    store.restore(fresh, fresh_opt, latest)
    assert int(fresh_opt.iterations) == 0


def test_nothing_intact_is_an_error_naming_the_pointer(tmp_path):
    store, _, _ = two_checkpoints(tmp_path)
    (tmp_path / "latest.json").write_text("{")
    for name in ("stage0-epoch0000", "stage0-epoch0001"):
        (tmp_path / name / "state.json").write_text("")
    with pytest.raises(CheckpointError, match=f"{tmp_path / 'latest.json'}.*no intact"):
        store.latest()


def test_corrupt_data_is_a_restore_error_naming_the_checkpoint(tmp_path):
    store, _, _ = two_checkpoints(tmp_path)
    victim = data_file(tmp_path / "stage0-epoch0001")
    raw = bytearray(victim.read_bytes())
    raw[: len(raw) // 2] = bytes(len(raw) // 2)  # same size: passes the size check
    victim.write_bytes(bytes(raw))
    latest = store.latest()
    fresh, fresh_opt = tiny_model()
    with pytest.raises(CheckpointError, match=str(tmp_path / "stage0-epoch0001")):
        store.restore(fresh, fresh_opt, latest)


def test_missing_pointer_uses_a_complete_checkpoint_folder(tmp_path):
    store, _, _ = two_checkpoints(tmp_path)
    (tmp_path / "latest.json").unlink()  # killed between the rename and the pointer
    assert store.latest()["epoch"] == 1


def test_checkpoint_files_and_folder_are_synced_before_the_pointer_moves(tmp_path, monkeypatch):
    store = CheckpointStore(str(tmp_path))
    model, opt = tiny_model()
    events, real_fsync, real_replace = [], os.fsync, os.replace

    def fsync(fd):
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        return real_fsync(fd)

    def replace(src, dst):
        events.append(("replace", os.path.basename(dst)))
        return real_replace(src, dst)
    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    store.save(model, opt, {"stage": 0, "epoch": 0})
    pointer = events.index(("replace", "latest.json"))
    synced = {os.path.basename(path) for kind, path in events[:pointer] if kind == "fsync"}
    tmp = next(os.path.basename(p) for k, p in events if k == "fsync" and ".tmp-" in p)
    assert {"state.json", "files.json", "ckpt.index", data_file(tmp_path / "stage0-epoch0000").name,
            tmp, os.path.basename(str(tmp_path))} <= synced, events
    assert events.index(("replace", "stage0-epoch0000")) < pointer


def test_non_finite_weights_are_never_saved(tmp_path):
    store, model, opt = two_checkpoints(tmp_path)
    kernel = model.get_layer("d").kernel
    kernel.assign(np.full(kernel.shape, np.nan, np.float32))
    with pytest.raises(NonFiniteWeights, match=kernel.name.replace("/", ".")):
        store.save(model, opt, {"stage": 0, "epoch": 2})
    assert store.latest()["epoch"] == 1
    assert sorted(os.listdir(tmp_path)) == ["latest.json", "stage0-epoch0000", "stage0-epoch0001"]


def test_full_disk_is_refused_before_writing_naming_the_folder(tmp_path, monkeypatch):
    store, model, opt = two_checkpoints(tmp_path)
    size = sum(f.stat().st_size for f in (tmp_path / "stage0-epoch0001").iterdir())
    monkeypatch.setattr(checkpoint.shutil, "disk_usage",
                        lambda path: shutil._ntuple_diskusage(10**9, 10**9 - 100, 100))
    with pytest.raises(OSError) as caught:
        store.save(model, opt, {"stage": 0, "epoch": 2})
    assert caught.value.errno == errno.ENOSPC
    message = str(caught.value)
    assert str(tmp_path) in message and "100 are free" in message
    needed = int(message.split("about ")[1].split(" bytes")[0])
    assert needed >= size  # estimated from the last checkpoint
    assert store.latest()["epoch"] == 1 and not any(n.startswith(".tmp") for n in
                                                    os.listdir(tmp_path))


def metrics(tmp_path, records):
    log = MetricsLog(str(tmp_path / "metrics.jsonl"), "jsonl")
    for stage, epoch in records:
        log.append({"stage": stage, "epoch": epoch, "loss": 1.0})
    return log


def test_torn_last_line_is_dropped_and_healed_by_the_trim(tmp_path):
    log = metrics(tmp_path, [(0, 0), (0, 1)])
    with open(log.path, "a") as f:
        f.write('{"stage": 0, "epo')  # killed mid-append
    assert [r["epoch"] for r in log.read()] == [0, 1]
    log.truncate_after(0, 1)
    log.append({"stage": 0, "epoch": 2, "loss": 1.0})
    assert [json.loads(line)["epoch"] for line in open(log.path)] == [0, 1, 2]


def test_a_damaged_middle_line_names_the_file_and_line(tmp_path):
    log = metrics(tmp_path, [(0, 0)])
    with open(log.path, "a") as f:
        f.write("garbage\n")
    log.append({"stage": 0, "epoch": 1, "loss": 1.0})
    with pytest.raises(ValueError, match=f"{log.path}: line 2 is not JSON"):
        log.read()


def test_trim_replaces_the_file_whole(tmp_path, monkeypatch):
    log = metrics(tmp_path, [(0, 0), (0, 1), (1, 0)])
    before = open(log.path).read()
    monkeypatch.setattr(os, "remove", lambda *a: pytest.fail("removed the metrics file"))

    def killed(src, dst):
        raise KeyboardInterrupt  # a kill just before the new file takes over
    monkeypatch.setattr(os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        log.truncate_after(0, 0)
    assert open(log.path).read() == before
    monkeypatch.undo()
    log.truncate_after(0, 0)
    assert [r["epoch"] for r in log.read()] == [0]


def test_csv_trim_to_nothing_then_append_writes_the_header(tmp_path):
    log = MetricsLog(str(tmp_path / "metrics.csv"), "csv")
    log.append({"stage": 0, "epoch": 0, "loss": 0.5})
    log.truncate_after(-1, -1)
    log.append({"stage": 0, "epoch": 0, "loss": 0.25})
    assert log.read() == [{"stage": 0, "epoch": 0, "loss": 0.25}]
