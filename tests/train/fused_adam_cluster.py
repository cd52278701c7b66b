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
from train import cluster as cluster_lib  # noqa: E402
from train import data as data_lib  # noqa: E402
from train import local_cluster  # noqa: E402
from train import optimizer as optimizer_lib  # noqa: E402
from train import strategies  # noqa: E402

GLOBAL_BATCH_SIZE = 16
STEPS_PER_FUNCTION = 5
NUM_FUNCTIONS = 12


def main() -> None:
  cluster = local_cluster.make_cluster(num_ps=2, num_workers=2)
  spec = tf.train.ClusterSpec(cluster)
  # In one process the servers share its thread pools: with fewer inter-op threads
  # than workers + 1 the scheduled functions wait on each other for ever.
  server_config = tf.compat.v1.ConfigProto(inter_op_parallelism_threads=4)
  servers = [tf.distribute.Server(spec, job_name=task_type, task_index=i,
                                  config=server_config, start=True)
             for task_type in ("worker", "ps") for i in range(len(cluster[task_type]))]
  assert servers
  strategy = strategies.make_strategy(
      cluster_lib.PARAMETER_SERVER,
      cluster_lib.parse_tf_config(local_cluster.tf_config_for(cluster, "chief", 0)),
      num_ps_shards=2, cluster_timeout_s=30)
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
