import pytest
import yaml

from common.config import COMMON_DEFAULTS, Choice, ConfigError, merge_defaults, resolve
from common.multires import plan_stages

SCHEMA = merge_defaults(COMMON_DEFAULTS, {
    "data": {"root": "data", "resolution": 128, "format": Choice("tfrecord", "hdf5")},
    "model": {"name": Choice("mlperf", "seed7"), "dropout": None},
})


def write(tmp_path, cfg):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


def test_defaults_then_file_then_set_then_flags(tmp_path):
    path = write(tmp_path, {"train": {"epochs": 3, "lr": {"base": 0.5}}, "data": {"root": "/d"}})
    cfg = resolve(SCHEMA, path, ["train.lr.rule=sqrt", "model.dropout=0.2"],
                  {"epochs": 7, "output_dir": "/out"})
    assert cfg["train"]["epochs"] == 7
    assert cfg["train"]["lr"] == {**cfg["train"]["lr"], "base": 0.5, "rule": "sqrt"}
    assert cfg["train"]["local_batch"] == 8 and cfg["train"]["scaling"] == "weak"
    assert cfg["model"] == {"name": "mlperf", "dropout": 0.2}
    assert cfg["output_dir"] == "/out" and cfg["data"]["root"] == "/d"


def test_int_accepted_where_float_expected(tmp_path):
    cfg = resolve(SCHEMA, write(tmp_path, {"train": {"lr": {"base": 1}}}))
    assert cfg["train"]["lr"]["base"] == 1.0 and isinstance(cfg["train"]["lr"]["base"], float)


@pytest.mark.parametrize("content, sets, message", [
    ({"train": {"epoch": 3}}, [], "unknown config key 'train.epoch'"),
    ({"trian": {}}, [], "unknown config key 'trian'"),
    ({"train": {"epochs": "three"}}, [], "'train.epochs' expects int, got str"),
    ({"train": {"scaling": "medium"}}, [], "'train.scaling' must be one of ['weak', 'strong']"),
    ({}, ["train.lr.rul=sqrt"], "unknown config key 'train.lr.rul'"),
    ({}, ["train.progress"], "--set expects KEY=VALUE"),
    ({"stages": [{"name": "a", "train": {"epoks": 1}}]}, [], "'stages.0.train.epoks'"),
    ({"stages": [{"name": "a", "resolution": 64}]}, [], "'stages.0.resolution'"),
    ({}, ["stages.3.train.epochs=2"], "no stage '3'"),
    ({"train": {"resume": True}}, [], "unknown config key 'train.resume'"),
])
def test_errors_name_the_key(tmp_path, content, sets, message):
    with pytest.raises(ConfigError) as err:
        resolve(SCHEMA, write(tmp_path, content), sets)
    assert message in str(err.value)


def test_file_errors_name_the_file(tmp_path):
    with pytest.raises(ConfigError, match="config file not found: .*nope.yaml"):
        resolve(SCHEMA, str(tmp_path / "nope.yaml"))
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [unclosed")
    with pytest.raises(ConfigError, match="bad.yaml"):
        resolve(SCHEMA, str(bad))
    with pytest.raises(ConfigError, match=r"c.yaml: unknown config key 'x'"):
        resolve(SCHEMA, write(tmp_path, {"x": 1}))


def test_stages_override_sections_and_plain_flags_reach_every_stage(tmp_path):
    path = write(tmp_path, {
        "data": {"root": "/data/cosmo"},
        "stages": [
            {"name": "coarse", "data": {"root": "64", "resolution": 64},
             "train": {"epochs": 4, "lr": {"base": 0.01}}},
            {"name": "full", "data": {"root": "/abs/128"}, "train": {"local_batch": 2}},
        ]})
    cfg = resolve(SCHEMA, path, ["stages.1.train.epochs=9"], {"lr": 0.3, "local_batch": 16})
    coarse, full = plan_stages(cfg)
    assert (coarse.name, full.name) == ("coarse", "full")
    assert coarse.data["root"] == "/data/cosmo/64" and coarse.data["resolution"] == 64
    assert full.data["root"] == "/abs/128" and full.data["resolution"] == 128
    assert (coarse.epochs, full.epochs) == (4, 9)
    assert coarse.train["lr"]["base"] == full.train["lr"]["base"] == 0.3
    assert coarse.train["local_batch"] == full.train["local_batch"] == 16
    assert coarse.train["lr"]["rule"] == "linear"  # untouched keys keep the base value


def test_no_stages_means_one_stage(tmp_path):
    (stage,) = plan_stages(resolve(SCHEMA, write(tmp_path, {"train": {"epochs": 2}})))
    assert stage.name == "main" and stage.epochs == 2


@pytest.mark.parametrize("content, sets, flags, message", [
    ({}, [], {"local_batch": 0}, "'train.local_batch': 0 is out of range; it must be >= 1"),
    ({}, [], {"lr": -1.0}, "'train.lr.base': -1.0 is out of range; it must be >= 0"),
    ({}, [], {"epochs": -3}, "'train.epochs': -3 is out of range; it must be >= 1"),
    ({}, [], {"seed": -1}, "'seed': -1 is out of range"),
    ({"train": {"global_batch": 0}}, [], {}, "'train.global_batch': 0 is out of range"),
    ({"train": {"momentum": 1.5}}, [], {}, "'train.momentum': 1.5 is out of range; it must be "
                                           ">= 0 and <= 1"),
    ({"train": {"lr": {"warmup_epochs": -1}}}, [], {}, "'train.lr.warmup_epochs': -1"),
    ({"train": {"lr": {"decay_epochs": [32, 16]}}}, [], {},
     "'train.lr.decay_epochs' must be strictly increasing, got [32, 16]"),
    ({"train": {"lr": {"decay_epochs": [4, "x"]}}}, [], {},
     "'train.lr.decay_epochs' expects numbers"),
    ({"train": {"lr": {"decay_factors": [0.5, -0.1]}}}, [], {},
     "'train.lr.decay_factors': each value of -0.1 is out of range"),
    ({"train": {"early_stop": {"patience": -2}}}, [], {}, "'train.early_stop.patience': -2"),
    ({"log": {"checkpoint_keep": 0}}, [], {}, "'log.checkpoint_keep': 0 is out of range"),
    ({}, ["stages.0.train.epochs=0"], {}, "'stages.0.train.epochs': 0 is out of range"),
    ({"stages": [{"train": {"lr": {"base": -0.1}}}]}, [], {}, "'stages.0.train.lr.base': -0.1"),
    ({"train": {"target": {"value": "high"}}}, [], {}, "'train.target.value' expects float"),
])
def test_values_out_of_range_name_key_value_and_range(tmp_path, content, sets, flags, message):
    content = {"stages": [{"name": "only"}], **content}
    with pytest.raises(ConfigError) as err:
        resolve(SCHEMA, write(tmp_path, content), sets, flags)
    assert message in str(err.value)


def test_values_on_the_bounds_are_accepted(tmp_path):
    cfg = resolve(SCHEMA, write(tmp_path, {
        "train": {"momentum": 0, "lr": {"warmup_epochs": 0, "decay_epochs": [1, 2.5]},
                  "target": {"value": -3}}}), [], {"lr": 0.0, "local_batch": 1, "epochs": 1})
    assert cfg["train"]["lr"]["base"] == 0.0 and cfg["train"]["momentum"] == 0.0
    assert cfg["train"]["target"]["value"] == -3.0 and cfg["train"]["global_batch"] is None


def test_app_ranges_name_the_key(tmp_path):
    from cosmoflow.train import DEFAULTS
    schema = merge_defaults(COMMON_DEFAULTS, DEFAULTS)
    for bad, message in [("model.dropout=1.5", "'model.dropout': 1.5 is out of range"),
                         ("model.width_scale=0", "'model.width_scale': 0.0 is out of range; it "
                                                 "must be > 0"),
                         ("data.resolution=0", "'data.resolution': 0 is out of range")]:
        with pytest.raises(ConfigError, match=message):
            resolve(schema, write(tmp_path, {}), [bad])
