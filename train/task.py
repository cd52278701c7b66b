"""Entry point of every task: reads its role from TF_CONFIG and runs it.

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
follows checkpoints. Exit codes: 0 done, 2 bad TF_CONFIG or flags, 3 the cluster
did not come up, 4 a task failed during training.
"""

import dataclasses
import json
import os
import re
import sys

# Before TensorFlow loads: quiet its C++ start-up noise unless asked otherwise, and
# make RPCs to a lost task fail fast instead of waiting for it to come back, so that
# the coordinator sees worker failures and reschedules (TensorFlow's own advice for
# parameter-server training; see tensorflow/community RFC 355).
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("GRPC_FAIL_FAST", "use_caller")

from absl import app
from absl import flags
from absl import logging

from train import cluster
from train import local_cluster

EXIT_BAD_CONFIG = 2
EXIT_CLUSTER_TIMEOUT = 3
EXIT_TASK_FAILED = 4

# The seed's flags, by name and meaning. absl.logging defines its own --log_dir (for
# log files, which we never write: logs go to stderr); the seed's meaning wins.
if "log_dir" in flags.FLAGS:
  delattr(flags.FLAGS, "log_dir")
flags.DEFINE_integer("batch_size", 100, "Global batch size: examples per optimizer "
                     "update (split over the replicas of a synchronous step).")
flags.DEFINE_integer("max_steps", 10000, "Number of training steps (global).")
flags.DEFINE_integer("checkpoint", 100, "Interval in steps between checkpoints, "
                     "evaluations and log lines.")
flags.DEFINE_string("log_dir", "/tmp/logs", "Directory for checkpoints and summary logs.")
flags.DEFINE_string("model_dir", None, "Export base directory: the SavedModel goes to "
                    "<model_dir>/<version>/ (TF Serving's layout). Default: /tmp/model; "
                    "on Vertex AI, $AIP_MODEL_DIR itself holds saved_model.pb.")
# Added.
flags.DEFINE_string("checkpoint_dir", None, "Checkpoints. Default: $AIP_CHECKPOINT_DIR "
                    "or --log_dir.")
flags.DEFINE_string("tensorboard_dir", None, "TensorBoard logs. Default: "
                    "$AIP_TENSORBOARD_LOG_DIR or --log_dir.")
flags.DEFINE_string("data_dir", None, "MNIST IDX files or mnist.npz, local or any "
                    "tf.io.gfile URL (gs://); 'synthetic' for generated data. "
                    "Default: the copy vendored in data/mnist.")
flags.DEFINE_float("learning_rate", 1e-3, "Adam learning rate (the initial one).")
flags.DEFINE_enum("learning_rate_schedule", "cosine", ["cosine", "constant"],
                  "cosine: decay to a tenth of --learning_rate at --max_steps.")
flags.DEFINE_enum("strategy", cluster.AUTO, cluster.STRATEGIES, "auto: one_device "
                  "without TF_CONFIG, parameter_server when the cluster has ps, "
                  "multi_worker_mirrored otherwise.")
flags.DEFINE_integer("steps_per_execution", 10, "Steps per scheduled function (per "
                     "RPC under parameter servers) or per tf.function call.")
flags.DEFINE_integer("num_ps_shards", 1, "Split each large variable over up to this "
                     "many parameter servers.")
flags.DEFINE_float("cluster_timeout", 120.0, "Seconds to wait for the other tasks of "
                   "the cluster before failing.")
flags.DEFINE_float("eval_timeout", 600.0, "Evaluator: seconds without a new checkpoint "
                   "before it gives up.")
flags.DEFINE_integer("keep_checkpoints", 5, "Checkpoints kept.")
flags.DEFINE_integer("seed", None, "Random seed (default: nondeterministic).")
flags.DEFINE_bool("export", True, "Export a SavedModel at the end (chief only).")
flags.DEFINE_string("result_json", None, "Chief: also write the final result here.")
flags.DEFINE_bool("dry_run", False, "Print the resolved role, task, strategy and "
                  "cluster as JSON and exit.")

FLAGS = flags.FLAGS


def make_train_config(environ=os.environ):
  """The only reader of FLAGS: flags and Vertex AI's AIP_* variables to a TrainConfig."""
  from train import export
  from train.config import TrainConfig
  # On Vertex AI (AIP_MODEL_DIR set, no --model_dir) the SavedModel goes straight
  # into AIP_MODEL_DIR, where Vertex's model upload looks for saved_model.pb.
  on_vertex = not FLAGS.model_dir and bool(environ.get("AIP_MODEL_DIR"))
  return TrainConfig(
      data_dir=FLAGS.data_dir,
      checkpoint_dir=FLAGS.checkpoint_dir or environ.get("AIP_CHECKPOINT_DIR") or FLAGS.log_dir,
      tensorboard_dir=(FLAGS.tensorboard_dir or environ.get("AIP_TENSORBOARD_LOG_DIR")
                       or FLAGS.log_dir),
      model_dir=((FLAGS.model_dir or environ.get("AIP_MODEL_DIR") or "/tmp/model")
                 if FLAGS.export else None),
      export_layout=export.FLAT if on_vertex else export.VERSIONED,
      global_batch_size=FLAGS.batch_size,
      max_steps=FLAGS.max_steps,
      checkpoint_interval=FLAGS.checkpoint,
      steps_per_execution=FLAGS.steps_per_execution,
      learning_rate=FLAGS.learning_rate,
      learning_rate_schedule=FLAGS.learning_rate_schedule,
      keep_checkpoints=FLAGS.keep_checkpoints,
      seed=FLAGS.seed,
      num_ps_shards=FLAGS.num_ps_shards)


def name_lost_task(message: str, config: cluster.ClusterConfig) -> str:
  """Which task of the cluster an RPC error is about, from the addresses it names."""
  lost = [f"{task_type}:{i} ({address})" for task_type, addresses in config.cluster.items()
          for i, address in enumerate(addresses) if address in message]
  match = re.search(r"/job:(\w+)/replica:\d+/task:(\d+)", message)
  if not lost and match:
    lost = [f"{match.group(1)}:{match.group(2)}"]
  return " and ".join(lost) if lost else "a task of the cluster"


def run_task(config: cluster.ClusterConfig, strategy_kind: str, train_config,
             *, cluster_timeout_s: float, eval_timeout_s: float):
  """Dispatches on this task's role; returns the TrainResult on a training chief."""
  import tensorflow as tf
  from train import evaluation
  from train import loop
  from train import strategies

  role = cluster.resolve_role(config, strategy_kind)
  logging.info("Task %s:%d (%s in TF_CONFIG), role %s, strategy %s",
               config.task_type, config.task_index,
               config.written_task_type or config.task_type, role, strategy_kind)
  if role == cluster.SERVER:
    strategies.run_server(config)
    return None
  if role == cluster.SIDECAR_EVALUATOR:
    evaluation.run_sidecar_evaluator(
        train_config.checkpoint_dir, train_config.tensorboard_dir, train_config.max_steps,
        data_dir=train_config.data_dir, timeout_s=eval_timeout_s)
    return None
  strategy = strategies.make_strategy(strategy_kind, config,
                                      num_ps_shards=train_config.num_ps_shards,
                                      cluster_timeout_s=cluster_timeout_s)
  coordinator = None
  if role == cluster.COORDINATOR:
    coordinator = tf.distribute.coordinator.ClusterCoordinator(strategy)
  return loop.run_training(train_config, strategy, coordinator, is_chief=config.is_chief)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  local_cluster.die_with_launcher()
  try:
    config = cluster.parse_tf_config(os.environ.get("TF_CONFIG"))
    strategy_kind = cluster.resolve_strategy(config, FLAGS.strategy)
  except cluster.TFConfigError as e:
    print(f"error: {e}", file=sys.stderr)
    return EXIT_BAD_CONFIG
  if FLAGS.dry_run:
    print(json.dumps(cluster.describe(config, strategy_kind), sort_keys=True))
    return 0
  from common import runtime
  tf = runtime.import_tensorflow()  # First, before any module of ours imports it.
  try:
    train_config = make_train_config()
  except ValueError as e:
    print(f"error: {e}", file=sys.stderr)
    return EXIT_BAD_CONFIG
  from common import mnist
  from train import strategies
  try:
    result = run_task(config, strategy_kind, train_config,
                      cluster_timeout_s=FLAGS.cluster_timeout,
                      eval_timeout_s=FLAGS.eval_timeout)
  except mnist.DataError as e:
    print(f"error: {e}", file=sys.stderr)
    return EXIT_BAD_CONFIG
  except strategies.ClusterTimeoutError as e:
    print(f"error: {e}", file=sys.stderr)
    return EXIT_CLUSTER_TIMEOUT
  except (tf.errors.UnavailableError, tf.errors.AbortedError,
          tf.errors.CancelledError) as e:
    # Worker losses are absorbed by the coordinator; what reaches here is a lost
    # parameter server (or peer, under MultiWorkerMirrored): the job must restart,
    # and it resumes from the latest checkpoint.
    print(f"error: task {config.task_type}:{config.task_index} lost "
          f"{name_lost_task(str(e), config)} during training ({type(e).__name__}). "
          "Restart the job; it resumes from the latest checkpoint.", file=sys.stderr)
    # Skip interpreter teardown: TensorFlow would log a page of failed RPCs to the
    # lost task while unregistering its remote functions.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(EXIT_TASK_FAILED)
  if result is not None and config.is_chief:
    print(f"test accuracy {result.test_accuracy:.4f} at step {result.step}; "
          f"export {result.export_dir}")
    if FLAGS.result_json:
      with tf.io.gfile.GFile(FLAGS.result_json, "w") as f:
        json.dump(dataclasses.asdict(result), f)
  return 0


if __name__ == "__main__":
  app.run(main)
