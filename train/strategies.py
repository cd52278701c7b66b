"""Distribution strategies and tf.distribute servers, built from a parsed TF_CONFIG."""

import time

from absl import logging
import tensorflow as tf

from common import processes
from train import cluster as cluster_lib


class ClusterTimeoutError(RuntimeError):
  """Some tasks of the cluster did not come up in time."""


def make_cluster_resolver(config: cluster_lib.ClusterConfig):
  """A resolver over the validated training cluster (master already renamed chief).

  Built from our parsed config rather than TF's own TF_CONFIG reader, so that the
  legacy `master` and an `evaluator` inside `cluster` mean what train/cluster.py says.
  """
  spec = tf.train.ClusterSpec({k: list(v) for k, v in config.cluster.items()})
  task_type = config.task_type if config.task_type != cluster_lib.EVALUATOR else None
  return tf.distribute.cluster_resolver.SimpleClusterResolver(
      spec, task_type=task_type, task_id=config.task_index if task_type else None,
      rpc_layer="grpc")


def wait_for_tasks(config: cluster_lib.ClusterConfig, timeout_s: float,
                   poll_s: float = 0.5, clock=time.monotonic, sleep=time.sleep) -> None:
  """Blocks until every other task's server accepts connections, or raises.

  A plain TCP connect: it proves a gRPC server listens there, without the TF
  runtime's own connection logic, which can wait for ever on a missing task.
  """
  pending = {f"{task_type}:{index}": address
             for task_type, addresses in config.cluster.items()
             for index, address in enumerate(addresses)
             if (task_type, index) != (config.task_type, config.task_index)}
  deadline = clock() + timeout_s
  while True:
    pending = {name: a for name, a in pending.items()
               if not processes.accepts_connections(a, poll_s)}
    if not pending:
      return
    if clock() >= deadline:
      listed = ", ".join(f"{name} at {a}" for name, a in sorted(pending.items()))
      raise ClusterTimeoutError(
          f"{len(pending)} task(s) of the cluster did not come up within "
          f"{timeout_s:g}s (--cluster_timeout): {listed}")
    sleep(poll_s)


def server_config(thread_spinning: bool = False) -> tf.compat.v1.ConfigProto:
  """The session options of a ps or worker server.

  Without spinning, a thread pool's idle threads sleep at once instead of first
  polling for work. Between one step's transfers and the next a server's threads
  are idle, and polling then takes the CPU the chief, the other tasks on the same
  cores, or a container's CPU quota would have used.
  """
  proto = tf.compat.v1.ConfigProto()
  proto.experimental.disable_thread_spinning = not thread_spinning
  return proto


def run_server(config: cluster_lib.ClusterConfig, *, thread_spinning: bool = False) -> None:
  """Serves this ps or worker task until the process is ended.

  Under parameter-server training these tasks only host variables (ps) or run the
  functions the coordinator schedules (worker); they never return on their own.
  The local launcher, Vertex AI and TFJob end them when the chief exits.
  """
  server = tf.distribute.Server(
      make_cluster_resolver(config).cluster_spec(), job_name=config.task_type,
      task_index=config.task_index, protocol="grpc",
      config=server_config(thread_spinning), start=True)
  logging.info("%s:%d serving at %s (thread pools %s)", config.task_type,
               config.task_index, server.target,
               "spin while idle" if thread_spinning else "sleep while idle")
  server.join()


def make_strategy(kind: str, config: cluster_lib.ClusterConfig, *,
                  num_ps_shards: int = 1, cluster_timeout_s: float = 120.0):
  """Builds the tf.distribute strategy `kind` (see train/cluster.py) for this task."""
  if kind == cluster_lib.ONE_DEVICE:
    return tf.distribute.get_strategy()
  resolver = make_cluster_resolver(config)
  if kind == cluster_lib.PARAMETER_SERVER:
    wait_for_tasks(config, cluster_timeout_s)
    partitioner = None
    if num_ps_shards > 1:
      # Only variables over 256 KiB are split, so biases stay whole.
      partitioner = tf.distribute.experimental.partitioners.MinSizePartitioner(
          min_shard_bytes=256 << 10, max_shards=num_ps_shards)
    return tf.distribute.ParameterServerStrategy(resolver, variable_partitioner=partitioner)
  if kind == cluster_lib.MULTI_WORKER_MIRRORED:
    # The constructor starts this task's own server; the peers are checked after,
    # since every worker waiting for the others before starting would deadlock.
    strategy = tf.distribute.MultiWorkerMirroredStrategy(cluster_resolver=resolver)
    wait_for_tasks(config, cluster_timeout_s)
    return strategy
  raise ValueError(f"unknown strategy {kind!r}")
