"""DenseAtKernel under ParameterServerStrategy; tests/train/test_dense_at_kernel.py runs it.

A separate process, because connecting to a cluster changes TensorFlow's global
eager context for the rest of the process.

  python tests/train/dense_at_kernel_cluster.py

An in-process cluster of 2 ps and 2 workers, the hidden kernel split over both ps.
The CNN is built twice under the strategy, plainly and with its hidden layer a
DenseAtKernel, with the same weights; a function scheduled on a worker computes
both models' scores and gradients on one batch. Prints one JSON line: the largest
differences between the two, the devices the matrix products of one gradient
step were placed on, and the hidden kernel's shards.
"""

import collections
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tf_keras  # noqa: E402

from model import cnn  # noqa: E402
from tests.train import inprocess_cluster  # noqa: E402

BATCH_SIZE = 16


def main() -> None:
  strategy, _servers = inprocess_cluster.parameter_server_strategy()
  coordinator = tf.distribute.coordinator.ClusterCoordinator(strategy)
  with strategy.scope():
    plain = cnn.build_cnn(dropout_rate=0.0)
    at_kernel = cnn.build_cnn(dropout_rate=0.0, dense_at_kernel=True)
  at_kernel.set_weights(plain.get_weights())
  rng = np.random.default_rng(0)
  images = tf.constant(rng.random((BATCH_SIZE, cnn.IMAGE_PIXELS), np.float32))
  labels = tf.constant(rng.integers(0, cnn.NUM_CLASSES, BATCH_SIZE))

  def gradients(model):
    with tf.GradientTape() as tape:
      scores = model(images, training=True)
      loss = tf.reduce_mean(tf_keras.losses.sparse_categorical_crossentropy(labels, scores))
    return scores, tape.gradient(loss, model.trainable_variables)

  @tf.function
  def compare_fn():
    plain_scores, plain_grads = gradients(plain)
    scores, grads = gradients(at_kernel)
    return (tf.reduce_max(tf.abs(scores - plain_scores)),
            tf.reduce_max(tf.abs(plain_scores)),
            tf.stack([tf.reduce_max(tf.abs(a - b)) for a, b in zip(grads, plain_grads)]),
            tf.stack([tf.reduce_max(tf.abs(b)) for b in plain_grads]))

  score_diff, score_max, grad_diffs, grad_maxes = (
      np.asarray(v) for v in coordinator.schedule(compare_fn).fetch())

  def matmul_devices(model):
    graph = tf.function(lambda: gradients(model)).get_concrete_function().graph
    devices = (tf.DeviceSpec.from_string(op.device)
               for op in graph.get_operations() if op.type == "MatMul")
    return dict(collections.Counter(f"{d.job}:{d.task}" if d.job else "unplaced"
                                    for d in devices))

  kernel = at_kernel.get_layer("hidden").kernel
  print(json.dumps({
      "score_diff": float(score_diff), "score_max": float(score_max),
      "grad_diffs": grad_diffs.tolist(), "grad_maxes": grad_maxes.tolist(),
      "variables": [v.name for v in at_kernel.trainable_variables],
      "hidden_shard_devices": [v.device for v in kernel.variables],
      "matmul_jobs_plain": matmul_devices(plain),
      "matmul_jobs_at_kernel": matmul_devices(at_kernel),
  }))


if __name__ == "__main__":
  main()
