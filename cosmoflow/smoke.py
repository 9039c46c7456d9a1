"""Tiny synthetic data and size-shrinking overrides that run a shipped config in seconds.

The test suite runs every YAML in cosmoflow/configs/ through `tiny_args`: the data is written in
the format the config reads, and only sizes change (cube edge, network width, batch, epochs), so
the config's own optimizer, schedule, early-stop and target settings run exactly as shipped.
"""
import os

from cosmoflow.make_data import write_hdf5, write_raw, write_tfrecord

TINY_EDGE = 16  # the largest stage's cube edge; smaller stages keep their ratio to it


def tiny_args(cfg, workdir):
    """Write tiny data for the YAML dict `cfg` under `workdir`; return train.py arguments.

    The run's output folder is `workdir/out`.
    """
    stages = cfg.get("stages") or [{}]
    base_data = cfg.get("data", {})
    datas = [{**base_data, **stage.get("data", {})} for stage in stages]
    largest = max(int(d.get("resolution", 128)) for d in datas)
    args = ["--data-dir", os.path.join(workdir, "data"), "--output-dir",
            os.path.join(workdir, "out"), "--epochs", "1", "--local-batch", "2",
            "--set", "model.width_scale=0.125", "--set", "log.progress=false"]
    for i, data in enumerate(datas):
        edge = max(4, TINY_EDGE * int(data.get("resolution", 128)) // largest)
        root = os.path.join(workdir, "data", str(stages[i].get("data", {}).get("root", "")))
        write_format(data, root, edge)
        key = f"stages.{i}.data.resolution" if cfg.get("stages") else "data.resolution"
        args += ["--set", f"{key}={edge}"]
    return args


def write_format(data, root, edge):
    fmt = data.get("format", "tfrecord")
    if fmt == "tfrecord":
        write_tfrecord(root, size=edge, train=8, val=4, seed=1,
                       gzip=data.get("compression") == "gzip")
    elif fmt == "hdf5":
        if data.get("split_file", "split.yaml") != "split.yaml":
            raise ValueError("smoke data writes split.yaml; the config names another split file")
        write_hdf5(root, size=edge, train=8, val=4, test=4, seed=1, samples_per_file=4,
                   prefix=data.get("prefix", "cosmo"))
    elif fmt == "raw":
        write_raw(root, size=2 * edge, train=1, val=1, seed=1)
    else:
        raise ValueError(f"no tiny writer for data.format {fmt!r}")
