"""CosmoFlow networks and the shipped MLPerf scenarios against the reference's numbers."""
import numpy as np
import pytest
import tensorflow as tf

from common.config import COMMON_DEFAULTS, merge_defaults, resolve
from common.lr import batch_sizes, scaled_lr
from common.multires import plan_stages
from conftest import REPO
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


def test_mlperf_network_trains_without_grappler_remapper_errors(capfd):
    """Keras' LeakyReLU after a convolution made grappler print "remapper failed ...
    LeakyReluGrad" at every trace; common.layers.LeakyReLU computes the same function."""
    from common.distributed import World
    from common.layers import LeakyReLU
    from common.steps import make_train_step
    x = tf.random.normal((2, 8, 8, 8, 4))
    np.testing.assert_allclose(LeakyReLU()(x).numpy(), tf.keras.layers.LeakyReLU()(x).numpy())
    model = build_model({"name": "mlperf", "head": "global_pool", "width_scale": 0.0625,
                         "dropout": 0.0}, (8, 8, 8, 4))
    step = make_train_step(model, tf.keras.optimizers.SGD(0.01),
                           lambda y, p: tf.reduce_mean(tf.square(y - p), -1), World())
    losses = [float(step(x, tf.zeros((2, 4)), tf.ones(2))) for _ in range(3)]
    assert losses[-1] < losses[0]
    assert "remapper failed" not in capfd.readouterr().err
