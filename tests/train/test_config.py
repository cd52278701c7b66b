"""Tests for train/config.py: train.task's flags are TrainConfig's and TaskOptions' fields."""

import dataclasses
import re

from absl import flags
import pytest

from common import settings
from model import cnn
from train import config as config_lib
from train.config import TaskOptions
from train.config import TrainConfig

VERTEX = {"AIP_MODEL_DIR": "gs://b/model", "AIP_CHECKPOINT_DIR": "gs://b/ckpt",
          "AIP_TENSORBOARD_LOG_DIR": "gs://b/tb"}


def parsed(*argv) -> flags.FlagValues:
  flag_values = flags.FlagValues()
  config_lib.define_flags(flag_values)
  flag_values([config_lib.TASK_MODULE, *argv])
  return flag_values


def test_every_field_is_a_flag_with_its_default():
  flag_values = parsed()
  for config_class in (TrainConfig, TaskOptions):
    fields = dataclasses.fields(config_class)
    assert settings.settings_of(config_class) == list(fields)
    for field in fields:
      assert flag_values[settings.flag_name(field)].default == field.default, field.name
  assert len(flag_values) == len(dataclasses.fields(TrainConfig)) + len(
      dataclasses.fields(TaskOptions))
  # The seed's flags keep their names.
  assert {"batch_size", "max_steps", "checkpoint", "log_dir", "model_dir"} <= set(flag_values)
  assert config_lib.train_config_from_flags(flag_values) == TrainConfig()
  assert config_lib.task_options_from_flags(flag_values) == TaskOptions()


def test_seed_flags_map_onto_the_config():
  config = config_lib.train_config_from_flags(parsed(
      "--batch_size=64", "--max_steps=50", "--checkpoint=10", "--log_dir=/l",
      "--model_dir=/m"))
  assert (config.global_batch_size, config.max_steps, config.checkpoint_interval) == (64, 50, 10)
  assert (config.checkpoint_dir, config.tensorboard_dir, config.model_dir) == ("/l", "/l", "/m")
  assert config.export_layout == config_lib.VERSIONED


def test_vertex_directories_replace_the_defaults_not_the_flags():
  on_vertex = config_lib.train_config_from_flags(parsed("--log_dir=/l"), VERTEX)
  assert (on_vertex.checkpoint_dir, on_vertex.tensorboard_dir, on_vertex.model_dir) == (
      "gs://b/ckpt", "gs://b/tb", "gs://b/model")
  # The SavedModel goes straight into AIP_MODEL_DIR, where Vertex AI's upload looks.
  assert on_vertex.export_layout == config_lib.FLAT
  given = config_lib.train_config_from_flags(
      parsed("--model_dir=/m", "--checkpoint_dir=/c"), VERTEX)
  assert (given.model_dir, given.export_layout, given.checkpoint_dir) == (
      "/m", config_lib.VERSIONED, "/c")
  assert config_lib.train_config_from_flags(parsed(), {"AIP_MODEL_DIR": ""}).model_dir == (
      TrainConfig().model_dir)


def test_bad_values_are_errors_naming_the_setting():
  with pytest.raises(ValueError, match="global_batch_size must be a positive integer, got 0"):
    config_lib.train_config_from_flags(parsed("--batch_size=0"))
  with pytest.raises(flags.IllegalFlagValueError):
    parsed("--learning_rate_schedule=linear")
  with pytest.raises(ValueError, match="export_layout must be one of versioned, flat"):
    TrainConfig(export_layout="nested")
  with pytest.raises(ValueError, match=r"profiler_port must be a port number in \[0, "
                     r"65535\] \(0: none\), got 70000"):
    config_lib.task_options_from_flags(parsed("--profiler_port=70000"))


def test_onednn_defaults_to_on_unless_the_environment_says_otherwise():
  assert config_lib.task_options_from_flags(parsed(), {}).onednn is True
  environ = {"TF_ENABLE_ONEDNN_OPTS": "0"}
  assert config_lib.task_options_from_flags(parsed(), environ).onednn is False
  assert config_lib.task_options_from_flags(parsed("--onednn"), environ).onednn is True
  with pytest.raises(ValueError, match="TF_ENABLE_ONEDNN_OPTS='yes please'"):
    config_lib.task_options_from_flags(parsed(), {"TF_ENABLE_ONEDNN_OPTS": "yes please"})


@pytest.mark.parametrize("train_config,options", [
    (TrainConfig(), TaskOptions()),
    (TrainConfig(max_steps=5, learning_rate=1e-4, seed=3, export=False, data_dir="synthetic"),
     TaskOptions(strategy="one_device", cluster_timeout_s=2.5, dry_run=True)),
    (TrainConfig(log_dir="/l", checkpoint_dir="/c", export_layout=config_lib.FLAT),
     TaskOptions(result_json="/r.json", profiler_port=6009, keep_freed_memory=False,
                 onednn=False, thread_spinning=True)),
    (TrainConfig().with_log_dir("/w/logs"), TaskOptions()),
])
def test_task_argv_reproduces_the_config(train_config, options):
  argv = config_lib.task_argv(train_config, options)
  assert config_lib.parse_task_argv(argv) == (train_config, options)


def test_task_argv_writes_only_what_differs_from_the_defaults():
  assert config_lib.task_argv() == []
  assert config_lib.task_argv(TrainConfig(max_steps=5).with_log_dir("/w"),
                              TaskOptions(dry_run=True)) == [
      "--max_steps=5", "--log_dir=/w", "--dry_run"]
  assert config_lib.task_argv(TrainConfig(export=False)) == ["--noexport"]


def test_initializer_choices_are_the_cnns():
  assert config_lib.INITIALIZERS == cnn.INITIALIZERS
  assert config_lib.TrainConfig().initializers in cnn.INITIALIZERS


def test_task_argv_that_is_not_all_flags_is_refused():
  """What is not a flag would be dropped without a word: a mistyped `-- max_steps=5`."""
  with pytest.raises(ValueError, match=r"unexpected arguments \['max_steps=5'\]"):
    config_lib.parse_task_argv(["--batch_size=8", "max_steps=5"])


def test_evaluation_and_log_cadences_default_to_the_checkpoints():
  config = config_lib.train_config_from_flags(parsed("--checkpoint=50"))
  assert (config.eval_interval, config.log_interval) == (None, None)
  assert (config.eval_steps, config.log_steps) == (50, 50)
  config = config_lib.train_config_from_flags(
      parsed("--checkpoint=50", "--eval_every=0", "--log_every=10"))
  assert (config.eval_steps, config.log_steps) == (0, 10)
  assert config_lib.parse_task_argv(config_lib.task_argv(config))[0] == config


@pytest.mark.parametrize("overrides,message", [
    (dict(eval_interval=-1), "eval_interval must be an integer >= 0 (or None: the "
                             "checkpoint_interval), got -1"),
    (dict(log_interval=0), "log_interval must be an integer >= 1 (or None: the "
                           "checkpoint_interval), got 0"),
    (dict(eval_interval=2.5), "eval_interval must be an integer >= 0"),
])
def test_bad_cadences_are_errors_naming_the_value(overrides, message):
  with pytest.raises(ValueError, match=re.escape(message)):
    TrainConfig(**overrides)
