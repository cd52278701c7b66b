"""Runs the trainer against an in-process cluster; tests/train/test_distributed.py runs it.

A separate process, because connecting to a cluster changes TensorFlow's global
eager context for the rest of the process.

  python tests/train/inprocess_cluster.py parameter_server WORKDIR
  python tests/train/inprocess_cluster.py multi_worker_mirrored WORKDIR

Prints one JSON line: the result, the checkpoint's step, and what a plain TF1
session loader returns for keys [7, 3] from the export.
"""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from common import mnist  # noqa: E402
from train import cluster as cluster_lib  # noqa: E402
from train import export  # noqa: E402
from train import local_cluster  # noqa: E402
from train import loop  # noqa: E402
from train import strategies  # noqa: E402
from train.config import TrainConfig  # noqa: E402



def parameter_server_strategy():
  """ParameterServerStrategy over 2 ps and 2 workers served by this process, the large
  variables split over both ps; returns it and the servers, to keep them alive."""
  cluster = local_cluster.make_cluster(num_ps=2, num_workers=2)
  spec = tf.train.ClusterSpec(cluster)
  # In one process the servers share its thread pools: with fewer inter-op threads
  # than workers + 1 the scheduled functions wait on each other for ever.
  server_config = tf.compat.v1.ConfigProto(inter_op_parallelism_threads=4)
  servers = [tf.distribute.Server(spec, job_name=task_type, task_index=i,
                                  config=server_config, start=True)
             for task_type in ("worker", "ps") for i in range(len(cluster[task_type]))]
  cluster_config = cluster_lib.parse_tf_config(local_cluster.tf_config_for(cluster, "chief", 0))
  strategy = strategies.make_strategy(cluster_lib.PARAMETER_SERVER, cluster_config,
                                      num_ps_shards=2, cluster_timeout_s=30)
  return strategy, servers


def main(kind: str, workdir: str) -> None:
  config = TrainConfig(checkpoint_dir=os.path.join(workdir, "logs"),
                       tensorboard_dir=os.path.join(workdir, "tb"),
                       model_dir=os.path.join(workdir, "model"), global_batch_size=16,
                       max_steps=24, checkpoint_interval=12, steps_per_execution=5,
                       eval_batch_size=100, num_ps_shards=2)
  data = mnist.make_synthetic(400, 100)
  coordinator = None
  if kind == cluster_lib.PARAMETER_SERVER:
    strategy, _servers = parameter_server_strategy()
    coordinator = tf.distribute.coordinator.ClusterCoordinator(strategy)
  else:
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
  result = loop.run_training(config, strategy, coordinator, data=data, num_workers=2)
  reader = tf.train.load_checkpoint(tf.train.latest_checkpoint(config.checkpoint_dir))
  out = export.run_session_loader(result.export_dir, np.array([7, 3]),
                                  np.zeros((2, 784), np.float32))
  print(json.dumps({
      "step": result.step,
      "checkpoint_step": int(reader.get_tensor("step/.ATTRIBUTES/VARIABLE_VALUE")),
      "export_dir": result.export_dir,
      "keys": out["key"].tolist(),
      "num_shards_of_hidden_kernel": _num_shards(strategy),
  }))


def _num_shards(strategy) -> int:
  """How many pieces the largest variable was split into under this strategy."""
  from model import cnn
  with strategy.scope():
    model = cnn.build_cnn()
  kernel = model.get_layer("hidden").kernel
  return len(getattr(kernel, "variables", [kernel]))


if __name__ == "__main__":
  main(sys.argv[1], sys.argv[2])
