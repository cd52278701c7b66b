"""The trainer's options, as one frozen dataclass built from flags by train/task.py."""

import dataclasses


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """Everything the training loop needs; nothing in train/loop.py reads flags or env."""
  data_dir: str | None = None        # None: the vendored MNIST; "synthetic": generated.
  checkpoint_dir: str = "/tmp/logs"  # Checkpoints (the seed's --log_dir).
  tensorboard_dir: str = "/tmp/logs"
  model_dir: str | None = "/tmp/model"  # Export base: <model_dir>/<version>/. None: no export.
  export_layout: str = "versioned"   # "flat": the SavedModel in model_dir (Vertex AI).
  global_batch_size: int = 100       # Examples per optimizer update (the seed's --batch_size).
  max_steps: int = 10000
  checkpoint_interval: int = 100     # Steps between checkpoint, evaluation and log line.
  steps_per_execution: int = 10      # Steps per scheduled function / per tf.function call.
  learning_rate: float = 1e-3
  # "cosine": decays to a tenth of learning_rate at max_steps; "constant": the seed's.
  learning_rate_schedule: str = "cosine"
  dropout_rate: float = 0.5
  eval_batch_size: int = 1000
  keep_checkpoints: int = 5
  seed: int | None = None
  num_ps_shards: int = 1             # Shards per large variable under parameter servers.

  def __post_init__(self):
    for name in ("global_batch_size", "max_steps", "checkpoint_interval",
                 "steps_per_execution", "eval_batch_size", "keep_checkpoints",
                 "num_ps_shards"):
      value = getattr(self, name)
      if not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if not self.learning_rate > 0:
      raise ValueError(f"learning_rate must be positive, got {self.learning_rate!r}")
    if self.learning_rate_schedule not in ("cosine", "constant"):
      raise ValueError(f"learning_rate_schedule must be cosine or constant, got "
                       f"{self.learning_rate_schedule!r}")
    if not 0 <= self.dropout_rate < 1:
      raise ValueError(f"dropout_rate must be in [0, 1), got {self.dropout_rate!r}")
