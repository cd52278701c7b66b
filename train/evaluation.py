"""Evaluation on the whole test set: inline on the chief, or as a side-car evaluator."""

import dataclasses
import os
import threading
import time
from typing import Any, Callable

from absl import logging
import numpy as np
import tensorflow as tf
import tf_keras

from model import cnn
from common import mnist
from train import checkpoint
from train import data as data_lib
from train.config import TrainConfig


@dataclasses.dataclass(frozen=True)
class EvalResult:
  step: int
  loss: float       # Mean cross-entropy per test example.
  accuracy: float   # Over every test example, the last partial batch included.


class Evaluator:
  """Evaluates a plain (unreplicated) copy of the model on the whole test set."""

  def __init__(self, images: np.ndarray, labels: np.ndarray, batch_size: int):
    """`images` uint8 [N, 784] as common.mnist loads them; `labels` int64 [N]."""
    self.model = cnn.build_cnn()
    self.num_examples = len(labels)
    self._dataset = data_lib.make_eval_dataset(images, labels, batch_size)

  @tf.function
  def _eval_step(self, images, labels):
    scores = self.model(images, training=False)
    loss = tf.reduce_sum(tf_keras.losses.sparse_categorical_crossentropy(labels, scores))
    correct = tf.reduce_sum(tf.cast(tf.equal(tf.argmax(scores, axis=1), labels), tf.int64))
    return loss, correct

  def evaluate(self, step: int) -> EvalResult:
    total_loss, total_correct = 0.0, 0
    for images, labels in self._dataset:
      loss, correct = self._eval_step(images, labels)
      total_loss += float(loss)
      total_correct += int(correct)
    return EvalResult(step=step, loss=total_loss / self.num_examples,
                      accuracy=total_correct / self.num_examples)


class BackgroundEvaluator:
  """Runs `evaluate_fn(request)` on a thread of its own, for the newest request only.

  The chief under parameter servers hands it each checkpoint it wants evaluated and
  goes back to feeding the workers. A request that arrives while another waits
  replaces it (newest wins): evaluation never falls behind training, it skips
  checkpoints instead. `results` holds `(request, result)` for each one evaluated.

  `close()` must be called (a `with` block does it): it drops the request still
  waiting, waits for the one in progress, ends the thread, and raises what
  `evaluate_fn` raised, if anything. `submit` raises it too, so that a broken
  evaluation stops the job at its next request rather than at its end.
  """

  def __init__(self, evaluate_fn: Callable[[Any], Any]):
    self._evaluate_fn = evaluate_fn
    self._condition = threading.Condition()
    self._pending = None
    self._closed = False
    self._error: BaseException | None = None
    self.results: list[tuple[Any, Any]] = []
    self._thread = threading.Thread(target=self._run, name="background-evaluator",
                                    daemon=True)
    self._thread.start()

  def submit(self, request) -> None:
    """Evaluates `request` next, instead of any request still waiting."""
    with self._condition:
      self._raise_error()
      if self._closed:
        raise RuntimeError("submit() after close()")
      self._pending = request
      self._condition.notify()

  def close(self, *, raise_error: bool = True) -> None:
    """Waits for the evaluation in progress, then ends the thread (idempotent)."""
    with self._condition:
      self._closed = True
      self._pending = None
      self._condition.notify()
    self._thread.join()
    if raise_error:
      with self._condition:
        self._raise_error()

  def __enter__(self) -> "BackgroundEvaluator":
    return self

  def __exit__(self, exc_type, exc, tb) -> None:
    # An error of training is the one to report; the thread's would hide it.
    self.close(raise_error=exc_type is None)

  def _raise_error(self) -> None:
    if self._error is not None:
      error, self._error = self._error, None
      raise error

  def _run(self) -> None:
    while True:
      with self._condition:
        while self._pending is None and not self._closed:
          self._condition.wait()
        if self._pending is None:
          return
        request, self._pending = self._pending, None
      try:
        result = self._evaluate_fn(request)
      except BaseException as e:  # Raised in the caller's thread by submit or close.
        logging.error("background evaluation of %s failed: %s", request, e)
        with self._condition:
          self._error = e
          self._closed = True
        return
      self.results.append((request, result))


def write_eval_summaries(writer, result: EvalResult, model: tf_keras.Model) -> None:
  with writer.as_default(step=result.step):
    tf.summary.scalar("test_loss", result.loss)
    tf.summary.scalar("test_accuracy", result.accuracy)
    for name in ("conv1", "conv2"):
      tf.summary.histogram(f"{name}/filters", model.get_layer(name).kernel)
  writer.flush()


def summary_dir(config: TrainConfig) -> str:
  """Where the side-car evaluator writes its summaries: beside the chief's, in eval/."""
  return os.path.join(config.tensorboard_dir, "eval")


def run_sidecar_evaluator(config: TrainConfig, *, timeout_s: float) -> EvalResult | None:
  """Follows new checkpoints in config.checkpoint_dir, evaluates each, stops after the final one.

  The final one is the first whose step reaches `config.max_steps`. Gives up,
  returning the last result, when no new checkpoint appears for `timeout_s` seconds.
  Summaries go to summary_dir(config).
  """
  checkpoint_dir, max_steps = config.checkpoint_dir, config.max_steps
  data = mnist.load_mnist(config.data_dir)
  evaluator = Evaluator(data.test_images, data.test_labels, config.eval_batch_size)
  writer = tf.summary.create_file_writer(summary_dir(config))
  result = None
  for path in tf.train.checkpoints_iterator(checkpoint_dir, min_interval_secs=1,
                                            timeout=timeout_s):
    start = time.monotonic()
    try:
      step = checkpoint.restore_weights(evaluator.model, path)
    except (tf.errors.NotFoundError, FileNotFoundError):
      # The chief's CheckpointManager deleted it (max_to_keep) before we read it.
      logging.warning("checkpoint %s was deleted before it was evaluated", path)
      continue
    result = evaluator.evaluate(step)
    write_eval_summaries(writer, result, evaluator.model)
    logging.info("step %d evaluator test_loss %.4f test_accuracy %.4f (%s, %.1fs)",
                 step, result.loss, result.accuracy, os.path.basename(path),
                 time.monotonic() - start)
    if step >= max_steps:
      break
  else:
    logging.warning("no new checkpoint in %s for %gs; evaluator stops", checkpoint_dir,
                    timeout_s)
  return result
