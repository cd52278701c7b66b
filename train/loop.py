"""The training loop: one step function, scheduled on parameter servers or run in lockstep.

Under ParameterServerStrategy the chief `coordinator.schedule`s the step function
on whichever worker is free (asynchronous, like the r0.12 Supervisor program) and
keeps calls queued ahead, checkpointing while the workers train and evaluating on
a thread of its own; under MultiWorkerMirroredStrategy or one device, every task
`strategy.run`s it in lockstep. Checkpoints, evaluations and log lines each have
their own cadence (config.checkpoint_interval, eval_steps, log_steps); export
happens at the end.
"""

import collections
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
from train import optimizer as optimizer_lib
from train.cadence import Cadence
from train.config import TrainConfig


# How long the chief keeps reading back a call whose worker was lost, while the
# coordinator runs it again on another worker (or on the lost one, once back).
LOST_WORKER_WAIT_S = 600.0


def fetch_through_worker_loss(remote, ps_markers: tuple[str, ...], *,
                              wait_s: float = LOST_WORKER_WAIT_S, clock=time.monotonic,
                              sleep=time.sleep):
  """`remote.fetch()`, read again while the call's worker is being replaced.

  The coordinator absorbs a worker's loss: it runs the call again elsewhere and
  the RemoteValue then holds that run's result. But a `fetch()` that was already
  reading the result from the lost worker raises the RPC error to the chief
  (TF 2.21 copies a scheduled call's result to the chief in whichever thread
  reads it first). Such an error names the worker; one that names a parameter
  server (`ps_markers`: "/job:ps" and the ps addresses) is a real loss and raises
  at once, as does a worker's error still there after `wait_s`.
  """
  deadline = clock() + wait_s
  delay = 0.25
  while True:
    try:
      return remote.fetch()
    except (tf.errors.UnavailableError, tf.errors.AbortedError) as e:
      message = str(e)
      if any(marker in message for marker in ps_markers) or clock() >= deadline:
        raise
      logging.warning("a worker was lost while its call's result was read back; the "
                      "coordinator runs the call again on another worker (%s: %s)",
                      type(e).__name__, message.splitlines()[0] if message else "")
      sleep(delay)
      delay = min(2 * delay, 5.0)


class Interval(NamedTuple):
  """One row of a TrainResult's history: what the interval ending at `step` did.

  A row per log line or evaluation. `elapsed_s` of a row with a test accuracy is
  when its checkpoint was saved, not when the evaluation finished: the time to
  reach that accuracy.
  """
  step: int
  elapsed_s: float                  # Since training started.
  test_accuracy: float | None       # None: not evaluated at this step, or not the chief.
  examples_per_sec: float           # Over the interval since the previous row.


@dataclasses.dataclass(frozen=True)
class TrainResult:
  step: int
  test_loss: float
  test_accuracy: float
  export_dir: str | None
  # Lockstep: training time only; under parameter servers: until the last step
  # (checkpoints and evaluations run while the workers train).
  examples_per_sec: float
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
               scratch_dir: str | None = None, num_workers: int = 1,
               clock=time.monotonic):
    self.config = config
    self.strategy = strategy
    self.coordinator = coordinator
    self.is_chief = is_chief
    self.clock = clock
    # Under parameter servers, the workers the coordinator schedules on (the
    # strategy keeps its cluster to itself).
    self.num_workers = num_workers
    with strategy.scope():
      # Under parameter servers the hidden layer's products may run on the ps; the
      # evaluation and export models are plain (same variables, same checkpoints).
      self.model = cnn.build_cnn(config.dropout_rate, config.initializers,
                                 dense_at_kernel=config.products_on_ps
                                 and coordinator is not None)
      # tf_keras's Adam with one fused kernel per variable: same slots, same checkpoints.
      self.optimizer = optimizer_lib.FusedAdam(_make_learning_rate(config))
      # Slots now, under the strategy, so that they live on the ps and restore eagerly.
      self.optimizer.build(self.model.trainable_variables)
    # What names a parameter server in an RPC error: its job and its addresses.
    resolver = getattr(strategy, "cluster_resolver", None)
    spec = resolver.cluster_spec() if resolver else tf.train.ClusterSpec({})
    self.ps_markers = ("/job:ps", *(spec.job_tasks("ps") if "ps" in spec.jobs else []))
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
    """Runs `num_steps` steps in one call: one RPC per call under parameter servers.

    A tensor `num_steps` is a loop in the graph; a Python int unrolls the steps, one
    copy each, traced once per count.
    """
    total = tf.constant(0.0)
    for _ in range(num_steps) if isinstance(num_steps, int) else tf.range(num_steps):
      per_replica = self.strategy.run(self._step_fn, args=next(iterator))
      total += self.strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)
    return total / tf.cast(num_steps, tf.float32)

  def _run_steps(self, num_steps: int) -> float:
    """Lockstep: runs `num_steps` more steps; returns the mean train loss of the last call."""
    last = None
    while num_steps > 0:
      n = min(self.config.steps_per_execution, num_steps)
      last = self.train_fn(self.iterator, tf.constant(n, tf.int32))
      num_steps -= n
    return float(last)

  def _schedule_steps(self, num_steps: int):
    """Parameter servers: queues one call of `num_steps` steps for any free worker.

    If a worker dies mid-call the call is run again elsewhere, so a few steps may
    be counted twice.

    The steps are unrolled (a Python int count): a loop in the graph whose body
    reads and updates variables on the ps is split between the two processes, and
    cost them more CPU per step than the same steps unrolled (BUILD.md, Performance).
    """
    return self.coordinator.schedule(self.train_fn, args=(self.iterator, num_steps))

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
    result = self._evaluate(self._save(step))
    if result is not None:
      logging.info("step %d/%d (warm start, before training) test_loss %.4f "
                   "test_accuracy %.4f", step, self.config.max_steps, result.loss,
                   result.accuracy)
    return step

  def _save(self, step: int) -> str:
    """Saves checkpoint number `step`, unless the latest one already is; its prefix."""
    latest = self.manager.latest_checkpoint
    if latest and latest.endswith(f"-{step}"):
      return latest
    return checkpoint_lib.save(self.manager, step)

  def _evaluate(self, checkpoint_path: str) -> evaluation.EvalResult | None:
    """Evaluates a checkpoint, read into the plain evaluation model; None off the chief.

    Reading it back, rather than copying variables, works the same for ps-hosted,
    sharded and mirrored variables, and checks every checkpoint restores. The
    result's step is the one the checkpoint holds.
    """
    if not self.is_chief:
      return None
    step = checkpoint_lib.restore_weights(self.evaluator.model, checkpoint_path)
    result = self.evaluator.evaluate(step)
    evaluation.write_eval_summaries(self.writer, result, self.evaluator.model)
    return result

  def _cadences(self) -> tuple[Cadence, Cadence, Cadence]:
    """The checkpoint, evaluation and log cadences, from the current step.

    The same on every task: under MultiWorkerMirroredStrategy saving is a collective
    step, so every worker must save (to evaluate) on the same steps as the chief.
    """
    step = int(self.step.numpy())
    return (Cadence.after(step, self.config.checkpoint_interval),
            Cadence.after(step, self.config.eval_steps),
            Cadence.after(step, self.config.log_steps))

  def _report(self, step: int, loss: float, examples_per_sec: float, elapsed: float,
              result: evaluation.EvalResult | None = None, note: str = "") -> None:
    """The log line and training summaries of a reporting interval ending at `step`."""
    config = self.config
    with self.writer.as_default(step=step):
      tf.summary.scalar("train_loss", loss)
      tf.summary.scalar("steps_per_sec", examples_per_sec / config.global_batch_size)
    eta = (max(config.max_steps - step, 0) * config.global_batch_size
           / max(examples_per_sec, 1e-9))
    line = (f"step {step}/{config.max_steps} train_loss {loss:.4f} "
            f"examples/s {examples_per_sec:.0f} elapsed {_format_duration(elapsed)} "
            f"eta {_format_duration(eta)}{note}")
    if result is not None:
      line += f" test_loss {result.loss:.4f} test_accuracy {result.accuracy:.4f}"
    logging.info(line)

  def train(self) -> TrainResult:
    """Resumes (or warm-starts), trains to config.max_steps, evaluates, exports."""
    step = self.restore()
    if step >= self.config.max_steps:  # Evaluate what was restored, and export it.
      latest = checkpoint_lib.latest_checkpoint(self.config.checkpoint_dir)
      return self._finish(step, self._evaluate(latest), [], 0.0)
    if self.coordinator is not None:
      return self._train_scheduled()
    return self._train_lockstep()

  def _train_lockstep(self) -> TrainResult:
    """One process or MultiWorkerMirrored: every task runs the steps, then what is due.

    Checkpoints and evaluations wait for the steps before them and stall the next
    ones (the replicas are one synchronous step; a thread would compete with them
    for the same cores), so examples/s counts training time only.
    """
    config = self.config
    step = int(self.step.numpy())
    checkpoints, evaluations, logs = self._cadences()
    start = self.clock()
    train_seconds, trained_steps = 0.0, 0
    row_step, row_seconds = step, 0.0
    history = []
    result = None
    while step < config.max_steps:
      t0 = self.clock()
      loss = self._run_steps(min(config.max_steps, checkpoints.next_step,
                                 evaluations.next_step, logs.next_step) - step)
      dt = self.clock() - t0
      new_step = int(self.step.numpy())
      train_seconds += dt
      row_seconds += dt
      trained_steps += new_step - step
      step = new_step
      # The last step is always checkpointed and evaluated.
      evaluate = evaluations.due(step) or step >= config.max_steps
      result = None
      if evaluate or checkpoints.due(step):
        path = self._save(step)
        checkpoints.advance(step)
        saved_at = self.clock() - start
      if evaluate:
        result = self._evaluate(path)
        evaluations.advance(step)
      if not (evaluate or logs.due(step)):
        continue
      logs.advance(step)
      elapsed = self.clock() - start
      examples_per_sec = ((step - row_step) * config.global_batch_size
                          / max(row_seconds, 1e-9))
      history.append(Interval(step, round(saved_at if evaluate else elapsed, 2),
                              result.accuracy if result else None,
                              round(examples_per_sec, 1)))
      self._report(step, loss, examples_per_sec, elapsed, result)
      row_step, row_seconds = step, 0.0
    return self._finish(step, result, history,
                        trained_steps * config.global_batch_size / max(train_seconds, 1e-9))

  def _train_scheduled(self) -> TrainResult:
    """Parameter servers: keeps the workers fed; checkpoints and evaluates as they train.

    Up to 2 x workers x steps_per_execution steps stay scheduled ahead, so that a
    worker finishing a call finds the next one queued; the chief waits for the
    oldest call only (FIFO) and joins the queue only at the end. A checkpoint is
    saved with calls in flight: its number is the step counter read just before,
    and each variable holds what the workers had applied when the saver read it
    (give or take the updates applied during the save: asynchronous workers leave
    no more exact state to save, as under the r0.12 Supervisor). The final
    checkpoint, after the join, is exact. Evaluations run on a thread of their own,
    on the newest checkpoint asked for; a history row with an accuracy keeps the
    time of its checkpoint's save, when that model existed.
    """
    config = self.config
    first = done = scheduled = int(self.step.numpy())
    checkpoints, evaluations, logs = self._cadences()
    max_in_flight = 2 * self.num_workers * config.steps_per_execution
    in_flight = collections.deque()
    history = []
    start = self.clock()
    row_done, row_time = done, start
    with evaluation.BackgroundEvaluator(self._evaluate_in_background) as background:
      while done < config.max_steps:
        while scheduled < config.max_steps and scheduled - done < max_in_flight:
          n = min(config.steps_per_execution, config.max_steps - scheduled)
          in_flight.append((self._schedule_steps(n), n))
          scheduled += n
        remote, n = in_flight.popleft()
        loss = float(fetch_through_worker_loss(remote, self.ps_markers, clock=self.clock))
        done += n
        if done >= config.max_steps:
          break
        # Cadences count the calls finished; what is logged and saved is the counter.
        evaluate = evaluations.due(done)
        if not (evaluate or checkpoints.due(done) or logs.due(done)):
          continue
        step = int(self.step.numpy())
        if evaluate or checkpoints.due(done):
          path = self._save(step)
          checkpoints.advance(done)
          saved_at = self.clock() - start
        if evaluate:
          background.submit((len(history), path, saved_at))
          evaluations.advance(done)
        elif not logs.due(done):
          continue
        logs.advance(done)
        now = self.clock()
        examples_per_sec = (done - row_done) * config.global_batch_size / max(
            now - row_time, 1e-9)
        history.append(Interval(step, round(saved_at if evaluate else now - start, 2),
                                None, round(examples_per_sec, 1)))
        self._report(step, loss, examples_per_sec, now - start,
                     note=f" in_flight {scheduled - done}")
        row_done, row_time = done, now
      self.coordinator.join()
      end = self.clock()
      step = int(self.step.numpy())
      path = self._save(step)
      saved_at = self.clock() - start
    # Closed: the evaluation in progress has finished; one still waiting was dropped.
    for (index, _, _), evaluated in background.results:
      if evaluated is not None:
        history[index] = history[index]._replace(test_accuracy=evaluated.accuracy)
    result = self._evaluate(path)
    examples_per_sec = (done - row_done) * config.global_batch_size / max(end - row_time,
                                                                           1e-9)
    history.append(Interval(step, round(saved_at, 2), result.accuracy,
                            round(examples_per_sec, 1)))
    self._report(step, loss, examples_per_sec, end - start, result)
    return self._finish(step, result, history,
                        (done - first) * config.global_batch_size / max(end - start, 1e-9))

  def _evaluate_in_background(self, request) -> evaluation.EvalResult | None:
    """The background evaluator's work: (history row, checkpoint, seconds at its save)."""
    _, path, saved_at = request
    try:
      result = self._evaluate(path)
    except (tf.errors.NotFoundError, FileNotFoundError):
      logging.warning("checkpoint %s was deleted (--keep_checkpoints) before it was "
                      "evaluated", path)
      return None
    logging.info("step %d test_loss %.4f test_accuracy %.4f (checkpoint saved at %s)",
                 result.step, result.loss, result.accuracy, _format_duration(saved_at))
    return result

  def _finish(self, step: int, result: evaluation.EvalResult | None, history: list,
              examples_per_sec: float) -> TrainResult:
    """Exports on the chief (the evaluation model holds the last checkpoint's weights)."""
    export_dir = None
    if self.is_chief and self.config.export:
      export_dir = export.export_model(self.evaluator.model, self.config.model_dir,
                                       sample_images=self.sample_images,
                                       layout=self.config.export_layout)
    self.writer.flush()
    return TrainResult(
        step=step, test_loss=result.loss if result else float("nan"),
        test_accuracy=result.accuracy if result else float("nan"), export_dir=export_dir,
        examples_per_sec=examples_per_sec, history=tuple(history))


def run_training(config: TrainConfig, strategy: tf.distribute.Strategy | None = None,
                 coordinator=None, *, is_chief: bool = True,
                 data: mnist.MnistData | None = None, num_workers: int = 1) -> TrainResult:
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
                      scratch_dir=scratch, num_workers=num_workers)
    return trainer.train()
  finally:
    if scratch:
      shutil.rmtree(scratch, ignore_errors=True)
