"""Optimizers by config name: SGD, Adam, AdamW and LAMB, all driven by an LR schedule.

LAMB (You et al. 2019, "Large batch optimization for deep learning") is what the MLPerf HPC
DeepCAM reference trains with. Keras 2.15 has no LAMB and tensorflow-addons is deprecated, so it
is written here on the Keras optimizer API; its slots checkpoint like Adam's.
"""
import tensorflow as tf

from common.config import with_defaults


def make_optimizer(train_cfg, schedule):
    """The optimizer named by `train.optimizer`, with `schedule` (or a float) as learning rate.

    `train.max_grad_norm` becomes Keras' global_clipnorm: apply_gradients clips the gradients it
    is given, i.e. after common/steps.py has averaged them over the ranks (so every rank clips
    alike) and unscaled them (mixed_float16: LossScaleOptimizer passes them on to this
    optimizer's apply_gradients once it has checked they are finite)."""
    train_cfg = with_defaults(train_cfg, "train")
    name = train_cfg["optimizer"]
    clip = dict(global_clipnorm=train_cfg["max_grad_norm"])
    adam_args = dict(beta_1=train_cfg["beta_1"], beta_2=train_cfg["beta_2"],
                     epsilon=train_cfg["epsilon"], **clip)
    decay = train_cfg["weight_decay"]
    if name == "sgd":
        return tf.keras.optimizers.SGD(schedule, momentum=train_cfg["momentum"],
                                       weight_decay=decay or None, **clip)
    if name == "adam":
        return tf.keras.optimizers.Adam(schedule, **adam_args)
    if name == "adamw":
        return tf.keras.optimizers.AdamW(schedule, weight_decay=decay, **adam_args)
    if name == "lamb":
        return Lamb(schedule, weight_decay_rate=decay, **adam_args)
    raise ValueError(f"config key 'train.optimizer': unknown optimizer {name!r}")


def with_loss_scaling(optimizer, precision):
    """float16 gradients underflow without loss scaling: wrap `optimizer` in Keras' dynamic
    LossScaleOptimizer for mixed_float16 (bfloat16 has float32's range and needs none)."""
    if precision != "mixed_float16":
        return optimizer
    return tf.keras.mixed_precision.LossScaleOptimizer(optimizer)


def unwrapped(optimizer):
    """The optimizer holding the slots: what a checkpoint stores, so that checkpoints load
    across precisions (the loss scale is not kept; it re-grows within a few hundred steps)."""
    return getattr(optimizer, "inner_optimizer", optimizer)


class Lamb(tf.keras.optimizers.Optimizer):
    """Adam's direction plus decoupled weight decay, scaled per variable by the trust ratio
    ||w|| / ||update||, so that every layer moves by a similar fraction of its norm whatever the
    (large) batch size. A variable or update of norm 0 gets ratio 1.
    """

    def __init__(self, learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-6,
                 weight_decay_rate=0.0, name="Lamb", **kwargs):
        # The base class's own weight_decay is not used: LAMB folds the decay into the update
        # before the trust ratio, rather than applying it separately.
        super().__init__(name=name, jit_compile=False, **kwargs)
        self._learning_rate = self._build_learning_rate(learning_rate)
        self.beta_1, self.beta_2, self.epsilon = beta_1, beta_2, epsilon
        self.weight_decay_rate = weight_decay_rate

    def build(self, var_list):
        super().build(var_list)
        if getattr(self, "_built", False):
            return
        self._built = True
        self._m = [self.add_variable_from_reference(v, "m") for v in var_list]
        self._v = [self.add_variable_from_reference(v, "v") for v in var_list]

    def update_step(self, gradient, variable):
        dtype = variable.dtype
        lr = tf.cast(self.learning_rate, dtype)
        step = tf.cast(self.iterations + 1, dtype)
        beta_1, beta_2 = tf.cast(self.beta_1, dtype), tf.cast(self.beta_2, dtype)
        index = self._index_dict[self._var_key(variable)]
        m, v = self._m[index], self._v[index]
        gradient = tf.convert_to_tensor(gradient)  # sparse gradients taken densely
        m.assign(beta_1 * m + (1 - beta_1) * gradient)
        v.assign(beta_2 * v + (1 - beta_2) * tf.square(gradient))
        m_hat = m / (1 - tf.pow(beta_1, step))
        v_hat = v / (1 - tf.pow(beta_2, step))
        update = m_hat / (tf.sqrt(v_hat) + self.epsilon) + self.weight_decay_rate * variable
        w_norm, u_norm = tf.norm(variable), tf.norm(update)
        trust = tf.where((w_norm > 0) & (u_norm > 0), w_norm / tf.maximum(u_norm, 1e-30), 1.0)
        variable.assign_sub(lr * trust * update)

    def get_config(self):
        config = super().get_config()
        config.update(learning_rate=self._serialize_hyperparameter(self._learning_rate),
                      beta_1=self.beta_1, beta_2=self.beta_2, epsilon=self.epsilon,
                      weight_decay_rate=self.weight_decay_rate)
        return config
