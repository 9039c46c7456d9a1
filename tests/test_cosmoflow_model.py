"""CosmoFlow networks and the shipped MLPerf scenarios against the reference's numbers."""
import re

import numpy as np
import pytest
import tensorflow as tf

from common.config import COMMON_DEFAULTS, merge_defaults, resolve
from common.lr import batch_sizes, scaled_lr
from common.multires import plan_stages
from conftest import REPO, run_ranks
from cosmoflow.model import build_model
from cosmoflow.train import DEFAULTS

SCHEMA = merge_defaults(COMMON_DEFAULTS, DEFAULTS)


def test_l2_key_adds_the_penalty_on_hidden_dense_kernels():
    cfg = {"name": "mlperf", "head": "global_pool", "width_scale": 0.125, "dropout": 0.0}
    plain = build_model(cfg, (8, 8, 8, 4))
    assert plain.losses == []
    model = build_model({**cfg, "l2": 0.01}, (8, 8, 8, 4))
    kernels = [model.get_layer(f"dense{i}").kernel.numpy() for i in (1, 2)]
    expected = 0.01 * sum(float(np.sum(k.astype(np.float64) ** 2)) for k in kernels)
    assert float(tf.add_n(model.losses)) == pytest.approx(expected, rel=1e-5)
    assert expected > 0 and len(model.losses) == 2  # not the conv or output kernels


@pytest.mark.parametrize("name, decays", [("mlperf", [32, 64]),
                                          ("mlperf_convergence", [16, 32])])
def test_mlperf_configs_follow_the_reference(name, decays):
    cfg = resolve(SCHEMA, str(REPO / "cosmoflow" / "configs" / f"{name}.yaml"))
    (stage,) = plan_stages(cfg)
    train = stage.train
    _, global_batch = batch_sizes(train["scaling"], train["local_batch"], None, 16)
    assert global_batch == 64
    assert scaled_lr(train["lr"]["base"], train["lr"]["base_batch"], global_batch,
                     train["lr"]["rule"]) == pytest.approx(0.001)
    assert train["lr"]["warmup_epochs"] == 4 and train["optimizer"] == "sgd"
    assert train["lr"]["decay_epochs"] == decays
    assert train["lr"]["decay_factors"] == [0.25, 0.125]
    assert train["target"] == {"metric": "val_mae", "value": 0.124, "mode": "min"}
    assert stage.data["compression"] == "gzip"
    if name == "mlperf_convergence":
        assert stage.model["dropout"] == 0.0 and stage.model["l2"] == 0.01


# One training step of the thin MLPerf network, printing grappler's remapper log.
REMAPPER_PROBE = """
import tensorflow as tf
from common.distributed import World
from common.steps import make_train_step
from cosmoflow.model import build_model
tf.keras.utils.set_random_seed(0)
model = build_model({"name": "mlperf", "head": "global_pool", "width_scale": 0.0625,
                     "dropout": 0.0}, (8, 8, 8, 4))
step = make_train_step(model, tf.keras.optimizers.SGD(0.05),
                       lambda y, p: tf.reduce_mean(tf.square(y - p), -1), World())
x, y = tf.random.stateless_normal((2, 8, 8, 8, 4), seed=(1, 2)), tf.fill((2, 4), 0.5)
losses = [float(step(x, y, tf.ones(2))) for _ in range(5)]
assert losses[-1] < losses[0], losses
"""


def test_mlperf_network_fuses_leaky_relu_without_grappler_remapper_errors():
    """With oneDNN (on by default on AVX-512 CPUs, forced on here) grappler's remapper fuses
    Conv3D + BiasAdd + LeakyRelu. Keras' LeakyReLU gradient reads the BiasAdd, so that fusion
    failed with "remapper failed ... LeakyReluGrad" at every trace; common.layers.LeakyReLU's
    gradient reads its output, so the fusion succeeds and nothing is printed."""
    result = run_ranks(1, ["-c", REMAPPER_PROBE], timeout=300, env={
        "TF_ENABLE_ONEDNN_OPTS": "1", "TF_CPP_MIN_LOG_LEVEL": "0",
        "TF_CPP_VMODULE": "remapper=2"})
    assert result.returncode == 0, result.stdout[-3000:]
    assert "remapper failed" not in result.stdout
    assert "Fuse Conv3D with BiasAdd and LeakyRelu" in result.stdout, result.stdout[-3000:]


def test_mlperf_training_step_runs_the_fused_leaky_relu_kernels():
    """The slow path (max(x, alpha * x): two extra passes over every activation, 1.5x per step
    at 128^3) must not come back unnoticed: the traced step holds LeakyRelu and LeakyReluGrad,
    one per activation, and no elementwise maximum."""
    from common.distributed import World
    from common.steps import make_train_step
    model = build_model({"name": "mlperf", "head": "flatten", "width_scale": 0.0625},
                        (8, 8, 8, 4))
    step = make_train_step(model, tf.keras.optimizers.SGD(0.01),
                           lambda y, p: tf.reduce_mean(tf.square(y - p), -1), World())
    spec = (tf.TensorSpec((2, 8, 8, 8, 4)), tf.TensorSpec((2, 4)), tf.TensorSpec((2,)))
    nodes = step.get_concrete_function(*spec).graph.as_graph_def().node
    ops = [node.op for node in nodes]
    assert ops.count("LeakyRelu") == 7 and ops.count("LeakyReluGrad") == 7  # 5 conv + 2 dense
    in_activations = {node.op for node in nodes
                      if re.search(r"(^|/)(dense_)?act\d+/", node.name)}
    assert in_activations <= {"LeakyRelu", "LeakyReluGrad", "Identity", "IdentityN"}, \
        in_activations


def test_mlperf_weight_names_are_unchanged():
    """Checkpoints written before stay readable: the activations hold no weights."""
    model = build_model({"name": "mlperf", "head": "flatten", "width_scale": 0.0625},
                        (8, 8, 8, 4))
    names = [w.name for w in model.weights]
    expected = [f"conv{i}/{k}:0" for i in range(1, 6) for k in ("kernel", "bias")]
    expected += [f"dense{i}/{k}:0" for i in (1, 2) for k in ("kernel", "bias")]
    expected += ["output/kernel:0", "output/bias:0"]
    assert [n for n in names if "dropout" not in n] == expected
    assert sorted(n for n in names if "dropout" in n) == [
        "dropout1/calls:0", "dropout1/seed:0", "dropout2/calls:0", "dropout2/seed:0"]
