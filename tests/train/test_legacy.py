"""Tests for train/legacy.py on checkpoints of the seed's own graph, written in process.

tests/legacy/seed_checkpoint.py builds the seed's training graph with tf.compat.v1,
trains it a few steps and saves it as its Supervisor did; the tests here find, check,
run and load those files. The seed program's real multi-process run is in
tests/train/test_migrate.py.
"""

import json
import os

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from model import cnn
from tests.legacy import seed_checkpoint
from tests.legacy.trainer import mnist as seed_mnist
from train import legacy

STEPS = 3


@pytest.fixture(scope="module")
def seed_ckpt(tmp_path_factory):
  """(prefix, {name: value}) of the seed graph after STEPS Adam steps, in <dir>/logs."""
  prefix = str(tmp_path_factory.mktemp("seed") / "logs" / f"model.ckpt-{STEPS}")
  return prefix, seed_checkpoint.write_seed_checkpoint(prefix, steps=STEPS)


@pytest.fixture(scope="module")
def seed_export(seed_ckpt, tmp_path_factory):
  """The seed's export_model, as its trainer/task.py writes it, of seed_ckpt: <dir>/export."""
  model_dir = str(tmp_path_factory.mktemp("seed_model"))
  with tf.Graph().as_default() as graph, tf.compat.v1.Session(graph=graph) as sess:
    x = tf.compat.v1.placeholder(tf.float32, [None, 784])
    p = seed_mnist.get_model(x, None, training=False)
    input_key = tf.compat.v1.placeholder(tf.int64, [None])
    output_key = tf.identity(input_key)
    tf.compat.v1.add_to_collection("inputs", json.dumps({"key": input_key.name,
                                                         "image": x.name}))
    tf.compat.v1.add_to_collection("outputs", json.dumps({"key": output_key.name,
                                                          "scores": p.name}))
    saver = tf.compat.v1.train.Saver()
    saver.restore(sess, seed_ckpt[0])
    saver.export_meta_graph(filename=model_dir + "/export.meta")
    saver.save(sess, model_dir + "/export", write_meta_graph=False)
  return model_dir


@pytest.fixture(scope="module")
def images():
  return np.random.default_rng(5).random((40, cnn.IMAGE_PIXELS), dtype=np.float32)


def _seed_shapes(values):
  return {name: list(np.shape(value)) for name, value in values.items()}


# --- Finding a checkpoint -----------------------------------------------------------


def test_a_log_dir_a_prefix_and_an_export_are_found(seed_ckpt, seed_export):
  prefix, _ = seed_ckpt
  log_dir = os.path.dirname(prefix)
  # The Supervisor's checkpoint carries a training meta graph, not the export's API.
  assert os.path.exists(prefix + ".meta")
  assert legacy.find_legacy_checkpoint(log_dir) == legacy.LegacySource(prefix, None)
  assert legacy.find_legacy_checkpoint(prefix) == legacy.LegacySource(prefix, None)
  export = os.path.join(seed_export, "export")
  found = legacy.LegacySource(export, export + ".meta")
  assert legacy.find_legacy_checkpoint(export) == found
  assert legacy.find_legacy_checkpoint(seed_export) == found  # The seed's --model_dir.


def test_no_checkpoint_is_an_error_naming_the_path_and_what_was_expected(tmp_path):
  with pytest.raises(legacy.LegacyCheckpointError,
                     match=f"no checkpoint at {tmp_path}/model.ckpt-9: expected a checkpoint "
                     r"prefix \(such as"):
    legacy.find_legacy_checkpoint(str(tmp_path / "model.ckpt-9"))
  with pytest.raises(legacy.LegacyCheckpointError,
                     match=f"{tmp_path} is a directory without a 'checkpoint' file"):
    legacy.find_legacy_checkpoint(str(tmp_path))


# --- Checking every variable by name and shape ---------------------------------------


def test_the_seed_graph_fits_and_optimizer_state_is_allowed(seed_ckpt):
  _, values = seed_ckpt
  shapes = _seed_shapes(values)
  assert legacy.check_variables(shapes) == []
  model_only = {n: s for n, s in shapes.items() if n in dict(
      (name, None) for name, _, _ in legacy.MODEL_VARIABLES)}
  assert len(model_only) == 8 and legacy.check_variables(model_only) == []


def test_every_missing_extra_or_misshaped_variable_is_named(seed_ckpt):
  shapes = _seed_shapes(seed_ckpt[1])
  del shapes["cnn/output/Variable"]
  shapes["cnn/fully-connected/Variable_1"] = [512]
  shapes["cnn/convolution3/Variable"] = [5, 5, 64, 64]
  shapes["cnn/convolution1/Variable/Adam_1"] = [5, 5, 1, 16]
  assert legacy.check_variables(shapes) == [
      "cnn/fully-connected/Variable_1 has shape [512], expected [1024] (our hidden/bias)",
      "cnn/output/Variable (our scores/kernel, shape [1024, 10]) is missing",
      "cnn/convolution3/Variable (shape [5, 5, 64, 64]) is not a variable of the seed's "
      "network",
      "cnn/convolution1/Variable/Adam_1 has shape [5, 5, 1, 16], expected [5, 5, 1, 32] "
      "(Adam's slot of our conv1/kernel)",
  ]
  assert legacy.check_variables({**_seed_shapes(seed_ckpt[1])},
                                {"cnn/output/Variable_1": tf.float64}) == [
      "cnn/output/Variable_1 is float64, expected float32 (our scores/bias)"]


@pytest.mark.parametrize("drop,replace,message", [
    (("cnn/convolution2/Variable_1",), {},
     r"cnn/convolution2/Variable_1 \(our conv2/bias, shape \[64\]\) is missing"),
    ((), {"cnn/fully-connected/Variable": np.zeros((784, 1024), np.float32)},
     r"cnn/fully-connected/Variable has shape \[784, 1024\], expected \[3136, 1024\]"),
])
def test_a_broken_checkpoint_file_is_refused_naming_the_variable(tmp_path, drop, replace,
                                                                 message):
  prefix = str(tmp_path / "model.ckpt-1")
  seed_checkpoint.write_seed_checkpoint(prefix, optimizer=False, drop=drop,
                                       replace=replace)
  with pytest.raises(legacy.LegacyCheckpointError,
                     match=f"{prefix} does not hold the seed's network: {message}"):
    legacy.read_legacy_checkpoint(prefix)


# --- The same predictions -------------------------------------------------------------


def test_read_returns_the_weights_step_slots_and_beta_powers(seed_ckpt):
  prefix, values = seed_ckpt
  read = legacy.read_legacy_checkpoint(prefix)
  assert read.global_step == STEPS
  assert set(read.weights) == {name for name, _, _ in legacy.MODEL_VARIABLES}
  assert len(read.slots) == 16
  for name, value in {**read.weights, **read.slots}.items():
    np.testing.assert_array_equal(value, values[name], err_msg=name)
  np.testing.assert_allclose(read.beta_powers, (0.9 ** (STEPS + 1), 0.999 ** (STEPS + 1)),
                             rtol=1e-6)


@pytest.mark.parametrize("kind", ["checkpoint", "export"])
def test_our_cnn_with_the_legacy_weights_predicts_what_the_legacy_graph_does(
    kind, seed_ckpt, seed_export, images):
  path = seed_ckpt[0] if kind == "checkpoint" else os.path.join(seed_export, "export")
  read = legacy.read_legacy_checkpoint(path)
  assert (read.source.meta_graph is None) == (kind == "checkpoint")
  model = cnn.build_cnn()
  legacy.load_weights(model, read)
  keys = np.arange(len(images), dtype=np.int64) * 3 + 2**40
  scores, out_keys = legacy.run_legacy_graph(read.source, images, keys)
  np.testing.assert_array_equal(out_keys, keys)
  np.testing.assert_allclose(scores.sum(axis=1), 1.0, rtol=1e-5)
  ours = legacy.run_model(model, images)
  assert np.abs(ours - scores).max() <= 1e-5
  # Not a comparison of a network with itself: an untrained CNN predicts otherwise.
  assert np.abs(legacy.run_model(cnn.build_cnn(), images) - scores).max() > 1e-3


# --- Warm starts: weights, Adam's slots, the step ------------------------------------


def _slot_values(optimizer) -> dict:
  """{("conv1/kernel", "m"): value, ...} from the slot variables' own names: tf_keras's
  optimizers name them Adam/m/conv1/kernel, its legacy ones Adam/conv1/kernel/m."""
  variables = optimizer.variables() if callable(optimizer.variables) else optimizer.variables
  values = {}
  for variable in variables:
    parts = variable.name.split(":")[0].split("/")[1:]  # Past "Adam/".
    if not parts:  # The step.
      continue
    if parts[0] in ("m", "v"):
      values[("/".join(parts[1:]), parts[0])] = variable.numpy()
    elif parts[-1] in ("m", "v"):
      values[("/".join(parts[:-1]), parts[-1])] = variable.numpy()
  return values


@pytest.mark.parametrize("make_optimizer", [
    lambda: tf_keras.optimizers.Adam(1e-4),
    lambda: tf_keras.optimizers.legacy.Adam(1e-4),
], ids=["Adam", "legacy.Adam"])
def test_warm_start_sets_each_slot_and_the_step(seed_ckpt, make_optimizer):
  prefix, values = seed_ckpt
  model = cnn.build_cnn()
  optimizer = make_optimizer()
  # Creates the slots (zeros) and counts one step, which the warm start replaces.
  optimizer.apply_gradients((tf.zeros_like(v), v) for v in model.trainable_variables)
  legacy.warm_start(model, prefix, optimizer)
  assert int(optimizer.iterations.numpy()) == STEPS
  slots = _slot_values(optimizer)
  assert len(slots) == 16
  for name, layer, weight in legacy.MODEL_VARIABLES:
    owner = f"{layer}/{weight}"
    np.testing.assert_array_equal(slots[(owner, "m")], values[f"{name}/Adam"], err_msg=name)
    np.testing.assert_array_equal(slots[(owner, "v")], values[f"{name}/Adam_1"], err_msg=name)
    np.testing.assert_array_equal(getattr(model.get_layer(layer), weight).numpy(),
                                  values[name], err_msg=name)


def test_the_next_adam_step_is_the_seeds_next_step(seed_ckpt):
  """One more step of the seed's own TF1 training graph, and one of ours from the warm
  start, on the same batch, land on the same weights: the slots, the step and Adam's
  bias correction all carried over."""
  prefix, _ = seed_ckpt
  rng = np.random.default_rng(9)
  batch = rng.random((16, 784), np.float32)
  labels = np.eye(10, dtype=np.float32)[rng.integers(0, 10, 16)]
  with tf.Graph().as_default() as graph, tf.compat.v1.Session(graph=graph) as sess:
    x = tf.compat.v1.placeholder(tf.float32, [None, 784])
    t = tf.compat.v1.placeholder(tf.float32, [None, 10])
    global_step = tf.compat.v1.Variable(0, trainable=False)
    p = seed_mnist.get_model(x, 1.0, training=True)
    train_step, _, _ = seed_mnist.get_trainer(p, t, global_step)
    tf.compat.v1.train.Saver().restore(sess, prefix)
    sess.run(train_step, {x: batch, t: labels})
    expected = {v.op.name: sess.run(v) for v in tf.compat.v1.global_variables()}
  model = cnn.build_cnn()
  # The r0.12 AdamOptimizer's epsilon; the learning rate is the seed's.
  optimizer = tf_keras.optimizers.Adam(1e-4, epsilon=1e-8)
  optimizer.build(model.trainable_variables)
  legacy.warm_start(model, prefix, optimizer)
  with tf.GradientTape() as tape:
    loss = -tf.reduce_sum(labels * tf.math.log(model(batch, training=False)))  # The seed's.
  variables = model.trainable_variables
  optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
  assert int(optimizer.iterations.numpy()) == expected["Variable"] == STEPS + 1
  for name, layer, weight in legacy.MODEL_VARIABLES:
    np.testing.assert_allclose(getattr(model.get_layer(layer), weight).numpy(),
                               expected[name], atol=2e-6, err_msg=name)


def test_warm_starting_the_optimizer_from_an_export_names_what_is_missing(seed_export):
  model = cnn.build_cnn()
  optimizer = tf_keras.optimizers.Adam()
  optimizer.build(model.trainable_variables)
  with pytest.raises(legacy.LegacyCheckpointError,
                     match=r"export has no optimizer state to warm-start from \(missing "
                     r"Variable, cnn/convolution1/Variable/Adam, .*leave out "
                     "--warm_start_optimizer"):
    legacy.warm_start(model, os.path.join(seed_export, "export"), optimizer)


def test_fingerprints_tell_equal_weights_from_others():
  a = [tf.Variable([1.0, -2.0]), tf.Variable([[0.5]])]
  b = [tf.Variable([1.0, -2.0]), tf.Variable([[0.5]])]
  assert int(legacy.weights_fingerprint(a)) == int(legacy.weights_fingerprint(b))
  b[1].assign([[0.50000006]])  # One unit in the last place.
  assert int(legacy.weights_fingerprint(a)) != int(legacy.weights_fingerprint(b))
