"""Tests for train/export.py: the SavedModel TF Serving loads, and how it is published."""

import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from model import cnn
from model import contract
from train import export

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def trained():
  tf_keras.utils.set_random_seed(1)
  return cnn.build_cnn()


@pytest.fixture(scope="module")
def export_dir(trained, tmp_path_factory):
  return export.export_model(trained, str(tmp_path_factory.mktemp("export")))


def _images(n, seed=0):
  return np.random.default_rng(seed).random((n, cnn.IMAGE_PIXELS), np.float32)


def test_layout_is_a_numbered_version_with_warmup(export_dir):
  base = os.path.dirname(export_dir)
  assert sorted(os.listdir(base)) == ["1"]  # No staging folder left behind.
  for name in ("saved_model.pb", "variables", contract.WARMUP_FILE):
    assert os.path.exists(os.path.join(export_dir, name)), name


def test_signatures_are_exactly_the_contract(export_dir):
  from tensorflow.core.protobuf import saved_model_pb2
  saved = saved_model_pb2.SavedModel()
  with open(os.path.join(export_dir, "saved_model.pb"), "rb") as f:
    saved.ParseFromString(f.read())
  signatures = saved.meta_graphs[0].signature_def
  serving = signatures["serving_default"]
  assert serving.method_name == "tensorflow/serving/predict"

  def specs(tensors):
    return {k: (v.dtype, [d.size for d in v.tensor_shape.dim]) for k, v in tensors.items()}

  assert specs(serving.inputs) == {"key": (tf.int64.as_datatype_enum, [-1]),
                                   "image": (tf.float32.as_datatype_enum, [-1, 784])}
  assert specs(serving.outputs) == {"key": (tf.int64.as_datatype_enum, [-1]),
                                    "scores": (tf.float32.as_datatype_enum, [-1, 10])}
  example = signatures["predict_images"]
  assert specs(example.inputs) == {"images": (tf.float32.as_datatype_enum, [-1, 784])}
  assert specs(example.outputs) == {"scores": (tf.float32.as_datatype_enum, [-1, 10])}


@pytest.mark.parametrize("n", [0, 1, 5])
def test_session_loader_passes_keys_through(export_dir, trained, n):
  keys = np.arange(100, 100 + n, dtype=np.int64)[::-1].copy()
  images = _images(n)
  out = export.run_session_loader(export_dir, keys, images)
  np.testing.assert_array_equal(out["key"], keys)
  assert out["scores"].shape == (n, 10)
  if n:
    np.testing.assert_allclose(out["scores"], trained(images, training=False), atol=1e-5)


def test_tf2_loader_serves_both_signatures(export_dir, trained):
  loaded = tf.saved_model.load(export_dir)
  images = _images(3)
  out = loaded.signatures["serving_default"](key=tf.constant([7, 3, 9], tf.int64),
                                             image=tf.constant(images))
  np.testing.assert_array_equal(out["key"], [7, 3, 9])
  example = loaded.signatures["predict_images"](images=tf.constant(images))
  np.testing.assert_allclose(example["scores"], out["scores"], atol=1e-6)


def test_warmup_records_are_prediction_logs(export_dir):
  from tensorflow_serving.apis import prediction_log_pb2
  sizes = []
  for record in tf.data.TFRecordDataset(os.path.join(export_dir, contract.WARMUP_FILE)):
    log = prediction_log_pb2.PredictionLog.FromString(record.numpy())
    request = log.predict_log.request
    assert request.model_spec.signature_name == "serving_default"
    sizes.append(tf.make_ndarray(request.inputs["image"]).shape[0])
  assert sizes == [1, 8]


def test_versions_increase_and_existing_ones_are_kept(trained, tmp_path):
  first = export.export_model(trained, str(tmp_path))
  os.makedirs(tmp_path / "not-a-version")
  second = export.export_model(trained, str(tmp_path))
  assert (os.path.basename(first), os.path.basename(second)) == ("1", "2")
  assert contract.list_versions(str(tmp_path)) == [1, 2]
  with pytest.raises(FileExistsError, match="already exists"):
    export.export_model(trained, str(tmp_path), version=2)


def test_a_failed_verification_publishes_nothing(trained, tmp_path, monkeypatch):
  def broken(*args, **kwargs):
    raise ValueError("scores differ")
  monkeypatch.setattr(export, "verify_export", broken)
  with pytest.raises(ValueError, match="scores differ"):
    export.export_model(trained, str(tmp_path))
  assert os.listdir(tmp_path) == []


def test_verification_catches_a_model_that_differs(trained, tmp_path):
  module = export.ServingModule(cnn.build_cnn())
  path = str(tmp_path / "m")
  tf.saved_model.save(module, path, signatures={"serving_default": module.serve})
  with pytest.raises(ValueError, match="scores differ"):
    export.verify_export(path, trained, _images(4))


def run_export(*args):
  return subprocess.run([sys.executable, "-m", "train.export", *args], cwd=REPO,
                        capture_output=True, text=True, timeout=180)


def test_export_command_without_a_checkpoint_exits_2_naming_the_path(tmp_path):
  missing = tmp_path / "nowhere"
  run = run_export(f"--checkpoint_dir={missing}", f"--model_dir={tmp_path / 'model'}")
  assert run.returncode == 2, run.stderr[-2000:]
  assert run.stderr.strip() == (
      f"error: no checkpoint found in {missing}, which does not exist: expected a directory "
      "with a 'checkpoint' file (the trainer's --checkpoint_dir, by default its --log_dir), "
      "or a checkpoint prefix")
  assert not os.path.exists(tmp_path / "model")  # Nothing written.


@pytest.mark.slow
def test_export_command_refuses_a_model_dir_it_cannot_write(trained, tmp_path):
  tf.train.Checkpoint(model=trained).save(str(tmp_path / "logs" / "ckpt"))
  (tmp_path / "file").write_text("")
  run = run_export(f"--checkpoint_dir={tmp_path / 'logs'}",
                   f"--model_dir={tmp_path / 'file' / 'model'}", "--version=3")
  assert run.returncode == 2, run.stderr[-2000:]
  assert (f"error: cannot write the exported model (--model_dir) to {tmp_path}/file/model: "
          f"{tmp_path}/file is not a directory") in run.stderr
  assert "Traceback" not in run.stderr


@pytest.mark.slow
def test_export_command_and_a_fresh_process_loads_it(trained, tmp_path):
  """The separate export command, then the export loaded in a new process."""
  checkpoint = tf.train.Checkpoint(model=trained, step=tf.Variable(7, dtype=tf.int64))
  checkpoint.save(str(tmp_path / "logs" / "ckpt"))
  run = subprocess.run(
      [sys.executable, "-m", "train.export", f"--checkpoint_dir={tmp_path / 'logs'}",
       f"--model_dir={tmp_path / 'model'}"],
      cwd=REPO, capture_output=True, text=True, timeout=180)
  assert run.returncode == 0, run.stderr[-2000:]
  assert run.stdout.strip().endswith(os.path.join("model", "1"))
  check = subprocess.run(
      [sys.executable, "-c",
       "import sys, numpy as np; from train import export; "
       "out = export.run_session_loader(sys.argv[1], np.array([7, 3]), "
       "np.zeros((2, 784), np.float32)); print(out['key'].tolist())",
       str(tmp_path / "model" / "1")], cwd=REPO, capture_output=True, text=True, timeout=180)
  assert check.returncode == 0, check.stderr[-2000:]
  assert check.stdout.strip().splitlines()[-1] == "[7, 3]"


def test_flat_layout_replaces_the_savedmodel_in_place(trained, tmp_path):
  """Vertex AI's AIP_MODEL_DIR layout: saved_model.pb in the base itself."""
  base = str(tmp_path / "model")
  assert export.export_model(trained, base, layout=export.FLAT) == base
  assert export.export_model(trained, base, layout=export.FLAT) == base  # A rerun.
  assert sorted(os.listdir(base)) == ["assets", "assets.extra", "fingerprint.pb",
                                      "saved_model.pb", "variables"]
  assert os.listdir(tmp_path) == ["model"]  # The staging folder is gone.
  out = export.run_session_loader(base, np.array([7, 3]), _images(2))
  np.testing.assert_array_equal(out["key"], [7, 3])
