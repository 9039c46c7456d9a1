"""L1 loss and image-quality metrics, per sample. Labels are (..., [HR, LR]) channel stacks, so
the JPEG input's PSNR (the baseline every user compares with) is a metric like the others."""
import tensorflow as tf

from edsr.model import clip_pixels

PEAK = 255.0


def split_label(y, depth):
    return y[..., :depth], y[..., depth:]


def psnr(a, b):
    """Per-image PSNR in dB for pixels in [0, 255]."""
    mse = tf.reduce_mean(tf.square(a - b), axis=[1, 2, 3])
    return 10.0 * tf.math.log(PEAK ** 2 / tf.maximum(mse, 1e-10)) / tf.math.log(10.0)


def make_metrics(depth):
    """(loss, {name: fn}) for images of `depth` channels; evaluation clips to [0, 255]."""

    def l1(y, pred):
        hr, _ = split_label(y, depth)
        return tf.reduce_mean(tf.abs(pred - hr), axis=[1, 2, 3])

    def restored_psnr(y, pred):
        return psnr(clip_pixels(pred), split_label(y, depth)[0])

    def jpeg_psnr(y, pred):
        hr, lr = split_label(y, depth)
        return psnr(lr, hr)

    def gain(y, pred):
        return restored_psnr(y, pred) - jpeg_psnr(y, pred)

    def ssim(y, pred):
        return tf.image.ssim(clip_pixels(pred), split_label(y, depth)[0], max_val=PEAK)

    return l1, {"psnr": restored_psnr, "psnr_jpeg": jpeg_psnr, "psnr_gain": gain, "ssim": ssim}
