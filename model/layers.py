"""DenseAtKernel: a dense layer whose matrix products run where its kernel is held."""

import tensorflow as tf
import tf_keras


def _matmul_on(device: str, inputs: tf.Tensor, kernel: tf.Tensor) -> tf.Tensor:
  """`inputs @ kernel` on `device`, and both products of its gradient there too.

  TensorFlow places a gradient op where the code that builds it runs, the worker,
  so the kernel's gradient would be computed there and sent back whole. Here the
  gradient's products stay on `device`: what crosses to the worker is the output,
  and its gradient with respect to `inputs`.
  """

  @tf.custom_gradient
  def matmul(inputs, kernel):
    with tf.device(device):
      outputs = tf.matmul(inputs, kernel)

    def grad_fn(output_grad):
      with tf.device(device):
        return (tf.matmul(output_grad, kernel, transpose_b=True),
                tf.matmul(inputs, output_grad, transpose_a=True))
    return outputs, grad_fn

  return matmul(inputs, kernel)


class DenseAtKernel(tf_keras.layers.Dense):
  """tf_keras's Dense, its products computed on the device of each kernel shard.

  Under ParameterServerStrategy a plain Dense reads its whole kernel from the
  parameter servers at every step and sends a gradient as large back. This layer
  instead sends its input to each server holding a part of the kernel (a
  ShardedVariable is split along the input axis), which multiplies there and
  returns its part of the output; the backward pass sends the output's gradient
  and receives the input's. The kernel and its gradient never leave the server,
  and the update (colocated with the variable) reads the gradient where it is.
  For a layer whose kernel is larger than the activations of a batch (the CNN's
  hidden layer: 12.8 MB of kernel against 1.7 MB of activations at a batch of
  100), that moves far fewer bytes per step, at the price of the products' CPU
  on the servers.

  The same variables, names and checkpoints as Dense, and the same values: each
  shard's read is taken once per call and used by both the forward and the
  backward products, so the gradient is that of the kernel the output was
  computed with, even if another worker updates it in between. On one device it
  computes what Dense computes.
  """

  def call(self, inputs):
    inputs = tf.convert_to_tensor(inputs, dtype=self.compute_dtype)
    if inputs.shape.rank != 2:
      raise ValueError(f"{self.name}: DenseAtKernel takes inputs of rank 2 [batch, "
                       f"features], got shape {inputs.shape}")
    kernel = self.kernel
    # A ShardedVariable's parts, in order along the input axis; else the one kernel.
    shards = list(getattr(kernel, "variables", None) or [kernel])
    parts, start = [], 0
    for shard in shards:
      rows = shard.shape[0]
      shard_inputs = inputs if len(shards) == 1 else inputs[:, start:start + rows]
      with tf.device(shard.device):
        value = shard.read_value()
      parts.append(_matmul_on(shard.device, shard_inputs, value))
      start += rows
    outputs = parts[0] if len(parts) == 1 else tf.add_n(parts)
    if self.use_bias:
      outputs = tf.nn.bias_add(outputs, self.bias)
    return self.activation(outputs) if self.activation is not None else outputs
