"""Tests for python -m train.migrate and for warm starts from the seed's r0.12 models.

Fast tests convert checkpoints of the seed's graph written in process
(tests/legacy/seed_checkpoint.py) on generated data. The slow ones take the seed
program's real run (the `legacy_artifacts` fixture: 1 ps + master on the vendored
MNIST), convert its checkpoint and its export, serve them with `python -m
serving.server`, and compare the gRPC scores of the whole test set with the legacy
graph's own, run here with nothing of ours: its export.meta imported with
tf.compat.v1 and fed through its collections.
"""

import dataclasses
import json
import os
import subprocess
import sys

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import prediction_service_pb2_grpc

from common import mnist
from common import processes
from model import cnn
from model import contract
from serving.client import wait_until_serving
from tests.legacy import seed_checkpoint
from train import legacy
from train import loop
from train import migrate
from train.config import TrainConfig

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def seed_ckpt(tmp_path_factory) -> str:
  prefix = str(tmp_path_factory.mktemp("seed") / "logs" / "model.ckpt-3")
  seed_checkpoint.write_seed_checkpoint(prefix, steps=3)
  return prefix


def _run_migrate(*args, timeout=300) -> subprocess.CompletedProcess:
  return subprocess.run([sys.executable, "-m", "train.migrate", *args], cwd=REPO,
                        capture_output=True, text=True, timeout=timeout)


# --- Fast: in process, generated data ------------------------------------------------


def test_config_needs_both_paths_and_positive_numbers():
  with pytest.raises(ValueError, match="--legacy_checkpoint is required"):
    migrate.MigrateConfig(model_dir="/tmp/m")
  with pytest.raises(ValueError, match="--num_images=0: expected a positive integer"):
    migrate.MigrateConfig(legacy_checkpoint="/x", model_dir="/m", num_images=0)


def test_compare_scores_finds_the_largest_difference_either_way():
  ours = np.zeros((3, 10), np.float32)
  theirs = ours.copy()
  theirs[2, 7] = 3e-5
  theirs[1, 4] = -1e-5
  assert migrate.compare_scores(ours, theirs) == (pytest.approx(3e-5), (2, 7))
  assert migrate.compare_scores(theirs, ours) == (pytest.approx(3e-5), (2, 7))


def test_migrate_publishes_a_version_equal_to_the_legacy_graph(seed_ckpt, tmp_path):
  config = migrate.MigrateConfig(legacy_checkpoint=os.path.dirname(seed_ckpt),
                                 model_dir=str(tmp_path / "model"), data_dir="synthetic",
                                 num_images=64)
  result = migrate.migrate(config)
  assert result.export_dir == str(tmp_path / "model" / "1")
  assert (result.legacy_prefix, result.legacy_graph) == (seed_ckpt, "rebuilt from the checkpoint")
  assert (result.global_step, result.num_images) == (3, 64)
  assert result.max_abs_difference <= migrate.MAX_SCORE_DIFFERENCE
  assert os.path.exists(os.path.join(result.export_dir, contract.WARMUP_FILE))
  # The published SavedModel predicts what the legacy graph does.
  images = mnist.to_float(mnist.load_mnist("synthetic").test_images[:64])
  keys = np.arange(64, dtype=np.int64)
  expected, _ = legacy.run_legacy_graph(legacy.find_legacy_checkpoint(seed_ckpt), images, keys)
  served = tf.saved_model.load(result.export_dir).signatures[contract.SIGNATURE_NAME](
      key=tf.constant(keys), image=tf.constant(images))
  assert np.abs(served[contract.SCORES].numpy() - expected).max() <= 1e-5
  np.testing.assert_array_equal(served[contract.KEY].numpy(), keys)


def test_a_network_that_computes_otherwise_is_refused_and_nothing_published(
    seed_ckpt, tmp_path, monkeypatch):
  load_weights = legacy.load_weights

  def off_by_a_little(model, checkpoint):  # One class's output bias, by 0.01.
    load_weights(model, checkpoint)
    model.get_layer("scores").bias[3].assign(model.get_layer("scores").bias[3] + 0.01)

  monkeypatch.setattr(legacy, "load_weights", off_by_a_little)
  config = migrate.MigrateConfig(legacy_checkpoint=seed_ckpt, model_dir=str(tmp_path / "m"),
                                 data_dir="synthetic", num_images=20)
  with pytest.raises(migrate.NotEquivalentError,
                     match=r"differs from the legacy graph \(rebuilt from the checkpoint\) by "
                     r"up to .* more than 1e-05; nothing was published"):
    migrate.migrate(config)
  assert not os.path.exists(tmp_path / "m")


def _config(tmp_path, **overrides) -> TrainConfig:
  values = dict(checkpoint_dir=str(tmp_path / "logs"), tensorboard_dir=str(tmp_path / "tb"),
                model_dir=str(tmp_path / "model"), global_batch_size=20, max_steps=10,
                checkpoint_interval=10, steps_per_execution=5, eval_batch_size=100,
                export=False)
  values.update(overrides)
  return TrainConfig(**values)


def _summaries(directory, tag) -> dict:
  """{step: value} of a scalar summary in a TensorBoard directory."""
  values = {}
  for name in os.listdir(directory):
    if name.startswith("events.out.tfevents"):
      for event in tf.compat.v1.train.summary_iterator(os.path.join(directory, name)):
        for value in event.summary.value:
          if value.tag == tag:
            values[event.step] = float(tf.make_ndarray(value.tensor))
  return values


def test_warm_start_is_evaluated_before_training_and_our_checkpoint_wins(
    seed_ckpt, tmp_path, caplog):
  data = mnist.make_synthetic(200, 100)
  config = _config(tmp_path, warm_start_from=seed_ckpt, warm_start_optimizer=True,
                   max_steps=8, checkpoint_interval=5)
  with caplog.at_level("INFO", logger="absl"):
    result = loop.run_training(config, data=data)
  assert result.step == 8
  # The warm start at the legacy global step, checkpointed and evaluated first.
  reader = tf.train.load_checkpoint(str(tmp_path / "logs" / "ckpt-3"))
  assert int(reader.get_tensor("step/.ATTRIBUTES/VARIABLE_VALUE")) == 3
  np.testing.assert_array_equal(
      reader.get_tensor("model/layer_with_weights-3/bias/.ATTRIBUTES/VARIABLE_VALUE"),
      tf.train.load_variable(seed_ckpt, "cnn/output/Variable_1"))
  accuracy = _summaries(tmp_path / "tb", "test_accuracy")
  assert sorted(accuracy) == [3, 5, 8]
  model = cnn.build_cnn()
  legacy.load_weights(model, legacy.read_legacy_checkpoint(seed_ckpt))
  scores = legacy.run_model(model, mnist.to_float(data.test_images))
  assert accuracy[3] == pytest.approx(np.mean(scores.argmax(1) == data.test_labels), abs=1e-6)
  assert "step 3/8 (warm start, before training) test_loss" in caplog.text
  # A restart finds its own checkpoint and leaves the legacy one alone.
  caplog.clear()
  with caplog.at_level("INFO", logger="absl"):
    loop.run_training(dataclasses.replace(config, max_steps=10), data=data)
  assert f"--warm_start_from={seed_ckpt} not read: {tmp_path}/logs holds our own checkpoint" \
      in caplog.text
  assert "Warm-started" not in caplog.text


def test_warm_start_optimizer_needs_warm_start_from():
  with pytest.raises(ValueError, match="warm_start_optimizer needs warm_start_from"):
    TrainConfig(warm_start_optimizer=True)


# --- Slow: the command, and the seed program's real run --------------------------------


@pytest.mark.slow
def test_command_exits_2_naming_each_missing_and_misshaped_variable(tmp_path):
  prefix = str(tmp_path / "logs" / "model.ckpt-7")
  seed_checkpoint.write_seed_checkpoint(
      prefix, optimizer=False, drop=("cnn/fully-connected/Variable",),
      replace={"cnn/output/Variable_1": np.zeros([12], np.float32)})
  run = _run_migrate(f"--legacy_checkpoint={tmp_path / 'logs'}",
                     f"--model_dir={tmp_path / 'model'}")
  assert run.returncode == migrate.EXIT_BAD_INPUT, run.stderr[-3000:]
  assert (f"error: {prefix} does not hold the seed's network: cnn/fully-connected/Variable "
          "(our hidden/kernel, shape [3136, 1024]) is missing; cnn/output/Variable_1 has "
          "shape [12], expected [10] (our scores/bias)\n") in run.stderr
  assert "Traceback" not in run.stderr
  assert not os.path.exists(tmp_path / "model")


@pytest.mark.slow
def test_train_task_exits_2_for_a_warm_start_path_without_a_checkpoint(tmp_path):
  run = subprocess.run(
      [sys.executable, "-m", "train.task", f"--warm_start_from={tmp_path / 'nothing'}",
       "--data_dir=synthetic", "--max_steps=1", f"--log_dir={tmp_path / 'logs'}"],
      cwd=REPO, capture_output=True, text=True, timeout=300,
      env={k: v for k, v in os.environ.items() if k != "TF_CONFIG"})
  assert run.returncode == 2, run.stderr[-3000:]
  assert f"error: no checkpoint at {tmp_path / 'nothing'}: expected a checkpoint prefix" \
      in run.stderr
  assert "Traceback" not in run.stderr


@pytest.fixture(scope="module")
def legacy_predictions(legacy_artifacts):
  """The seed export's own predictions of the whole test set: (images, labels, keys,
  scores), its export.meta imported with tf.compat.v1 and fed through its collections."""
  data = mnist.load_mnist()
  images = mnist.to_float(data.test_images)
  keys = np.arange(len(images), dtype=np.int64)[::-1] * 3 + 2**40
  model_dir = legacy_artifacts.model_dir
  scores, out_keys = [], []
  with tf.Graph().as_default() as graph, tf.compat.v1.Session(graph=graph) as sess:
    saver = tf.compat.v1.train.import_meta_graph(os.path.join(model_dir, "export.meta"))
    saver.restore(sess, os.path.join(model_dir, "export"))
    inputs = json.loads(tf.compat.v1.get_collection("inputs")[0])
    outputs = json.loads(tf.compat.v1.get_collection("outputs")[0])
    for start in range(0, len(images), 1000):
      s, k = sess.run([outputs["scores"], outputs["key"]],
                      {inputs["image"]: images[start:start + 1000],
                       inputs["key"]: keys[start:start + 1000]})
      scores.append(s)
      out_keys.append(k)
  np.testing.assert_array_equal(np.concatenate(out_keys), keys)
  return images, data.test_labels, keys, np.concatenate(scores)


def _serve_and_predict(model_config_path, names, images, keys, log_path) -> dict:
  """Starts `python -m serving.server` on the models of the config file; returns
  {model name: (keys, scores)} of serving_default over gRPC, then stops the server."""
  (port,) = processes.pick_free_ports(1)
  with open(log_path, "w") as log:
    server = processes.start_module(
        "serving.server", [f"--port={port}", f"--model_config_file={model_config_path}",
                           "--file_system_poll_wait_seconds=0"],
        cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
  try:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
      wait_until_serving(channel, 120, process=server)
      stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
      served = {}
      for name in names:
        out_keys, scores = [], []
        for start in range(0, len(images), 500):
          request = contract.make_predict_request(
              keys[start:start + 500], images[start:start + 500], model_name=name)
          response = stub.Predict(request, timeout=60)
          out_keys.append(tf.make_ndarray(response.outputs[contract.KEY]))
          scores.append(tf.make_ndarray(response.outputs[contract.SCORES]))
        served[name] = (np.concatenate(out_keys), np.concatenate(scores))
      return served
  finally:
    processes.stop_process(server)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_legacy_checkpoint_and_export_convert_and_serve_the_legacy_scores(
    legacy_artifacts, legacy_predictions, tmp_path):
  images, labels, keys, legacy_scores = legacy_predictions
  final = tf.train.latest_checkpoint(legacy_artifacts.log_dir)
  # The command, on the seed's --log_dir: its newest checkpoint.
  run = _run_migrate(f"--legacy_checkpoint={legacy_artifacts.log_dir}",
                     f"--model_dir={tmp_path / 'from_checkpoint'}", "--num_images=2000",
                     timeout=600)
  assert run.returncode == 0, run.stderr[-3000:]
  printed = json.loads(run.stdout.strip().splitlines()[-1])
  assert printed["legacy_prefix"] == final
  assert printed["legacy_graph"] == "rebuilt from the checkpoint"
  assert printed["global_step"] == tf.train.load_variable(final, legacy.GLOBAL_STEP)
  assert printed["num_images"] == 2000
  assert printed["max_abs_difference"] <= 1e-5
  assert printed["legacy_accuracy"] == pytest.approx(
      np.mean(legacy_scores[:2000].argmax(1) == labels[:2000]), abs=1e-9)
  # In process, the seed's export prefix: its export.meta is what runs.
  result = migrate.migrate(migrate.MigrateConfig(
      legacy_checkpoint=os.path.join(legacy_artifacts.model_dir, "export"),
      model_dir=str(tmp_path / "from_export"), num_images=1000))
  assert (result.legacy_graph, result.global_step) == ("export.meta", None)
  assert result.max_abs_difference <= 1e-5
  # Both served by a real model server; the whole test set, checked by nothing of ours.
  config_path = tmp_path / "models.config"
  config_path.write_text("model_config_list {\n" + "".join(
      f'  config {{ name: "{name}" base_path: "{tmp_path / name}" model_platform: '
      '"tensorflow" }\n' for name in ("from_checkpoint", "from_export")) + "}\n")
  served = _serve_and_predict(config_path, ("from_checkpoint", "from_export"), images, keys,
                              tmp_path / "server.log")
  for name, (served_keys, scores) in served.items():
    np.testing.assert_array_equal(served_keys, keys, err_msg=name)
    assert scores.shape == (10000, 10)
    assert np.abs(scores - legacy_scores).max() <= 1e-5, name


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_warm_started_run_evaluates_the_legacy_accuracy_at_step_0(
    legacy_artifacts, legacy_predictions, tmp_path, caplog):
  _, labels, _, legacy_scores = legacy_predictions
  legacy_accuracy = float(np.mean(legacy_scores.argmax(1) == labels))
  config = _config(tmp_path, warm_start_from=legacy_artifacts.log_dir, max_steps=10,
                   eval_batch_size=1000)
  with caplog.at_level("INFO", logger="absl"):
    result = loop.run_training(config)
  accuracy = _summaries(tmp_path / "tb", "test_accuracy")
  assert sorted(accuracy) == [0, 10] and result.step == 10
  assert accuracy[0] == pytest.approx(legacy_accuracy, abs=1e-6)
  assert ("step 0/10 (warm start, before training) test_loss" in caplog.text
          and f"test_accuracy {legacy_accuracy:.4f}" in caplog.text)
