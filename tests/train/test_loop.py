"""Tests for train/loop.py in one process: exact steps, checkpoints, resume, summaries."""

import glob
import os

import pytest
import tensorflow as tf

from common import mnist
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
