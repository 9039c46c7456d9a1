"""The end-of-run summary from hand-made metrics records, and run.json's MPI library."""
import json
import types

import pytest

from common.summary import first_reached, run_record, run_summary, stage_seconds, summary_lines

RECORDS = [
    {"stage": 0, "stage_name": "coarse", "epoch": 0, "elapsed_s": 4.0, "train_loss": 0.9,
     "val_loss": 0.8, "val_iou": 0.30},
    {"stage": 0, "stage_name": "coarse", "epoch": 1, "elapsed_s": 6.0, "train_loss": 0.7,
     "val_loss": 0.6, "val_iou": 0.50},
    {"stage": 1, "stage_name": "full", "epoch": 0, "elapsed_s": 16.0, "train_loss": 0.5,
     "val_loss": 0.65, "val_iou": 0.62},
    {"stage": 1, "stage_name": "full", "epoch": 1, "elapsed_s": 26.0, "train_loss": 0.4,
     "val_loss": 0.7, "val_iou": 0.60},
]
TARGET = {"metric": "val_iou", "value": 0.6, "mode": "max"}


def test_stage_time_counts_switches_and_first_reached_counts_ties():
    assert stage_seconds(RECORDS) == {"coarse": 6.0, "full": 20.0}
    assert first_reached(RECORDS, "val_iou", 0.62, "max") == (16.0, 3, "full")
    assert first_reached(RECORDS, "val_loss", 0.6, "min") == (6.0, 2, "coarse")
    assert first_reached(RECORDS, "val_iou", 0.9, "max") is None


def test_summary_best_follows_each_metric_direction():
    summary = run_summary(RECORDS, TARGET, maximize=("iou",))
    assert summary["epochs"] == 4 and summary["total_s"] == 26.0
    assert summary["final"] == {"train_loss": 0.4, "val_loss": 0.7, "val_iou": 0.60}
    assert summary["best"] == {"train_loss": 0.4, "val_loss": 0.6, "val_iou": 0.62}
    assert summary["target"] == {**TARGET, "reached": True, "seconds": 16.0, "epochs": 3}
    lines = "\n".join(summary_lines(summary))
    assert "4 epochs in 26.0 s (coarse 6.0 s, full 20.0 s)" in lines
    assert "val_iou: final 0.6, best 0.62" in lines and "reached after 16.0 s, 3 epochs" in lines


def test_summary_without_target_or_records():
    summary = run_summary(RECORDS, {**TARGET, "value": None})
    assert "target" not in summary and summary["best"]["val_iou"] == pytest.approx(0.30)
    assert run_summary([], TARGET) == {"epochs": 0}
    assert summary_lines({"epochs": 0}) == ["summary: no epochs recorded"]


@pytest.mark.parametrize("library, expected", [
    ("Open MPI v4.1.4, package: Debian OpenMPI, repo rev: v4.1.4, May 26, 2022\0",
     "Open MPI v4.1.4, package: Debian OpenMPI, repo rev: v4.1.4, May 26, 2022"),
    ("MPICH Version:\t4.0.2\nMPICH Release date:\tThu Apr  7 12:34:45 CDT 2022\n\0\0",
     "MPICH Version:\t4.0.2")])
def test_run_record_names_the_mpi_library_without_its_c_terminator(monkeypatch, library,
                                                                    expected):
    from mpi4py import MPI
    world = types.SimpleNamespace(size=1)
    installed = run_record(world, ["train.py"])["mpi"]  # this machine's library, as it is
    assert installed and "\0" not in installed and installed == installed.strip()
    monkeypatch.setattr(MPI, "Get_library_version", lambda: library)
    record = run_record(world, ["train.py"])
    assert record["mpi"] == expected
    assert "\\u0000" not in json.dumps(record)
