"""scripts/multires_study.py: its time-to-target logic on hand-made logs, and the tiny preset end
to end (table, plot and summary from real runs)."""
import json

import matplotlib.image
import pytest
import yaml

import multires_study as study
from conftest import REPO


def rec(stage, name, epoch, elapsed, val=None, final=None):
    r = {"stage": stage, "stage_name": name, "epoch": epoch, "elapsed_s": elapsed}
    if val is not None:
        r["val_mae"] = val
    if final is not None:
        r["final_val_mae"] = final
    return r


MULTIRES = [rec(0, "coarse", 0, 2.0, val=0.9, final=0.8), rec(0, "coarse", 1, 3.0, 0.7, 0.5),
            rec(1, "full", 0, 7.0, 0.45, 0.45), rec(1, "full", 1, 9.0, 0.40, 0.40)]


def test_never_reaching_the_target_is_none():
    assert study.time_to_target(MULTIRES, "mae", 0.3, "min") is None


def test_reached_in_the_coarse_stage_counts_its_full_resolution_score():
    assert study.time_to_target(MULTIRES, "mae", 0.55, "min") == (3.0, 2, "coarse")


def test_ties_reach_the_target_and_the_first_epoch_wins():
    assert study.time_to_target(MULTIRES, "mae", 0.45, "min") == (7.0, 3, "full")
    flat = [rec(0, "main", e, float(e), val=0.5) for e in range(3)]
    assert study.time_to_target(flat, "mae", 0.5, "min") == (0.0, 1, "main")
    assert study.time_to_target(flat, "mae", 0.5, "max") == (0.0, 1, "main")


def test_without_final_val_only_the_last_stage_is_full_resolution():
    no_probe = [{k: v for k, v in r.items() if k != "final_val_mae"} for r in MULTIRES]
    assert study.time_to_target(no_probe, "mae", 0.75, "min") == (7.0, 3, "full")
    assert [p["full"] for p in study.full_res_points(no_probe, "mae")] == [None, None, 0.45, 0.40]


def test_run_summary_and_target():
    summary = study.summarise_run(MULTIRES, "mae", "min")
    assert summary["final"] == 0.40 and summary["best"] == 0.40
    assert summary["stage_s"] == {"coarse": 3.0, "full": 6.0} and summary["total_s"] == 9.0
    assert study.summarise_run(MULTIRES, "mae", "max")["best"] == 0.8
    assert study.target_value([0.5, 0.4, 0.6], 0.02, "min") == pytest.approx(0.51)
    assert study.target_value([0.8, 0.9, 0.7], 0.1, "max") == pytest.approx(0.72)


def test_time_ratio_is_over_the_seeds_that_reached_and_says_how_many():
    fast, slow, never = ([rec(0, "main", 0, t, val=v)] for t, v in ((4.0, 0.4), (8.0, 0.4),
                                                                     (2.0, 0.9)))
    runs = {"full_only": [slow, slow], "multires": [fast, never], "other": [never, never]}
    ratios = study.time_ratio(runs, {"metric": "mae", "mode": "min"}, 0.5)
    assert ratios == {"full_only": {"ratio": 1.0, "reached": 2, "seeds": 2},
                      "multires": {"ratio": 0.5, "reached": 1, "seeds": 2},
                      "other": {"ratio": None, "reached": 0, "seeds": 2}}
    assert "full_only 1.00x (2/2), multires 0.50x (1/2), other never (0/2)" in \
        study.ratio_line(ratios)


def test_unknown_app_or_preset_names_the_choices():
    with pytest.raises(SystemExit, match="no presets for app 'nope'.*cosmoflow"):
        study.load_preset(study.PRESETS, "nope", "small")
    with pytest.raises(SystemExit, match="no preset 'huge' for cosmoflow.*tiny, small"):
        study.load_preset(study.PRESETS, "cosmoflow", "huge")


def test_every_shipped_plan_resolves_for_its_app():
    with open(study.PRESETS) as f:
        presets = yaml.safe_load(f)
    for app, named in presets.items():
        for name in named:
            study.check_plans(app, study.load_preset(study.PRESETS, app, name), "/data")


def test_a_bad_plan_stops_the_study_before_any_data_or_run(tmp_path):
    with open(study.PRESETS) as f:
        presets = yaml.safe_load(f)
    presets["cosmoflow"]["tiny"]["plans"]["multires"] += ["--set", "stages.0.train.lr.rul=none"]
    path = tmp_path / "presets.yaml"
    path.write_text(yaml.safe_dump(presets))
    out = tmp_path / "study"
    with pytest.raises(SystemExit, match="plan 'multires' of preset cosmoflow/tiny: unknown "
                                         "config key 'stages.0.train.lr.rul'"):
        study.main(["--app", "cosmoflow", "--preset", "tiny", "--out", str(out),
                    "--presets", str(path)])
    assert not out.exists() or not any(out.iterdir())


def test_tiny_preset_writes_table_plot_and_summary(tmp_path, capsys):
    study.main(["--app", "cosmoflow", "--preset", "tiny", "--out", str(tmp_path)])
    assert "reused" not in capsys.readouterr().out
    summary = json.loads((tmp_path / "study.json").read_text())
    assert set(summary["runs"]) == {"full_only", "multires"}
    assert all(len(runs) == 2 for runs in summary["runs"].values())
    bests = [study.summarise_run(r, "mae", "min")["best"] for r in summary["runs"]["full_only"]]
    assert summary["target"] == pytest.approx(study.target_value(bests, 0.02, "min"))
    assert summary["ratios"]["full_only"] == {"ratio": 1.0, "reached": 2, "seeds": 2}
    coarse = [r for r in summary["runs"]["multires"][0] if r["stage_name"] == "coarse"]
    assert coarse and all("final_val_mae" in r for r in coarse)  # scored at full resolution
    table = (tmp_path / "study.md").read_text()
    assert "| full_only | 2 |" in table and "| multires | 2 |" in table
    assert "coarse " in table and "Median time to target relative" in table
    image = matplotlib.image.imread(tmp_path / "study.png")
    assert image.shape[0] > 100 and image.shape[1] > 100

    # --reuse reads the finished runs; a run without its finished-command record trains again.
    metrics = {p: p.stat().st_mtime_ns for p in tmp_path.glob("*-seed*/metrics.jsonl")}
    (tmp_path / "multires-seed1.command.json").unlink()
    study.main(["--app", "cosmoflow", "--preset", "tiny", "--out", str(tmp_path), "--reuse"])
    out = capsys.readouterr().out
    assert out.count("reused a finished run") == 3 and "multires seed 1: reused" not in out
    changed = [p.parent.name for p, t in metrics.items() if p.stat().st_mtime_ns != t]
    assert changed == ["multires-seed1"]
    again = json.loads((tmp_path / "study.json").read_text())
    assert again["runs"]["full_only"] == summary["runs"]["full_only"]
