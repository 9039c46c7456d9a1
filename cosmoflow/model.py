"""CosmoFlow 3D CNNs regressing 4 cosmological parameters; the cube size is an argument.

Layer names are fixed (conv1, bn1, dense1, ...) so a coarse-stage model hands its weights to the
full-resolution one by name. With the `flatten` head the first dense layer's input grows with the
cube (64^3 -> 128^3), so that layer starts afresh; the `global_pool` head makes every weight
resolution-agnostic.
"""
import tensorflow as tf
from tensorflow.keras import layers

from common.layers import LeakyReLU, SeededDropout

NETWORKS = {
    # 7-conv network of the multi-resolution code: BN + ReLU + average pooling, dense 2048-256-4.
    "seed7": dict(filters=[16, 32, 64, 128, 256, 256, 256], strides=[1, 1, 1, 2, 1, 1, 1],
                  pool=[True, True, True, True, True, False, False], kernel_size=3,
                  dense=[2048, 256], dropout=0.05, l2=0.0),
    # MLPerf HPC reference: 5 conv layers from 32 filters doubling, LeakyReLU, max pooling,
    # dense 128-64-4, tanh output scaled by 1.2.
    "mlperf": dict(filters=[32, 64, 128, 256, 512], strides=[1] * 5, pool=[True] * 5,
                   kernel_size=2, dense=[128, 64], dropout=0.5, l2=0.0),
}


def network_spec(model_cfg):
    """The named network's layout with the config's non-null overrides applied."""
    if model_cfg["name"] not in NETWORKS:
        raise ValueError(f"config key 'model.name': unknown network {model_cfg['name']!r} "
                         f"(choose from {sorted(NETWORKS)})")
    spec = dict(NETWORKS[model_cfg["name"]])
    if model_cfg.get("width_scale", 1.0) != 1.0:  # thin variants for tests and smoke runs
        spec["filters"] = [max(1, int(f * model_cfg["width_scale"])) for f in spec["filters"]]
        spec["dense"] = [max(1, int(d * model_cfg["width_scale"])) for d in spec["dense"]]
    for key in ("kernel_size", "dense", "dropout", "l2"):
        if model_cfg.get(key) is not None:
            spec[key] = model_cfg[key]
    return spec


def pooling_dtype():
    """TensorFlow has float16 3D pooling kernels on GPUs only: under mixed_float16 without a
    GPU the pooling layers compute in float32 (None: the global policy)."""
    policy = tf.keras.mixed_precision.global_policy()
    if policy.compute_dtype == "float16" and not tf.config.list_logical_devices("GPU"):
        return "float32"
    return None


def build_model(model_cfg, input_shape, n_targets=4):
    """Functional Keras model for `input_shape` (D, D, D, channels)."""
    spec = network_spec(model_cfg)
    seed7 = model_cfg["name"] == "seed7"
    x = inputs = layers.Input(shape=tuple(input_shape), name="cube")
    for i, (filters, stride, pool) in enumerate(zip(spec["filters"], spec["strides"],
                                                    spec["pool"]), start=1):
        x = layers.Conv3D(filters, spec["kernel_size"], strides=stride, padding="same",
                          name=f"conv{i}")(x)
        if seed7:
            x = layers.BatchNormalization(name=f"bn{i}")(x)
            x = layers.ReLU(name=f"relu{i}")(x)
        else:
            x = LeakyReLU(name=f"act{i}")(x)
        if pool:
            pooling = layers.AveragePooling3D if seed7 else layers.MaxPool3D
            x = pooling(2, padding="same", name=f"pool{i}", dtype=pooling_dtype())(x)
    if model_cfg["head"] == "global_pool":
        x = layers.GlobalAveragePooling3D(name="global_pool")(x)
    else:
        x = layers.Flatten(name="flatten")(x)
    # L2 on the hidden dense kernels, as the MLPerf reference's convergence-point variant.
    l2 = tf.keras.regularizers.L2(spec["l2"]) if spec["l2"] else None
    for i, units in enumerate(spec["dense"], start=1):
        x = layers.Dense(units, kernel_regularizer=l2, name=f"dense{i}")(x)
        x = layers.ReLU(name=f"dense_relu{i}")(x) if seed7 else LeakyReLU(
            name=f"dense_act{i}")(x)
        x = SeededDropout(spec["dropout"], name=f"dropout{i}")(x)
    if seed7:
        outputs = layers.Dense(n_targets, name="output")(x)
    else:
        x = layers.Dense(n_targets, activation="tanh", name="output")(x)
        outputs = layers.Rescaling(1.2, name="scale_1p2")(x)  # targets lie in about [-1, 1]
    return tf.keras.Model(inputs, outputs, name=f"cosmoflow_{model_cfg['name']}")
