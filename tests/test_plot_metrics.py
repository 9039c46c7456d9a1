"""scripts/plot_metrics.py on hand-made two-stage metrics files: the PNG and the summary numbers."""
import subprocess
import sys

import matplotlib.image
import pytest
import yaml

import plot_metrics
from common.logs import MetricsLog
from conftest import REPO

# Two stages, 3 + 2 epochs; val_mae is best in the second epoch of 'full' (epoch 5 overall).
VAL_MAE = [0.9, 0.6, 0.5, 0.55, 0.3]
EPOCH_S = [1.0, 1.5, 2.0, 8.0, 9.5]      # sum 22.0
SAMPLES_PER_S = [100.0, 120.0, 110.0, 20.0, 30.0]


def write_run(folder, fmt, val_mae=VAL_MAE, target=None):
    folder.mkdir()
    log = MetricsLog(str(folder / f"metrics.{fmt}"), fmt)
    for i, mae in enumerate(val_mae):
        stage = int(i >= 3)
        log.append({"stage": stage, "stage_name": ("coarse", "full")[stage],
                    "epoch": i - 3 * stage, "train_loss": 1.0 / (i + 1),
                    "samples_per_s": SAMPLES_PER_S[i], "step_ms": 10.0, "epoch_s": EPOCH_S[i],
                    "val_loss": 1.2 / (i + 1), "val_mae": mae, "lr": 0.001})
    if target:
        (folder / "config.yaml").write_text(yaml.safe_dump({"train": {"target": target}}))
    return str(folder)


def check_png(path):
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    height, width = matplotlib.image.imread(path).shape[:2]
    assert height > 100 and width > 100


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_plot_and_summary(tmp_path, fmt, capsys):
    run = write_run(tmp_path / "multires", fmt)
    out = tmp_path / "plots" / "run.png"
    [summary] = plot_metrics.main([run, "--out", str(out), "--metric", "val_mae"])
    check_png(out)
    assert summary["best"] == pytest.approx(0.3)
    assert (summary["best_epoch"], summary["best_stage"], summary["best_stage_epoch"]) == (
        5, "full", 2)
    assert summary["total_time_s"] == pytest.approx(22.0)
    assert [(s["name"], s["epochs"]) for s in summary["stages"]] == [("coarse", 3), ("full", 2)]
    assert [s["median_samples_per_s"] for s in summary["stages"]] == [110.0, 25.0]
    assert summary["median_samples_per_s"] == 100.0
    text = capsys.readouterr().out
    assert "best val_mae 0.3 at epoch 5 (full epoch 2)" in text
    assert "training time 22.0 s" in text


def test_overlay_uses_target_metric_and_mode(tmp_path):
    """Two runs in one plot; with no --metric the config's target (here: max) decides."""
    single = write_run(tmp_path / "single", "jsonl", target={"metric": "val_mae", "mode": "max"})
    multi = write_run(tmp_path / "multi", "csv", val_mae=[0.8, 0.4, 0.2, 0.1, 0.05])
    out = tmp_path / "both.png"
    summaries = plot_metrics.main([single, multi, "--out", str(out)])
    check_png(out)
    assert [s["run"] for s in summaries] == ["single", "multi"]
    assert [(s["best"], s["best_epoch"]) for s in summaries] == [(0.9, 1), (0.8, 1)]


def test_missing_inputs_name_the_path(tmp_path):
    missing = str(tmp_path / "no-such-run")
    cli = subprocess.run([sys.executable, REPO / "scripts" / "plot_metrics.py", missing,
                          "--out", tmp_path / "x.png"], capture_output=True, text=True)
    assert cli.returncode != 0 and missing in cli.stderr
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit, match="no metrics.jsonl or metrics.csv in .*empty"):
        plot_metrics.main([str(tmp_path / "empty"), "--out", str(tmp_path / "x.png")])
    assert not (tmp_path / "x.png").exists()
