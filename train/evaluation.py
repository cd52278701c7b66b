"""Evaluation on the whole test set: inline on the chief, or as a side-car evaluator."""

import dataclasses
import os
import time

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
