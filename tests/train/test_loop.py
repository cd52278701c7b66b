"""Tests for train/loop.py in one process: exact steps, checkpoints, resume, summaries."""

import glob
import os
import threading

import pytest
import tensorflow as tf

from common import mnist
from model import layers
from train import loop
from train.config import TrainConfig


@pytest.fixture(scope="module")
def data():
  return mnist.make_synthetic(600, 200)


def _config(tmp_path, **overrides):
  values = dict(checkpoint_dir=str(tmp_path / "logs"), tensorboard_dir=str(tmp_path / "tb"),
                model_dir=str(tmp_path / "model"), global_batch_size=20, max_steps=30,
                checkpoint_interval=10, steps_per_execution=4, eval_batch_size=64)
  values.update(overrides)
  return TrainConfig(**values)


def _checkpoint_step(directory):
  reader = tf.train.load_checkpoint(tf.train.latest_checkpoint(directory))
  return int(reader.get_tensor("step/.ATTRIBUTES/VARIABLE_VALUE"))


def _summary_tags(directory):
  tags = set()
  for path in glob.glob(os.path.join(directory, "events.out.tfevents.*")):
    for event in tf.compat.v1.train.summary_iterator(path):
      tags.update(v.tag for v in event.summary.value)
  return tags


def test_trains_exact_steps_checkpoints_and_exports(tmp_path, data):
  result = loop.run_training(_config(tmp_path), data=data)
  assert result.step == 30
  assert _checkpoint_step(tmp_path / "logs") == 30
  assert [h.step for h in result.history] == [10, 20, 30]
  assert result.export_dir == str(tmp_path / "model" / "1")
  assert os.path.exists(os.path.join(result.export_dir, "saved_model.pb"))
  assert 0.0 <= result.test_accuracy <= 1.0 and result.examples_per_sec > 0
  assert {"train_loss", "test_loss", "test_accuracy", "steps_per_sec", "conv1/filters",
          "conv2/filters"} <= _summary_tags(tmp_path / "tb")


def test_learns_the_synthetic_data(tmp_path, data):
  result = loop.run_training(_config(tmp_path, max_steps=60, checkpoint_interval=60,
                                     export=False), data=data)
  assert result.export_dir is None
  assert result.test_accuracy > 0.9


def test_resumes_from_the_latest_checkpoint(tmp_path, data):
  loop.run_training(_config(tmp_path, max_steps=20, export=False), data=data)
  result = loop.run_training(_config(tmp_path, max_steps=35), data=data)
  # Resumed at 20: the next intervals end at 30 and at max_steps.
  assert [h.step for h in result.history] == [30, 35]
  assert _checkpoint_step(tmp_path / "logs") == 35


def test_restart_after_the_end_only_evaluates_and_exports(tmp_path, data):
  first = loop.run_training(_config(tmp_path, max_steps=10), data=data)
  again = loop.run_training(_config(tmp_path, max_steps=10), data=data)
  assert again.step == 10 and again.history == ()
  assert again.test_accuracy == pytest.approx(first.test_accuracy)
  assert os.path.basename(again.export_dir) == "2"


def test_a_non_chief_writes_nothing_to_the_real_directories(tmp_path, data):
  result = loop.run_training(_config(tmp_path, max_steps=10), data=data, is_chief=False)
  assert result.export_dir is None
  for name in ("logs", "tb", "model"):
    assert not (tmp_path / name).exists() or not os.listdir(tmp_path / name), name


def _checkpoint_numbers(directory):
  state = tf.train.get_checkpoint_state(str(directory))
  return [int(path.rsplit("-", 1)[1]) for path in state.all_model_checkpoint_paths]


def _evaluated_steps(result):
  return [h.step for h in result.history if h.test_accuracy is not None]


@pytest.mark.parametrize("intervals,checkpoints,rows,evaluated", [
    # Checkpoint, evaluation and log line each on their own cadence.
    (dict(checkpoint_interval=10, eval_interval=20, log_interval=5),
     [10, 20, 30, 40], [5, 10, 15, 20, 25, 30, 35, 40], [20, 40]),
    # Evaluations that are not on a checkpoint's step save one first.
    (dict(checkpoint_interval=20, eval_interval=15, log_interval=40),
     [15, 20, 30, 40], [15, 30, 40], [15, 30, 40]),
    # 0: only the final evaluation.
    (dict(checkpoint_interval=10, eval_interval=0, log_interval=20),
     [10, 20, 30, 40], [20, 40], [40]),
])
def test_lockstep_cadences(tmp_path, data, intervals, checkpoints, rows, evaluated):
  result = loop.run_training(_config(tmp_path, max_steps=40, steps_per_execution=5,
                                     keep_checkpoints=10, export=False, **intervals),
                             data=data)
  assert result.step == 40
  assert _checkpoint_numbers(tmp_path / "logs") == checkpoints
  assert [h.step for h in result.history] == rows
  assert _evaluated_steps(result) == evaluated


class _RemoteValue:
  def __init__(self, coordinator, fn, args):
    self._coordinator, self._fn, self.args = coordinator, fn, args
    self.value = None

  def run(self):
    self.value = self._fn(*self.args)

  def fetch(self):
    self._coordinator.run_until(self)
    return self.value.numpy()


class FakeCoordinator:
  """A ClusterCoordinator whose one "worker" is this process: each scheduled call
  runs, in order, when it or a later one is fetched, so that the calls a test sees
  queued are those the loop scheduled ahead.

  `on_join` runs when the loop joins the queue, before it returns.
  """

  def __init__(self, strategy):
    self.strategy = strategy
    self.queue = []
    self.most_steps_queued = 0
    self.scheduled_counts = []  # The step count of each call, as scheduled.
    self.on_join = lambda: None

  def create_per_worker_dataset(self, dataset_fn):
    return dataset_fn()

  def schedule(self, fn, args):
    value = _RemoteValue(self, fn, args)
    self.scheduled_counts.append(args[1])
    self.queue.append(value)
    self.most_steps_queued = max(self.most_steps_queued,
                                 sum(int(v.args[1]) for v in self.queue))
    return value

  def run_until(self, value):
    while value in self.queue:
      self.queue.pop(0).run()

  def join(self):
    if self.queue:
      self.run_until(self.queue[-1])
    self.on_join()


def _scheduled_trainer(tmp_path, data, num_workers=1, **overrides):
  config = _config(tmp_path, **overrides)
  strategy = tf.distribute.get_strategy()
  coordinator = FakeCoordinator(strategy)
  return loop.Trainer(config, strategy, data, coordinator=coordinator,
                      num_workers=num_workers), coordinator


@pytest.mark.parametrize("products_on_ps, scheduled, at_kernel", [
    (True, True, True), (False, True, False), (True, False, False)])
def test_hidden_layer_runs_at_its_kernel_only_when_scheduled_and_asked(
    tmp_path, data, products_on_ps, scheduled, at_kernel):
  config = _config(tmp_path, products_on_ps=products_on_ps)
  strategy = tf.distribute.get_strategy()
  trainer = loop.Trainer(config, strategy, data,
                         coordinator=FakeCoordinator(strategy) if scheduled else None)
  assert isinstance(trainer.model.get_layer("hidden"), layers.DenseAtKernel) == at_kernel
  # The chief evaluates (and exports) a plain model, whatever trains.
  assert not isinstance(trainer.evaluator.model.get_layer("hidden"), layers.DenseAtKernel)


def test_scheduled_loop_keeps_calls_queued_and_ends_exact(tmp_path, data):
  trainer, coordinator = _scheduled_trainer(
      tmp_path, data, num_workers=2, max_steps=40, steps_per_execution=4,
      checkpoint_interval=10,
      eval_interval=0, log_interval=20, keep_checkpoints=10, export=False)
  result = trainer.train()
  # 2 x workers x steps_per_execution steps queued ahead, never more.
  assert coordinator.most_steps_queued == 16
  assert result.step == 40 and _checkpoint_step(tmp_path / "logs") == 40
  # Cadences count finished calls of 4 steps: 12 crosses 10, 20, 32 crosses 30.
  assert _checkpoint_numbers(tmp_path / "logs") == [12, 20, 32, 40]
  assert [h.step for h in result.history] == [20, 40] and _evaluated_steps(result) == [40]


def test_scheduled_loop_trains_on_while_an_evaluation_runs(tmp_path, data):
  """The first evaluation is held until the loop joins: every step is trained while
  it waits, and it then completes on the weights of the checkpoint it was given."""
  trainer, coordinator = _scheduled_trainer(
      tmp_path, data, max_steps=40, steps_per_execution=5, checkpoint_interval=10,
      keep_checkpoints=10, export=False)
  started, release = threading.Event(), threading.Event()
  evaluations = []  # (checkpoint's step, step counter when the evaluation completed)
  evaluate = trainer.evaluator.evaluate

  def held_evaluate(step):
    if not evaluations:
      started.set()
      assert release.wait(60)
    result = evaluate(step)
    evaluations.append((step, int(trainer.step.numpy())))
    return result

  def on_join():
    assert started.wait(60)
    release.set()

  trainer.evaluator.evaluate = held_evaluate
  coordinator.on_join = on_join
  result = trainer.train()
  first_step, counter_when_done = evaluations[0]
  assert first_step in (10, 20, 30) and counter_when_done == 40
  assert evaluations[-1] == (40, 40) and result.step == 40
  # Its row has its accuracy; requests that arrived while it ran replaced one another.
  assert [h.step for h in result.history] == [10, 20, 30, 40]
  assert _evaluated_steps(result)[0] == first_step and _evaluated_steps(result)[-1] == 40


def _op_types(concrete_function):
  return {op.type for op in concrete_function.graph.get_operations()}


def test_scheduled_calls_unroll_their_steps_and_lockstep_calls_loop(tmp_path, data):
  """Under parameter servers a loop over variables on the ps would be split between
  the processes: the scheduled count is a Python int, and the steps are unrolled."""
  trainer, coordinator = _scheduled_trainer(tmp_path, data, max_steps=10,
                                            steps_per_execution=4, export=False)
  trainer.train()
  assert coordinator.scheduled_counts == [4, 4, 2]
  assert all(type(n) is int for n in coordinator.scheduled_counts)
  unrolled = _op_types(trainer.train_fn.get_concrete_function(trainer.iterator, 4))
  looped = _op_types(trainer.train_fn.get_concrete_function(
      trainer.iterator, tf.constant(4, tf.int32)))
  assert not unrolled & {"While", "StatelessWhile"}
  assert looped & {"While", "StatelessWhile"}


class _FlakyRemote:
  """A RemoteValue whose first fetches raise `errors`, then return `value`."""

  def __init__(self, errors, value=1.5):
    self.errors = list(errors)
    self.value = value
    self.fetches = 0

  def fetch(self):
    self.fetches += 1
    if self.errors:
      raise self.errors.pop(0)
    return self.value


class _FakeClock:

  def __init__(self):
    self.now = 0.0

  def __call__(self):
    return self.now

  def sleep(self, seconds):
    self.now += seconds


_WORKER_LOST = tf.errors.UnavailableError(
    None, None, "failed to connect to all addresses; last error: UNKNOWN: "
    "ipv4:127.0.0.1:60221: Failed to connect to remote host: Connection refused")
_PS_MARKERS = ("/job:ps", "127.0.0.1:60300")


def test_a_fetch_that_loses_its_worker_reads_the_rerun_result():
  """The coordinator re-runs a call whose worker died; the chief's read of the
  lost run raised to it (seen in CI), and is read again."""
  remote, clock = _FlakyRemote([_WORKER_LOST, _WORKER_LOST]), _FakeClock()
  assert loop.fetch_through_worker_loss(remote, _PS_MARKERS, clock=clock,
                                        sleep=clock.sleep) == 1.5
  assert remote.fetches == 3


@pytest.mark.parametrize("message", [
    "Socket closed. Additional GRPC error information from remote target /job:ps/"
    "replica:0/task:0 while calling /tensorflow.eager.EagerService/RunComponentFunction",
    "failed to connect to all addresses; last error: ipv4:127.0.0.1:60300: refused"])
def test_a_lost_parameter_server_raises_at_once(message):
  remote, clock = _FlakyRemote([tf.errors.UnavailableError(None, None, message)]), _FakeClock()
  with pytest.raises(tf.errors.UnavailableError):
    loop.fetch_through_worker_loss(remote, _PS_MARKERS, clock=clock, sleep=clock.sleep)
  assert remote.fetches == 1


def test_a_worker_that_stays_lost_raises_after_the_wait():
  remote, clock = _FlakyRemote([_WORKER_LOST] * 1000), _FakeClock()
  with pytest.raises(tf.errors.UnavailableError):
    loop.fetch_through_worker_loss(remote, _PS_MARKERS, wait_s=60, clock=clock,
                                   sleep=clock.sleep)
  assert 60 <= clock.now < 70


def test_other_errors_of_a_call_raise_at_once():
  remote, clock = _FlakyRemote([tf.errors.InvalidArgumentError(None, None, "bad")]), _FakeClock()
  with pytest.raises(tf.errors.InvalidArgumentError):
    loop.fetch_through_worker_loss(remote, _PS_MARKERS, clock=clock, sleep=clock.sleep)
