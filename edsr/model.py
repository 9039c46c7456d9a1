"""EDSR for same-size restoration (JPEG artifact removal); any image size, one set of weights.

Head convolution, N residual blocks (conv-ReLU-conv scaled by `res_scale`), a body convolution
with a global skip from the head, and an output convolution. Pixels arrive in [0, 255]; the
network sees them centred and scaled to [-1, 1] and predicts the correction to the JPEG input,
whose output convolution starts at zero: an untrained network returns its input, so training
starts from the JPEG image's quality instead of from noise.
"""
import tensorflow as tf
from tensorflow.keras import layers

PIXEL_CENTRE = 127.5


def build_model(model_cfg, depth=1):
    """Functional Keras model mapping (H, W, depth) images in [0, 255] to the same shape."""
    filters = model_cfg["filters"]
    inputs = layers.Input(shape=(None, None, depth), name="jpeg")
    x = layers.Rescaling(1.0 / PIXEL_CENTRE, offset=-1.0, name="to_unit")(inputs)
    head = conv(filters, "head")(x)
    x = head
    for i in range(1, model_cfg["layers"] + 1):
        y = conv(filters, f"block{i}_conv1")(x)
        y = layers.ReLU(name=f"block{i}_relu")(y)
        y = conv(filters, f"block{i}_conv2")(y)
        y = layers.Rescaling(model_cfg["res_scale"], name=f"block{i}_scale")(y)
        x = layers.Add(name=f"block{i}_add")([x, y])
    x = conv(filters, "body_out")(x)
    x = layers.Add(name="global_skip")([head, x])
    correction = layers.Conv2D(depth, 3, padding="same", kernel_initializer="zeros",
                               name="output")(x)
    restored = layers.Rescaling(PIXEL_CENTRE, name="to_pixels")(correction)
    outputs = layers.Add(name="restored")([inputs, restored])
    return tf.keras.Model(inputs, outputs, name="edsr")


def conv(filters, name):
    return layers.Conv2D(filters, 3, padding="same", name=name)


def clip_pixels(images):
    """Restored images as evaluated: clipped to the valid pixel range [0, 255]."""
    return tf.clip_by_value(images, 0.0, 255.0)
