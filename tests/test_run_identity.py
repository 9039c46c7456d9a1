"""Run identity: --resume and --test refuse a config that trains something else (listing the
keys), accept what a job chain changes, and keep every start's config."""
import shutil

import pytest
import yaml

from common.config import COMMON_DEFAULTS, default_config, merge_defaults, resolve
from common.run_identity import differences, trained
from conftest import REPO, read_metrics, run_ranks, write_config
from cosmoflow.make_data import write_tfrecord
from cosmoflow.train import DEFAULTS
from test_reliability import edsr_config, edsr_data

TRAIN = REPO / "cosmoflow" / "train.py"
MODEL = {"name": "mlperf", "head": "flatten", "width_scale": 0.0625, "dropout": 0.0}


def resolved(tmp_path, *assignments):
    """The defaults with `assignments` (--set syntax) applied."""
    (tmp_path / "empty.yaml").write_text("{}\n")
    return resolve(merge_defaults(COMMON_DEFAULTS, DEFAULTS), str(tmp_path / "empty.yaml"),
                   assignments)


@pytest.mark.parametrize("change", [
    "train.epochs=7", "data.root=/elsewhere", "output_dir=/other", "log.every_steps=3",
    "horovod.fusion_threshold_mb=8", "data.stage_dir=/dev/shm/x", "resume=true",
    "train.target.value=0.1", "deterministic=true", "train.lr.base=0.1"])
def test_what_a_chain_changes_is_allowed(tmp_path, change):
    assert differences(trained(resolved(tmp_path)), trained(resolved(tmp_path, change))) == []


@pytest.mark.parametrize("change, key", [
    ("model.width_scale=0.5", "stages.0.model.width_scale: 1.0 -> 0.5"),
    ("train.optimizer=adam", "stages.0.train.optimizer: 'sgd' -> 'adam'"),
    ("train.momentum=0.5", "stages.0.train.momentum: 0.9 -> 0.5"),
    ("data.resolution=64", "stages.0.data.resolution: 128 -> 64"),
    ("seed=3", "seed: 0 -> 3"),
    ("stages=[{name: a}, {name: b}]", "stages: 1 -> 2"),
])
def test_what_changes_the_training_is_listed(tmp_path, change, key):
    assert key in differences(trained(resolved(tmp_path)), trained(resolved(tmp_path, change)))


def test_a_key_added_to_the_code_since_the_recording_passes_at_its_default_only(tmp_path):
    """A checkpoint written before train.memory_equivalent_batch existed resumes with it off
    (its default: the old behaviour) and is refused with it on."""
    schema = merge_defaults(COMMON_DEFAULTS, DEFAULTS)
    recorded = trained(resolved(tmp_path))
    del recorded["stages"][0]["train"]["memory_equivalent_batch"]
    defaults = default_config(schema)
    assert differences(recorded, trained(resolved(tmp_path)), defaults=defaults) == []
    assert differences(recorded, trained(resolved(tmp_path))) != []  # without the defaults
    changed = trained(resolved(tmp_path, "train.memory_equivalent_batch=true"))
    assert differences(recorded, changed, defaults=defaults) == [
        "stages.0.train.memory_equivalent_batch: '(absent)' -> True"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("cosmo")
    write_tfrecord(str(root / "full"), size=8, train=4, val=2, seed=4)
    return root


def config(tmp_path, root, stages=None):
    return write_config(tmp_path / "c.yaml", {
        "output_dir": str(tmp_path / "out"), "model": MODEL,
        "data": {"root": str(root), "resolution": 8},
        "train": {"epochs": 1, "local_batch": 2}, "log": {"progress": False},
        **({"stages": stages} if stages else {})})


def test_resume_refuses_another_network_on_every_rank_and_accepts_a_chain(tmp_path, data):
    cfg = config(tmp_path, data / "full")
    assert run_ranks(1, [TRAIN, "--config", cfg], 120).returncode == 0
    wider = run_ranks(2, [TRAIN, "--config", cfg, "--resume", "--set",
                          "model.width_scale=0.125", "--set", "train.optimizer=adam"], 120)
    assert wider.returncode != 0
    for rank in (0, 1):
        assert f"[rank {rank}] ERROR: {tmp_path / 'out'} holds a run trained with other " \
               "settings" in wider.stdout, wider.stdout[-3000:]
    assert "stages.0.model.width_scale: 0.0625 -> 0.125" in wider.stdout
    assert "stages.0.train.optimizer: 'sgd' -> 'adam'" in wider.stdout
    moved = tmp_path / "moved"
    shutil.copytree(data / "full", moved)  # the same data at another path, more epochs
    chained = run_ranks(1, [TRAIN, "--config", cfg, "--resume", "--epochs", "2",
                            "--data-dir", moved], 120)
    assert chained.returncode == 0, chained.stdout[-3000:]
    assert [r["epoch"] for r in read_metrics(tmp_path / "out")] == [0, 1]
    out = tmp_path / "out"
    starts = sorted(p.name for p in out.glob("config-*.yaml"))
    assert starts == ["config-1.yaml", "config-2.yaml"]  # the refused start wrote nothing
    first = yaml.safe_load((out / "config-1.yaml").read_text())
    latest = yaml.safe_load((out / "config.yaml").read_text())
    assert first["train"]["epochs"] == 1 and latest["train"]["epochs"] == 2
    assert latest == yaml.safe_load((out / "config-2.yaml").read_text())


@pytest.mark.parametrize("app", ["cosmoflow", "edsr"])
def test_fewer_stages_than_the_checkpoint_is_a_clear_error(tmp_path, data, app):
    """A plan cut below the checkpoint's stage (identity of a run from older code): --resume
    and --test (EDSR has a test split) say so."""
    two = [{"name": "a"}, {"name": "b"}]
    if app == "edsr":
        make = lambda stages: edsr_config(tmp_path, edsr_data(tmp_path), stages=stages)  # noqa
    else:
        make = lambda stages: config(tmp_path, data / "full", stages=stages)  # noqa: E731
    cfg = make(two)
    train = REPO / app / "train.py"
    assert run_ranks(1, [train, "--config", cfg], 120).returncode == 0
    (tmp_path / "out" / "checkpoints" / "identity.json").unlink()
    make(two[:1])
    for flag in ("--resume", "--test") if app == "edsr" else ("--resume",):
        result = run_ranks(1, [train, "--config", cfg, flag], 120)
        assert result.returncode != 0
        assert "stage1-epoch0000 was written in stage 1, but the config plans 1 stage(s) (a)" \
            in result.stdout, (flag, result.stdout[-3000:])
