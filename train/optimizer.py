"""Adam whose update of each dense variable is TensorFlow's one fused kernel."""

import tensorflow as tf
import tf_keras


class FusedAdam(tf_keras.optimizers.Adam):
  """tf_keras's Adam, updating each variable with one ResourceApplyAdam kernel.

  tf_keras's Adam updates a variable with about eight element-wise ops, each a pass
  over the variable's memory; under ParameterServerStrategy they run on the
  parameter server (the strategy colocates every update with its variable), so
  they cost the ps that many passes over 13 MB of parameters a step. The fused
  kernel, the one the r0.12 `tf.train.AdamOptimizer` ran, makes one pass, and the
  gradient is the only tensor the worker sends for it.

  Everything else is tf_keras's Adam: the same formula (the same `epsilon`, also
  with `adaptive_epsilon`), the same slot variables in the same order, so the
  same checkpoints; `iterations` counts one per `apply_gradients`, the global
  step. Sparse gradients (`tf.IndexedSlices`) and `amsgrad` take tf_keras's path.
  """

  def __init__(self, *args, use_locking: bool = True, **kwargs):
    """`use_locking`: each update holds its variable's lock for the whole kernel.

    Asynchronous workers may update a variable at the same time; with the lock
    each update applies whole, one after the other, instead of interleaving its
    reads and writes of `m`, `v` and the variable with another's.
    """
    super().__init__(*args, **kwargs)
    self.use_locking = use_locking

  def update_step(self, gradient, variable):
    if isinstance(gradient, tf.IndexedSlices) or self.amsgrad:
      return super().update_step(gradient, variable)
    dtype = variable.dtype
    local_step = tf.cast(self.iterations + 1, dtype)
    beta_1 = tf.cast(self.beta_1, dtype)
    beta_2 = tf.cast(self.beta_2, dtype)
    beta_1_power = tf.pow(beta_1, local_step)
    beta_2_power = tf.pow(beta_2, local_step)
    epsilon = tf.cast(self.epsilon, dtype)
    if self.adaptive_epsilon:
      epsilon = epsilon * tf.sqrt(1 - beta_2_power)
    index = self._index_dict[self._var_key(variable)]
    # The kernel computes lr * sqrt(1 - beta_2_power) / (1 - beta_1_power) itself,
    # as tf_keras's alpha.
    return tf.raw_ops.ResourceApplyAdam(
        var=variable.handle, m=self._momentums[index].handle,
        v=self._velocities[index].handle, beta1_power=beta_1_power,
        beta2_power=beta_2_power, lr=tf.cast(self.learning_rate, dtype), beta1=beta_1,
        beta2=beta_2, epsilon=epsilon, grad=gradient, use_locking=self.use_locking)

  def get_config(self):
    return dict(super().get_config(), use_locking=self.use_locking)
