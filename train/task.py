r"""Entry point of every task: reads its role from TF_CONFIG and runs it.

Typical usage:

  # One process (no TF_CONFIG), the seed's flags:
  python -m train.task --max_steps=2000 --checkpoint=500 --log_dir=/tmp/logs \
      --model_dir=/tmp/model

  # A task of a cluster: the same command with TF_CONFIG set, e.g. the legacy form
  TF_CONFIG='{"cluster": {"master": ["h0:2222"], "worker": ["h1:2222"],
              "ps": ["h2:2222"]}, "task": {"type": "worker", "index": 0}}' \
      python -m train.task --max_steps=2000

  # What would this task do?
  python -m train.task --dry_run

Roles: ps and worker tasks of a parameter-server cluster serve until ended; the
chief coordinates; MultiWorkerMirrored workers train in lockstep; an evaluator
follows checkpoints. Before training, the chief and the evaluator check that they
can write their directories.

Exit codes: 0 done; 2 what a restart cannot fix: a bad flag or TF_CONFIG, missing
data, a directory that cannot be written, or no space left on its device during
training; 3 the cluster did not come up; 4 a task failed during training (a
restart resumes from the latest checkpoint).

Every flag is a field of TrainConfig or TaskOptions (train/config.py), which holds
its default and help; `--help` lists them.
"""

import json
import os
import re
import sys

from absl import app
from absl import flags
from absl import logging

from common import allocator
from common import onednn
from common import processes
from common import settings
from train import cluster
from train import config as config_lib

# Exit codes say what a scheduler should do next. 2: stop, a person must fix
# something first, since a restart would fail the same way. A full disk is one of
# those: it is still full after a restart, which would redo the steps since the
# last checkpoint only to fail again (the Kubernetes specs fail the job at once on
# 2). 3 and 4: restart; the job resumes from its latest checkpoint.
EXIT_BAD_CONFIG = 2
EXIT_CLUSTER_TIMEOUT = 3
EXIT_TASK_FAILED = 4

FLAGS = flags.FLAGS


def define_flags(flag_values: flags.FlagValues = FLAGS) -> None:
  """Every setting of TrainConfig and TaskOptions, as a flag (see train/config.py)."""
  config_lib.define_flags(flag_values)


def name_lost_task(message: str, config: cluster.ClusterConfig) -> str:
  """Which task of the cluster an RPC error is about, from the addresses it names."""
  lost = [f"{task_type}:{i} ({address})" for task_type, addresses in config.cluster.items()
          for i, address in enumerate(addresses) if address in message]
  match = re.search(r"/job:(\w+)/replica:\d+/task:(\d+)", message)
  if not lost and match:
    lost = [f"{match.group(1)}:{match.group(2)}"]
  return " and ".join(lost) if lost else "a task of the cluster"


def describe_task(config: cluster.ClusterConfig, role: str, strategy_kind: str) -> str:
  """The task's first log line: which task, as TF_CONFIG named it, and what it does."""
  named = ("no TF_CONFIG: one process" if config == cluster.LOCAL
           else f"{config.written_task_type or config.task_type} in TF_CONFIG")
  return (f"Task {config.task_type}:{config.task_index} ({named}), role {role}, "
          f"strategy {strategy_kind}")


def run_task(config: cluster.ClusterConfig, strategy_kind: str,
             train_config: config_lib.TrainConfig, options: config_lib.TaskOptions):
  """Dispatches on this task's role; returns the TrainResult on a training chief."""
  import tensorflow as tf
  from train import evaluation
  from train import loop
  from train import strategies

  role = cluster.resolve_role(config, strategy_kind)
  if role == cluster.SERVER:
    strategies.run_server(config, thread_spinning=options.thread_spinning)
    return None
  if role == cluster.SIDECAR_EVALUATOR:
    evaluation.run_sidecar_evaluator(train_config, timeout_s=options.eval_timeout_s)
    return None
  strategy = strategies.make_strategy(strategy_kind, config,
                                      num_ps_shards=train_config.num_ps_shards,
                                      cluster_timeout_s=options.cluster_timeout_s)
  coordinator = None
  if role == cluster.COORDINATOR:
    coordinator = tf.distribute.coordinator.ClusterCoordinator(strategy)
  return loop.run_training(train_config, strategy, coordinator, is_chief=config.is_chief,
                           num_workers=len(config.cluster.get(cluster.WORKER, ())) or 1)


def main(argv):
  del argv  # settings.parse_flags refuses arguments that are not flags.
  processes.die_with_parent()
  try:
    options = config_lib.task_options_from_flags(FLAGS, os.environ)
    config = cluster.parse_tf_config(os.environ.get("TF_CONFIG"))
    strategy_kind = cluster.resolve_strategy(config, options.strategy)
    train_config = config_lib.train_config_from_flags(FLAGS, os.environ)
  except (cluster.TFConfigError, ValueError) as e:
    print(f"error: {e}", file=sys.stderr)
    return EXIT_BAD_CONFIG
  if options.dry_run:
    print(json.dumps(cluster.describe(config, strategy_kind), sort_keys=True))
    return 0
  role = cluster.resolve_role(config, strategy_kind)
  logging.info(describe_task(config, role, strategy_kind))
  # Before TensorFlow loads: make RPCs to a lost task fail fast instead of waiting
  # for it to come back, so that the coordinator sees worker failures and
  # reschedules (TensorFlow's own advice for parameter-server training; see
  # tensorflow/community RFC 355).
  os.environ.setdefault("GRPC_FAIL_FAST", "use_caller")
  if options.keep_freed_memory:
    allocator.keep_freed_memory()  # Before TensorFlow allocates anything.
  onednn.set_onednn(options.onednn)  # Before TensorFlow loads: it reads it then.
  logging.info("CPU kernels: %s", "oneDNN's" if options.onednn
               else f"Eigen's (--noonednn or {onednn.ENV_VAR}=0)")
  from common import runtime
  tf = runtime.import_tensorflow()  # First, before any module of ours imports it.
  if options.profiler_port:
    # Traces are captured from outside (TensorBoard, train.benchmark --profile), on
    # any role: a ps's or worker's ops run in its own process.
    tf.profiler.experimental.server.start(options.profiler_port)
  from common import mnist
  from train import legacy
  from train import storage
  from train import strategies
  outputs = storage.outputs_of(train_config, role, is_chief=config.is_chief,
                               result_json=options.result_json)
  try:
    storage.check_outputs(outputs)  # Now, rather than at the first checkpoint or export.
  except storage.UnwritableError as e:
    print(f"error: {e}", file=sys.stderr)
    return EXIT_BAD_CONFIG
  try:
    result = run_task(config, strategy_kind, train_config, options)
    if result is not None and config.is_chief and options.result_json:
      with tf.io.gfile.GFile(options.result_json, "w") as f:
        json.dump(result.as_json(), f)
  except (mnist.DataError, legacy.LegacyCheckpointError) as e:
    print(f"error: {e}", file=sys.stderr)
    return EXIT_BAD_CONFIG
  except strategies.ClusterTimeoutError as e:
    print(f"error: {e}", file=sys.stderr)
    return EXIT_CLUSTER_TIMEOUT
  except (tf.errors.UnavailableError, tf.errors.AbortedError,
          tf.errors.CancelledError) as e:
    # Worker losses are absorbed by the coordinator and by the loop's reads of
    # results (train/loop.py); what reaches here is a lost parameter server (or
    # peer, under MultiWorkerMirrored): the job must restart, and it resumes from
    # the latest checkpoint.
    print(f"error: task {config.task_type}:{config.task_index} lost "
          f"{name_lost_task(str(e), config)} during training ({type(e).__name__}). "
          "Restart the job; it resumes from the latest checkpoint.", file=sys.stderr)
    _exit_now(EXIT_TASK_FAILED)
  except (tf.errors.OpError, OSError) as e:
    if not storage.is_disk_full(e):
      raise
    print(f"error: {storage.describe_disk_full(e, outputs)}. Free space there or choose "
          "another directory; started again, the job resumes from its latest checkpoint.",
          file=sys.stderr)
    _exit_now(EXIT_BAD_CONFIG)
  if result is not None and config.is_chief:
    print(f"test accuracy {result.test_accuracy:.4f} at step {result.step}; "
          f"export {result.export_dir}")
  return 0


def _exit_now(code: int) -> None:
  """Exits at once, skipping interpreter teardown: after a failure in a cluster,
  TensorFlow would log a page of failed RPCs to the lost or stopped tasks while
  unregistering its remote functions."""
  sys.stdout.flush()
  sys.stderr.flush()
  os._exit(code)


if __name__ == "__main__":
  define_flags()
  app.run(main, flags_parser=settings.parse_flags)
