"""TensorBoard on rank 0 (log.tensorboard): each epoch record's numbers as scalars (losses,
metrics, LR, samples/s, epoch times) and the PNGs an app writes at validation as images.

The step is the epoch's position in the whole plan (earlier stages' planned epochs + epoch), so
curves of successive stages follow each other and a resumed run writes the same steps again.
"""
import tensorflow as tf

NOT_SCALARS = ("stage", "epoch")


class TensorBoardLog:
    def __init__(self, directory, stages):
        self.writer = tf.summary.create_file_writer(directory)
        self.first_step = [sum(s.epochs for s in stages[:i]) for i in range(len(stages))]

    def step(self, stage_index, epoch):
        return self.first_step[stage_index] + epoch

    def scalars(self, record):
        step = self.step(record["stage"], record["epoch"])
        with self.writer.as_default(step=step):
            for key, value in record.items():
                if key not in NOT_SCALARS and isinstance(value, (int, float)) and not isinstance(
                        value, bool):
                    tf.summary.scalar(key, value)
        self.writer.flush()

    def image(self, stage, epoch, png_path):
        """The PNG the app wrote, under the tag images/<stage name>."""
        pixels = tf.image.decode_png(tf.io.read_file(png_path))
        with self.writer.as_default(step=self.step(stage.index, epoch)):
            tf.summary.image(f"images/{stage.name}", pixels[None])
        self.writer.flush()
