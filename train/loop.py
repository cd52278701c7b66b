"""The training loop: one step function, scheduled on parameter servers or run in lockstep.

Under ParameterServerStrategy the chief `coordinator.schedule`s the step function
on whichever worker is free (asynchronous, like the r0.12 Supervisor program);
under MultiWorkerMirroredStrategy or one device, every task `strategy.run`s it in
lockstep. Checkpoints, evaluation, summaries and export happen on the outer loop,
every `checkpoint_interval` steps.
"""

import dataclasses
import shutil
import tempfile
import time
from typing import NamedTuple

from absl import logging
import tensorflow as tf
import tf_keras

from model import cnn
from common import mnist
from train import checkpoint as checkpoint_lib
from train import data as data_lib
from train import evaluation
from train import export
from train import legacy
from train.config import TrainConfig


class Interval(NamedTuple):
  """One row of a TrainResult's history: what the interval ending at `step` did."""
  step: int
  elapsed_s: float                  # Since training started.
  test_accuracy: float | None       # None on a task that does not evaluate.
  examples_per_sec: float


@dataclasses.dataclass(frozen=True)
class TrainResult:
  step: int
  test_loss: float
  test_accuracy: float
  export_dir: str | None
  examples_per_sec: float       # Training only: evaluation and checkpoints excluded.
  history: tuple[Interval, ...] = ()

  def as_json(self) -> dict:
    """The result as JSON-able values, each history row an object with named fields."""
    return {**dataclasses.asdict(self), "history": [row._asdict() for row in self.history]}


def _format_duration(seconds: float) -> str:
  seconds = int(round(seconds))
  return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m{seconds % 60:02d}s" \
      if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"


def _make_learning_rate(config: TrainConfig):
  if config.learning_rate_schedule == "constant":
    return config.learning_rate
  # Evaluated at the optimizer's own step counter: the global step, under any strategy.
  return tf_keras.optimizers.schedules.CosineDecay(
      config.learning_rate, decay_steps=config.max_steps, alpha=0.1)


class Trainer:
  """Builds the model, optimizer and checkpoint under `strategy` and trains them.

  `config.checkpoint_dir` is the job's one checkpoint directory: every task resumes
  from it, and the chief writes to it. A MultiWorkerMirrored worker that is not the
  chief must write too (saving is a collective step): it writes its copy, which
  nothing reads, to `scratch_dir`.
  """

  def __init__(self, config: TrainConfig, strategy: tf.distribute.Strategy,
               data: mnist.MnistData, *, coordinator=None, is_chief: bool = True,
               scratch_dir: str | None = None, clock=time.monotonic):
    self.config = config
    self.strategy = strategy
    self.coordinator = coordinator
    self.is_chief = is_chief
    self.clock = clock
    with strategy.scope():
      self.model = cnn.build_cnn(config.dropout_rate, config.initializers)
      self.optimizer = tf_keras.optimizers.Adam(_make_learning_rate(config))
      # Slots now, under the strategy, so that they live on the ps and restore eagerly.
      self.optimizer.build(self.model.trainable_variables)
    # The optimizer counts its updates on the ps (or mirrored); it is the global step.
    self.step = self.optimizer.iterations
    self.checkpoint = tf.train.Checkpoint(model=self.model, optimizer=self.optimizer,
                                          step=self.step)
    if not is_chief and not scratch_dir:
      raise ValueError("a task that is not the chief needs a scratch_dir to write its "
                       f"checkpoints to, not the job's {config.checkpoint_dir}")
    self.manager = tf.train.CheckpointManager(
        self.checkpoint, config.checkpoint_dir if is_chief else scratch_dir,
        max_to_keep=config.keep_checkpoints, step_counter=self.step)
    self.evaluator = evaluation.Evaluator(data.test_images, data.test_labels,
                                          config.eval_batch_size)
    self.sample_images = mnist.to_float(data.test_images[:8])
    self.writer = (tf.summary.create_file_writer(config.tensorboard_dir)
                   if is_chief else tf.summary.create_noop_writer())
    dataset_fn = data_lib.make_dataset_fn(data.train_images, data.train_labels,
                                          config.global_batch_size, seed=config.seed)
    self.iterator = self._make_iterator(dataset_fn)
    self.train_fn = tf.function(self._train_steps)

  def _make_iterator(self, dataset_fn):
    if self.coordinator is None:
      return iter(self.strategy.distribute_datasets_from_function(dataset_fn))

    @tf.function
    def per_worker_dataset_fn():
      return self.strategy.distribute_datasets_from_function(dataset_fn)

    # Each worker builds its own pipeline: its own shuffle of the training set.
    return iter(self.coordinator.create_per_worker_dataset(per_worker_dataset_fn))

  def _step_fn(self, images, labels):
    with tf.GradientTape() as tape:
      scores = self.model(images, training=True)
      per_example = tf_keras.losses.sparse_categorical_crossentropy(labels, scores)
      # Divided by the global batch: the replicas' gradients are then summed.
      loss = tf.nn.compute_average_loss(per_example)
    grads = tape.gradient(loss, self.model.trainable_variables)
    self.optimizer.apply_gradients(zip(grads, self.model.trainable_variables))
    return loss

  def _train_steps(self, iterator, num_steps):
    """Runs `num_steps` steps in one call: one RPC per call under parameter servers."""
    total = tf.constant(0.0)
    for _ in tf.range(num_steps):
      per_replica = self.strategy.run(self._step_fn, args=next(iterator))
      total += self.strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)
    return total / tf.cast(num_steps, tf.float32)

  def _run_steps(self, num_steps: int) -> float:
    """Runs `num_steps` more steps; returns the mean train loss of the last call."""
    last = None
    while num_steps > 0:
      n = tf.constant(min(self.config.steps_per_execution, num_steps), tf.int32)
      if self.coordinator is not None:
        # Asynchronous: queued for any free worker. If a worker dies mid-call the
        # call is run again elsewhere, so a few steps may be counted twice.
        last = self.coordinator.schedule(self.train_fn, args=(self.iterator, n))
      else:
        last = self.train_fn(self.iterator, n)
      num_steps -= int(n)
    if self.coordinator is not None:
      self.coordinator.join()
      return float(last.fetch())
    return float(last)

  def restore(self) -> int:
    """Resumes from the latest checkpoint of the job (config.checkpoint_dir), if any;
    else warm-starts from the legacy checkpoint of config.warm_start_from, if given.

    Our own checkpoint wins: a job restarted after its warm start resumes where it
    was, not from the legacy weights again.
    """
    latest = checkpoint_lib.latest_checkpoint(self.config.checkpoint_dir)
    if latest:
      self.checkpoint.restore(latest).assert_existing_objects_matched()
      logging.info("Resumed from %s at step %d", latest, int(self.step.numpy()))
      if self.config.warm_start_from:
        logging.info("--warm_start_from=%s not read: %s holds our own checkpoint, which "
                     "wins", self.config.warm_start_from, self.config.checkpoint_dir)
    elif self.config.warm_start_from:
      self.warm_start()
      return self.evaluate_warm_start()
    return int(self.step.numpy())

  def warm_start(self) -> None:
    """Loads the legacy checkpoint into the model (and the optimizer's Adam state and
    step, with config.warm_start_optimizer).

    Every task that trains calls it: the chief under parameter servers, which assigns
    the variables on the ps; every worker under MultiWorkerMirroredStrategy, each
    from the same file, after which the replicas are checked to hold equal values.
    """
    optimizer = self.optimizer if self.config.warm_start_optimizer else None
    read = legacy.warm_start(self.model, self.config.warm_start_from, optimizer)
    if self.coordinator is None and self.strategy.num_replicas_in_sync > 1:
      legacy.check_replicas_equal(self.strategy, self.model.trainable_variables)
    logging.info("Warm-started from the r0.12 checkpoint %s: weights%s, step %d",
                 read.source.prefix, " and Adam's slots" if optimizer else "",
                 int(self.step.numpy()))

  def evaluate_warm_start(self) -> int:
    """Checkpoints and evaluates the warm start before any training step; its step.

    The checkpoint makes a restart resume from the warm start rather than read the
    legacy checkpoint again.
    """
    step = int(self.step.numpy())
    result = self._evaluate(step, self.manager.save(checkpoint_number=step))
    if result is not None:
      logging.info("step %d/%d (warm start, before training) test_loss %.4f "
                   "test_accuracy %.4f", step, self.config.max_steps, result.loss,
                   result.accuracy)
    return step

  def _evaluate(self, step: int, checkpoint_path: str) -> evaluation.EvalResult | None:
    """Evaluates the checkpoint just written, read into the plain evaluation model.

    Reading it back, rather than copying variables, works the same for ps-hosted,
    sharded and mirrored variables, and checks every checkpoint restores.
    """
    if not self.is_chief:
      return None
    checkpoint_lib.restore_weights(self.evaluator.model, checkpoint_path)
    result = self.evaluator.evaluate(step)
    evaluation.write_eval_summaries(self.writer, result, self.evaluator.model)
    return result

  def train(self) -> TrainResult:
    config = self.config
    step = self.restore()
    start = self.clock()
    train_seconds, trained_steps = 0.0, 0
    history = []
    result = None
    while step < config.max_steps:
      target = min(config.max_steps, (step // config.checkpoint_interval + 1)
                   * config.checkpoint_interval)
      t0 = self.clock()
      loss = self._run_steps(target - step)
      dt = self.clock() - t0
      new_step = int(self.step.numpy())
      train_seconds += dt
      trained_steps += new_step - step
      examples_per_sec = (new_step - step) * config.global_batch_size / max(dt, 1e-9)
      step = new_step
      checkpoint_path = checkpoint_lib.save(self.manager, step)
      result = self._evaluate(step, checkpoint_path)
      with self.writer.as_default(step=step):
        tf.summary.scalar("train_loss", loss)
        tf.summary.scalar("steps_per_sec", examples_per_sec / config.global_batch_size)
      elapsed = self.clock() - start
      eta = (config.max_steps - step) * config.global_batch_size / max(examples_per_sec, 1e-9)
      line = (f"step {step}/{config.max_steps} train_loss {loss:.4f} "
              f"examples/s {examples_per_sec:.0f} elapsed {_format_duration(elapsed)} "
              f"eta {_format_duration(eta)}")
      history.append(Interval(step, round(elapsed, 2), result.accuracy if result else None,
                              round(examples_per_sec, 1)))
      if result is not None:
        line += f" test_loss {result.loss:.4f} test_accuracy {result.accuracy:.4f}"
      logging.info(line)
    if result is None:  # Resumed at or past max_steps: evaluate what was restored.
      result = self._evaluate(step, checkpoint_lib.latest_checkpoint(config.checkpoint_dir))
    export_dir = None
    if self.is_chief and config.export:
      export_dir = export.export_model(self.evaluator.model, config.model_dir,
                                       sample_images=self.sample_images,
                                       layout=config.export_layout)
    self.writer.flush()
    return TrainResult(
        step=step, test_loss=result.loss if result else float("nan"),
        test_accuracy=result.accuracy if result else float("nan"), export_dir=export_dir,
        examples_per_sec=trained_steps * config.global_batch_size / max(train_seconds, 1e-9),
        history=tuple(history))


def run_training(config: TrainConfig, strategy: tf.distribute.Strategy | None = None,
                 coordinator=None, *, is_chief: bool = True,
                 data: mnist.MnistData | None = None) -> TrainResult:
  """Trains to `config.max_steps`, checkpointing, evaluating, then exporting on the chief.

  Only the chief writes to the job's checkpoint directory; other MultiWorkerMirrored
  workers write into a temporary directory that is removed at the end.
  """
  strategy = strategy or tf.distribute.get_strategy()
  if config.seed is not None:
    tf_keras.utils.set_random_seed(config.seed)
    if coordinator is not None:
      logging.warning("--seed under parameter servers: the per-worker datasets are "
                      "traced once with this seed, so every worker shuffles the "
                      "training set in the same order")
  data = data or mnist.load_mnist(config.data_dir)
  scratch = None if is_chief else tempfile.mkdtemp(prefix="mnist-worker-ckpt-")
  try:
    trainer = Trainer(config, strategy, data, coordinator=coordinator, is_chief=is_chief,
                      scratch_dir=scratch)
    return trainer.train()
  finally:
    if scratch:
      shutil.rmtree(scratch, ignore_errors=True)
