"""FusedAdam under ParameterServerStrategy; tests/train/test_optimizer.py runs it.

A separate process, because connecting to a cluster changes TensorFlow's global
eager context for the rest of the process.

  python tests/train/fused_adam_cluster.py

An in-process cluster of 2 ps and 2 workers, the large variables split over both ps;
the chief schedules 12 functions of 5 steps each, which the two workers run
asynchronously. Prints one JSON line: the optimizer's `iterations` after join(),
the steps scheduled, the fused kernels in one step's graph, the variable shards,
and the mean loss of the first and last function.
"""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import tensorflow as tf  # noqa: E402
import tf_keras  # noqa: E402

from common import mnist  # noqa: E402
from model import cnn  # noqa: E402
from tests.train import inprocess_cluster  # noqa: E402
from train import data as data_lib  # noqa: E402
from train import optimizer as optimizer_lib  # noqa: E402

GLOBAL_BATCH_SIZE = 16
STEPS_PER_FUNCTION = 5
NUM_FUNCTIONS = 12


def main() -> None:
  strategy, _servers = inprocess_cluster.parameter_server_strategy()
  coordinator = tf.distribute.coordinator.ClusterCoordinator(strategy)
  with strategy.scope():
    model = cnn.build_cnn()
    optimizer = optimizer_lib.FusedAdam(1e-3)
    optimizer.build(model.trainable_variables)

  def step_fn(images, labels):
    with tf.GradientTape() as tape:
      scores = model(images, training=True)
      loss = tf.nn.compute_average_loss(
          tf_keras.losses.sparse_categorical_crossentropy(labels, scores))
    grads = tape.gradient(loss, model.trainable_variables)
    optimizer.apply_gradients(zip(grads, model.trainable_variables))
    return loss

  @tf.function
  def train_fn(iterator):
    total = tf.constant(0.0)
    for _ in tf.range(STEPS_PER_FUNCTION):
      total += strategy.run(step_fn, args=next(iterator))
    return total / STEPS_PER_FUNCTION

  data = mnist.make_synthetic(400, 10)
  dataset_fn = data_lib.make_dataset_fn(data.train_images, data.train_labels,
                                        GLOBAL_BATCH_SIZE)

  @tf.function
  def per_worker_dataset_fn():
    return strategy.distribute_datasets_from_function(dataset_fn)

  iterator = iter(coordinator.create_per_worker_dataset(per_worker_dataset_fn))
  losses = [coordinator.schedule(train_fn, args=(iterator,)) for _ in range(NUM_FUNCTIONS)]
  coordinator.join()

  one_step = tf.function(step_fn).get_concrete_function(
      tf.TensorSpec([GLOBAL_BATCH_SIZE, cnn.IMAGE_PIXELS], tf.float32),
      tf.TensorSpec([GLOBAL_BATCH_SIZE], tf.int64))
  print(json.dumps({
      "iterations": int(optimizer.iterations.numpy()),
      "scheduled_steps": NUM_FUNCTIONS * STEPS_PER_FUNCTION,
      "fused_kernels_per_step": sum(op.type == "ResourceApplyAdam"
                                    for op in one_step.graph.get_operations()),
      "num_variable_shards": len(model.trainable_variables),
      "first_loss": float(losses[0].fetch()),
      "last_loss": float(losses[-1].fetch()),
  }))


if __name__ == "__main__":
  main()
