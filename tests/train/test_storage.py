"""Tests for train/storage.py: which task writes where, the check before training, and
how a full disk is told."""

import dataclasses
import errno
import os

import pytest
import tensorflow as tf

from train import cluster
from train import storage
from train.config import TrainConfig

CONFIG = TrainConfig(log_dir="/out/logs", model_dir="/out/model")


def directories(outputs):
  return [o.directory for o in outputs]


def test_the_chief_writes_checkpoints_summaries_export_and_result():
  for role in (cluster.STANDALONE, cluster.COORDINATOR, cluster.COLLECTIVE):
    outputs = storage.outputs_of(CONFIG, role, is_chief=True, result_json="/out/r.json")
    assert outputs == [
        storage.Output("/out/logs", "checkpoints and TensorBoard summaries (--log_dir)"),
        storage.Output("/out/model", "the exported model (--model_dir or $AIP_MODEL_DIR)"),
        storage.Output("/out", "the result (--result_json)")]


def test_each_directory_is_named_by_its_own_flag_when_given():
  config = dataclasses.replace(CONFIG, checkpoint_dir="/ckpt", tensorboard_dir="/tb",
                               export=False)
  assert storage.outputs_of(config, cluster.STANDALONE, is_chief=True) == [
      storage.Output("/ckpt", "checkpoints (--checkpoint_dir or $AIP_CHECKPOINT_DIR)"),
      storage.Output("/tb", "TensorBoard summaries "
                     "(--tensorboard_dir or $AIP_TENSORBOARD_LOG_DIR)")]


def test_the_evaluator_writes_only_its_summaries():
  assert directories(storage.outputs_of(CONFIG, cluster.SIDECAR_EVALUATOR,
                                        is_chief=False)) == ["/out/logs/eval"]


@pytest.mark.parametrize("role", [cluster.SERVER, cluster.COLLECTIVE])
def test_servers_and_other_workers_write_none_of_the_jobs_directories(role):
  assert storage.outputs_of(CONFIG, role, is_chief=False, result_json="/r.json") == []


def test_a_writable_directory_is_created_and_left_without_the_probe(tmp_path):
  directory = tmp_path / "new" / "logs"
  assert storage.check_writable(str(directory)) is None
  assert os.listdir(directory) == []


def test_a_file_on_the_path_is_named(tmp_path):
  (tmp_path / "file").write_text("")
  outputs = [storage.Output(str(tmp_path / "ok"), "a"),
             storage.Output(str(tmp_path / "file" / "x"), "the exported model (--model_dir)")]
  with pytest.raises(storage.UnwritableError) as error:
    storage.check_outputs(outputs)
  assert str(error.value) == (f"cannot write the exported model (--model_dir) to "
                              f"{tmp_path}/file/x: {tmp_path}/file is not a directory")


def test_a_read_only_directory_is_named(tmp_path, mount_tmpfs):
  if os.geteuid() == 0:  # Root writes in any directory: only a read-only mount stops it.
    directory = mount_tmpfs("ro", read_only=True)
  else:
    directory = str(tmp_path / "ro")
    os.mkdir(directory, 0o555)
  problem = storage.check_writable(directory)
  assert problem is not None and directory in problem
  assert "Read-only file system" in problem or "Permission denied" in problem


def test_other_file_systems_are_probed_through_gfile():
  """ram:// is TensorFlow's in-memory file system: a scheme like gs://, not a path."""
  assert storage.check_writable("ram://bucket/run/logs") is None
  assert tf.io.gfile.listdir("ram://bucket/run/logs") == []


def test_full_disk_errors_as_tensorflow_and_python_raise_them():
  path = "/full/logs/ckpt-7_temp/part-00000-of-00001.data-00000-of-00001.tempstate1"
  tf_error = tf.errors.ResourceExhaustedError(None, None,
                                              f"{path}; No space left on device")
  assert storage.is_disk_full(tf_error)
  assert storage.is_disk_full(OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)))
  assert storage.is_disk_full(OSError(errno.EDQUOT, os.strerror(errno.EDQUOT)))
  assert not storage.is_disk_full(tf.errors.ResourceExhaustedError(None, None, "OOM"))
  assert not storage.is_disk_full(OSError(errno.EACCES, "Permission denied"))
  outputs = [storage.Output("/full/logs", "checkpoints (--log_dir)"),
             storage.Output("/full/logs/model", "the exported model (--model_dir)")]
  assert storage.describe_disk_full(tf_error, outputs) == (
      "no space left on device (ENOSPC) in /full/logs, where the task writes "
      "checkpoints (--log_dir)")
