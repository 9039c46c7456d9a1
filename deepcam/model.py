"""DeepLabv3+ with an aligned-Xception backbone for 3-class climate segmentation, any input size.

Entry flow (stride 4 low-level features, stride 16 out), a middle flow of residual separable
blocks, an atrous exit flow (output stride 16), atrous spatial pyramid pooling (rates 6/12/18
and image pooling) and a decoder joining the stride-4 features; logits come back at the input's
size. Every resize follows the tensor's run-time shape, so one set of weights runs at 384x576
and 768x1152 and a stage switch carries every weight over. `width` scales every filter count and
`middle_blocks` sets the middle flow's depth (16 in the paper) for small test and demo networks.
"""
import tensorflow as tf
from tensorflow.keras import layers

from common.layers import SeededDropout

BN_MOMENTUM = 0.9  # PyTorch's 0.1, as the reference: moving statistics settle within an epoch


class ResizeLike(layers.Layer):
    """Bilinear resize of inputs[0] to the spatial size of inputs[1] (parameter-free)."""

    def call(self, inputs):
        x, like = inputs
        return tf.image.resize(x, tf.shape(like)[1:3], method="bilinear")


class Subsample(layers.Layer):
    """Every `stride`-th row and column. Followed by a 1x1 convolution it computes a strided 1x1
    convolution, whose filter gradient corrupts memory in oneDNN (TensorFlow 2.15) on some CPUs
    (AMD EPYC, 8 input channels, even heights)."""

    def __init__(self, stride, **kwargs):
        super().__init__(**kwargs)
        self.stride = stride

    def call(self, x):
        return x[:, ::self.stride, ::self.stride, :]

    def get_config(self):
        return {**super().get_config(), "stride": self.stride}


def build_model(model_cfg, channels=16, classes=3):
    width, rates = model_cfg["width"], model_cfg["aspp_rates"]

    def f(n):
        return max(1, int(round(n * width)))

    inputs = layers.Input(shape=(None, None, channels), name="climate")
    x = conv_bn(inputs, f(32), 3, "entry_conv1", strides=2)
    x = conv_bn(x, f(64), 3, "entry_conv2")
    x = xception_block(x, [f(128)] * 3, "entry_block1", stride=2)
    low_level = x                                                          # stride 4
    x = xception_block(x, [f(256)] * 3, "entry_block2", stride=2)
    x = xception_block(x, [f(728)] * 3, "entry_block3", stride=2)         # stride 16
    for i in range(1, model_cfg["middle_blocks"] + 1):
        x = xception_block(x, [f(728)] * 3, f"middle_block{i}", residual="identity")
    x = xception_block(x, [f(728), f(1024), f(1024)], "exit_block1", dilation=2)
    for i, n in enumerate((1536, 1536, 2048), start=1):
        x = sep_conv_bn(x, f(n), f"exit_sepconv{i}", dilation=2)
    x = aspp(x, f(256), rates)
    x = decoder(x, low_level, f(256), f(48), classes)
    logits = ResizeLike(name="logits")([x, inputs])
    return tf.keras.Model(inputs, logits, name="deeplabv3plus")


def conv_bn(x, filters, kernel, name, strides=1):
    x = layers.Conv2D(filters, kernel, strides=strides, padding="same", use_bias=False,
                      name=name)(x)
    x = layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"{name}_bn")(x)
    return layers.ReLU(name=f"{name}_relu")(x)


def sep_conv_bn(x, filters, name, strides=1, dilation=1):
    x = layers.SeparableConv2D(filters, 3, strides=strides, dilation_rate=dilation,
                               padding="same", use_bias=False, name=name)(x)
    x = layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"{name}_bn")(x)
    return layers.ReLU(name=f"{name}_relu")(x)


def xception_block(x, filters, name, stride=1, dilation=1, residual="conv"):
    """Three separable convolutions (the last strided), plus a 1x1 or identity shortcut."""
    shortcut = x
    for i, n in enumerate(filters, start=1):
        x = sep_conv_bn(x, n, f"{name}_sepconv{i}", strides=stride if i == 3 else 1,
                        dilation=dilation)
    if residual == "conv":
        if stride > 1:
            shortcut = Subsample(stride, name=f"{name}_subsample")(shortcut)
        shortcut = layers.Conv2D(filters[-1], 1, use_bias=False,
                                 name=f"{name}_shortcut")(shortcut)
        shortcut = layers.BatchNormalization(momentum=BN_MOMENTUM,
                                               name=f"{name}_shortcut_bn")(shortcut)
    return layers.Add(name=f"{name}_add")([x, shortcut])


def aspp(x, filters, rates):
    """Atrous spatial pyramid pooling: 1x1, three atrous 3x3 and image pooling, fused by 1x1."""
    branches = [conv_bn(x, filters, 1, "aspp_1x1")]
    branches += [sep_conv_bn(x, filters, f"aspp_rate{r}", dilation=r) for r in rates]
    pooled = layers.GlobalAveragePooling2D(keepdims=True, name="aspp_image_pool")(x)
    pooled = conv_bn(pooled, filters, 1, "aspp_image_conv")
    branches.append(ResizeLike(name="aspp_image_resize")([pooled, x]))
    x = layers.Concatenate(name="aspp_concat")(branches)
    x = conv_bn(x, filters, 1, "aspp_project")
    return SeededDropout(0.1, name="aspp_dropout")(x)


def decoder(x, low_level, filters, low_filters, classes):
    low = conv_bn(low_level, low_filters, 1, "decoder_low_level")
    x = ResizeLike(name="decoder_upsample")([x, low])
    x = layers.Concatenate(name="decoder_concat")([x, low])
    x = sep_conv_bn(x, filters, "decoder_sepconv1")
    x = sep_conv_bn(x, filters, "decoder_sepconv2")
    return layers.Conv2D(classes, 1, name="classifier")(x)
