"""The settings of a training task, each written once, with their flags and their argv.

`TrainConfig` is what the training loop needs; `TaskOptions` is what the task does
around it. Both are the only source of train.task's flags (names, types, defaults,
help): `define_flags` generates them, `train_config_from_flags` and
`task_options_from_flags` read them back, and `task_argv` writes a config out as the
arguments of `python -m train.task`, for every program that starts a trainer.
"""

import dataclasses
from typing import Mapping

from absl import flags

from common import settings
from common.settings import setting
from train import cluster

TASK_MODULE = "train.task"  # `python -m train.task`: every task of every cluster.

# Export layouts: TensorFlow Serving's <model_dir>/<version>/saved_model.pb, or the
# SavedModel straight in <model_dir>, which Vertex AI's model upload and prebuilt
# TF prediction containers expect of AIP_MODEL_DIR.
VERSIONED = "versioned"
FLAT = "flat"

# The CNN's first weights (model/cnn.py, which this module does not import: it
# loads TensorFlow): the r0.12 program's distributions, or Keras's defaults.
INITIALIZERS = ("seed", "keras")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """Everything the training loop needs; nothing in train/loop.py reads flags or env.

  `checkpoint_dir` and `tensorboard_dir` left None become `log_dir` (the seed had
  one directory for both) when the config is made; `with_log_dir` moves all three.
  """
  # The seed's flags, by name and meaning.
  global_batch_size: int = setting(
      100, "Global batch size: examples per optimizer update (split over the replicas "
      "of a synchronous step).", flag="batch_size")
  max_steps: int = setting(10000, "Number of training steps (global).")
  checkpoint_interval: int = setting(
      100, "Interval in steps between checkpoints.", flag="checkpoint")
  log_dir: str = setting("/tmp/logs", "Directory for checkpoints and summary logs.")
  model_dir: str = setting(
      "/tmp/model", "Export base directory: the SavedModel goes to <model_dir>/<version>/ "
      "(TF Serving's layout). Default on Vertex AI: $AIP_MODEL_DIR.", env="AIP_MODEL_DIR")
  # Added.
  eval_interval: int | None = setting(
      None, "Steps between evaluations of the latest checkpoint on the whole test set, by "
      "the chief (under parameter servers on a thread of its own, while the workers "
      "train). Default: --checkpoint; 0: only the final one (a side-car evaluator may "
      "follow the checkpoints instead).", flag="eval_every")
  log_interval: int | None = setting(
      None, "Steps between log lines and training summaries. Default: --checkpoint.",
      flag="log_every")
  checkpoint_dir: str | None = setting(
      None, "Checkpoints. Default: $AIP_CHECKPOINT_DIR or --log_dir.",
      env="AIP_CHECKPOINT_DIR")
  tensorboard_dir: str | None = setting(
      None, "TensorBoard logs. Default: $AIP_TENSORBOARD_LOG_DIR or --log_dir.",
      env="AIP_TENSORBOARD_LOG_DIR")
  export: bool = setting(True, "Export a SavedModel at the end (chief only).")
  export_layout: str = setting(
      VERSIONED, "versioned: <model_dir>/<version>/, as TF Serving loads it; flat: the "
      "SavedModel in <model_dir> itself. Default: flat when the export goes to "
      "$AIP_MODEL_DIR (Vertex AI's model upload looks for saved_model.pb there).",
      choices=(VERSIONED, FLAT))
  data_dir: str | None = setting(
      None, "MNIST IDX files or mnist.npz, local or any tf.io.gfile URL (gs://); "
      "'synthetic' for generated data. Default: the copy vendored in data/mnist.")
  steps_per_execution: int = setting(
      10, "Steps per scheduled function (per RPC under parameter servers) or per "
      "tf.function call.")
  learning_rate: float = setting(1e-3, "Adam learning rate (the initial one).")
  learning_rate_schedule: str = setting(
      "cosine", "cosine: decay to a tenth of --learning_rate at --max_steps; constant: "
      "the seed's.", choices=("cosine", "constant"))
  dropout_rate: float = setting(0.5, "Dropout rate of the hidden layer while training.")
  eval_batch_size: int = setting(
      1000, "Test examples per evaluation step (the chief's and the side-car evaluator's).")
  keep_checkpoints: int = setting(5, "Checkpoints kept.")
  seed: int | None = setting(None, "Random seed (default: nondeterministic).")
  num_ps_shards: int = setting(
      1, "Split each large variable over up to this many parameter servers.")
  products_on_ps: bool = setting(
      True, "Under parameter servers: the hidden layer's matrix products run on the "
      "parameter servers that hold its kernel, so that a worker step sends and receives "
      "the layer's activations and their gradients instead of reading the whole kernel "
      "and sending its gradient back; the servers then spend the products' CPU. "
      "Off: every product on the worker, as plain data parallelism (BUILD.md, "
      "Performance, says when each pays).")
  initializers: str = setting(
      "keras", "The CNN's first weights: seed: the r0.12 program's (truncated normals "
      "of stddev 0.1 and 1.0, biases 0.1, a zero output layer); keras: Keras's defaults "
      "(Glorot uniform, zero biases).", choices=INITIALIZERS)
  warm_start_from: str | None = setting(
      None, "Start from the weights of the r0.12 program's checkpoint: a prefix, its "
      "--log_dir (the newest is taken) or its export (<model_dir>/export). Ignored when "
      "the checkpoint directory holds a checkpoint of ours: training resumes from that.")
  warm_start_optimizer: bool = setting(
      False, "With --warm_start_from: also its Adam slots, and its global step as ours.")

  def __post_init__(self):
    for name in ("checkpoint_dir", "tensorboard_dir"):
      if getattr(self, name) is None:
        object.__setattr__(self, name, self.log_dir)
    for name in ("global_batch_size", "max_steps", "checkpoint_interval",
                 "steps_per_execution", "eval_batch_size", "keep_checkpoints",
                 "num_ps_shards"):
      value = getattr(self, name)
      if not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    for name, least in (("eval_interval", 0), ("log_interval", 1)):
      value = getattr(self, name)
      if value is not None and (not isinstance(value, int) or value < least):
        raise ValueError(f"{name} must be an integer >= {least} (or None: the "
                         f"checkpoint_interval), got {value!r}")
    if not self.learning_rate > 0:
      raise ValueError(f"learning_rate must be positive, got {self.learning_rate!r}")
    if not 0 <= self.dropout_rate < 1:
      raise ValueError(f"dropout_rate must be in [0, 1), got {self.dropout_rate!r}")
    settings.check_choices(self)
    if self.warm_start_optimizer and not self.warm_start_from:
      raise ValueError("warm_start_optimizer needs warm_start_from: the legacy checkpoint "
                       "whose Adam slots and global step to start from")

  @property
  def eval_steps(self) -> int:
    """Steps between the chief's evaluations; 0: only the final one."""
    return self.checkpoint_interval if self.eval_interval is None else self.eval_interval

  @property
  def log_steps(self) -> int:
    """Steps between log lines and training summaries."""
    return self.checkpoint_interval if self.log_interval is None else self.log_interval

  def with_log_dir(self, log_dir: str) -> "TrainConfig":
    """This config with its checkpoints and TensorBoard logs in `log_dir`."""
    return dataclasses.replace(self, log_dir=log_dir, checkpoint_dir=log_dir,
                               tensorboard_dir=log_dir)


@dataclasses.dataclass(frozen=True)
class TaskOptions:
  """What a task does around training, which the training loop never reads.

  Apart from TrainConfig because none of it changes what is trained: how the
  strategy is picked, how long to wait for the cluster or for new checkpoints,
  where to write the result, or whether to stop after describing the task.
  """
  strategy: str = setting(
      cluster.AUTO, "auto: one_device without TF_CONFIG, parameter_server when the "
      "cluster has ps, multi_worker_mirrored otherwise.", choices=cluster.STRATEGIES)
  cluster_timeout_s: float = setting(
      120.0, "Seconds to wait for the other tasks of the cluster before failing.",
      flag="cluster_timeout")
  eval_timeout_s: float = setting(
      600.0, "Evaluator: seconds without a new checkpoint before it gives up.",
      flag="eval_timeout")
  result_json: str | None = setting(None, "Chief: also write the final result here.")
  dry_run: bool = setting(False, "Print the resolved role, task, strategy and cluster "
                          "as JSON and exit.")
  profiler_port: int = setting(
      0, "Serve TensorFlow's profiler on this port (0: none), for TensorBoard's Profile "
      "tab or python -m train.benchmark --profile to capture a trace of this task.")
  keep_freed_memory: bool = setting(
      True, "glibc: malloc keeps freed memory for reuse instead of returning it to the "
      "kernel, so that each step's large tensors do not page-fault again "
      "(common/allocator.py; measured in BUILD.md, Performance).")
  onednn: bool = setting(
      True, "TensorFlow's oneDNN kernels for the convolutions and matrix products, on "
      "any x86 CPU (TensorFlow itself picks them only on CPUs with AVX-512 VNNI, "
      "AVX-VNNI or AMX). Default: on, or $TF_ENABLE_ONEDNN_OPTS when set "
      "(common/onednn.py; measured in BUILD.md, Performance).",
      env="TF_ENABLE_ONEDNN_OPTS")
  thread_spinning: bool = setting(
      False, "ps, and workers under parameter servers: TensorFlow's thread pools spin "
      "while they wait for work, as TensorFlow's default. Off: they sleep, and leave "
      "the CPU to the tasks and neighbours that share the cores, or to a container's "
      "CPU quota (measured in BUILD.md, Performance).")

  def __post_init__(self):
    if not 0 <= self.profiler_port <= 65535:
      raise ValueError(f"profiler_port must be a port number in [0, 65535] (0: none), "
                       f"got {self.profiler_port!r}")


def define_flags(flag_values: flags.FlagValues = flags.FLAGS) -> None:
  """Defines train.task's flags: one per setting of TrainConfig and TaskOptions.

  absl.logging defines its own --log_dir on absl's FLAGS, for log files, which we
  never write (logs go to stderr); the seed's --log_dir replaces it.
  """
  if "log_dir" in flag_values:
    delattr(flag_values, "log_dir")
  settings.define_flags(TrainConfig, flag_values)
  settings.define_flags(TaskOptions, flag_values)


def train_config_from_flags(flag_values: flags.FlagValues,
                            environ: Mapping[str, str] | None = None,
                            **overrides) -> TrainConfig:
  """The TrainConfig of the parsed flags (those defined; the rest keep their defaults).

  `environ`'s AIP_* variables (Vertex AI) replace the directories' defaults.
  `overrides` set fields by name, over the flags.
  """
  environ = environ or {}
  values = settings.values_from_flags(TrainConfig, flag_values, environ)
  model_dir_from_vertex = ("model_dir" in flag_values and not flag_values["model_dir"].present
                           and bool(environ.get("AIP_MODEL_DIR")))
  if model_dir_from_vertex and not flag_values["export_layout"].present:
    values["export_layout"] = FLAT
  values.update(overrides)
  return TrainConfig(**values)


def task_options_from_flags(flag_values: flags.FlagValues,
                            environ: Mapping[str, str] | None = None,
                            **overrides) -> TaskOptions:
  """The TaskOptions of the parsed flags; `environ` gives the defaults of those with
  an environment variable (TF_ENABLE_ONEDNN_OPTS)."""
  return TaskOptions(**{**settings.values_from_flags(TaskOptions, flag_values, environ),
                        **overrides})


def task_argv(config: TrainConfig = TrainConfig(),
              options: TaskOptions = TaskOptions()) -> list[str]:
  """The arguments of `python -m train.task` that reproduce `config` and `options`.

  Only settings that differ from their defaults are written, so a task started
  with them still takes Vertex AI's AIP_* directories where nothing overrides them.
  """
  derived_from_log_dir = [name for name in ("checkpoint_dir", "tensorboard_dir")
                          if getattr(config, name) == config.log_dir]
  return [*settings.to_argv(config, leave_out=derived_from_log_dir),
          *settings.to_argv(options)]


def parse_task_argv(argv: list[str]) -> tuple[TrainConfig, TaskOptions]:
  """Reads `python -m train.task` arguments back; raises flags.Error or ValueError.

  AIP_* variables are not read: they are for the task itself to apply.
  """
  flag_values = flags.FlagValues()
  define_flags(flag_values)
  remaining = flag_values([TASK_MODULE, *argv])
  if len(remaining) > 1:
    raise ValueError(f"unexpected arguments {remaining[1:]}: train.task takes only flags")
  return train_config_from_flags(flag_values), task_options_from_flags(flag_values)
