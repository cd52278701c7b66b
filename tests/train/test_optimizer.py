"""Tests for train/optimizer.py: FusedAdam is tf_keras's Adam, one kernel per variable."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from train import optimizer as optimizer_lib

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SHAPES = [(30, 20), (20,), (5, 5, 1, 4)]


def _initial_values(seed=0):
  rng = np.random.default_rng(seed)
  return [rng.normal(size=shape).astype(np.float32) for shape in SHAPES]


def _gradients(num_steps, seed=1):
  rng = np.random.default_rng(seed)
  return [[rng.normal(size=shape).astype(np.float32) for shape in SHAPES]
          for _ in range(num_steps)]


def _train(optimizer, gradients, initial=None):
  """Applies each list of gradients in turn; returns the variables and the optimizer."""
  variables = [tf.Variable(value) for value in (initial or _initial_values())]
  optimizer.build(variables)

  @tf.function
  def apply_fn(grads):
    optimizer.apply_gradients(zip(grads, variables))

  for grads in gradients:
    apply_fn(grads)
  return variables, optimizer


def _slots(optimizer):
  return [v.numpy() for v in optimizer._momentums + optimizer._velocities]


@pytest.mark.parametrize("kwargs", [
    dict(learning_rate=1e-2),
    dict(learning_rate=1e-3, beta_1=0.8, beta_2=0.99, epsilon=1e-4),
    dict(learning_rate=1e-2, adaptive_epsilon=True, epsilon=1e-3),
    dict(learning_rate=tf_keras.optimizers.schedules.CosineDecay(1e-2, decay_steps=20,
                                                                 alpha=0.1)),
    dict(learning_rate=1e-2, amsgrad=True),
], ids=["default", "betas", "adaptive_epsilon", "cosine", "amsgrad"])
def test_same_updates_as_tf_keras_adam(kwargs):
  gradients = _gradients(12)
  expected, keras_adam = _train(tf_keras.optimizers.Adam(**kwargs), gradients)
  actual, fused = _train(optimizer_lib.FusedAdam(**kwargs), gradients)
  for a, e in zip(actual, expected):
    np.testing.assert_allclose(a.numpy(), e.numpy(), rtol=1e-5, atol=1e-6)
  for a, e in zip(_slots(fused), _slots(keras_adam)):
    np.testing.assert_allclose(a, e, rtol=1e-5, atol=1e-7)
  assert int(fused.iterations.numpy()) == int(keras_adam.iterations.numpy()) == 12


def test_each_dense_variable_is_updated_by_one_fused_kernel():
  variables = [tf.Variable(value) for value in _initial_values()]
  optimizer = optimizer_lib.FusedAdam(1e-3)
  optimizer.build(variables)

  @tf.function
  def apply_fn(grads):
    optimizer.apply_gradients(zip(grads, variables))

  graph = apply_fn.get_concrete_function(_gradients(1)[0]).graph
  op_types = [op.type for op in graph.get_operations()]
  assert op_types.count("ResourceApplyAdam") == len(SHAPES)
  # The only other write is the step counter's increment.
  assert op_types.count("AssignAddVariableOp") == 1
  assert "AssignSubVariableOp" not in op_types and "AssignVariableOp" not in op_types


def test_sparse_gradients_match_tf_keras_adam():
  table = np.arange(40, dtype=np.float32).reshape(10, 4)
  results = []
  for optimizer in (tf_keras.optimizers.Adam(0.1), optimizer_lib.FusedAdam(0.1)):
    variable = tf.Variable(table)
    optimizer.build([variable])
    for ids in ([1, 3], [3, 7, 7]):
      with tf.GradientTape() as tape:
        loss = tf.reduce_sum(tf.gather(variable, ids) ** 2)
      grad = tape.gradient(loss, variable)
      assert isinstance(grad, tf.IndexedSlices)
      optimizer.apply_gradients([(grad, variable)])
    results.append(variable.numpy())
  np.testing.assert_allclose(results[1], results[0], rtol=1e-6)
  assert not np.array_equal(results[1], table)


@pytest.mark.parametrize("first,second", [
    (tf_keras.optimizers.Adam, optimizer_lib.FusedAdam),
    (optimizer_lib.FusedAdam, tf_keras.optimizers.Adam),
], ids=["keras_to_fused", "fused_to_keras"])
def test_checkpoints_are_interchangeable_with_tf_keras_adam(first, second, tmp_path):
  gradients = _gradients(6)
  variables, optimizer = _train(first(1e-2), gradients[:3])
  path = tf.train.Checkpoint(variables=variables, optimizer=optimizer).save(
      str(tmp_path / "ckpt"))

  restored_variables = [tf.Variable(tf.zeros_like(v)) for v in variables]
  restored = second(1e-2)
  restored.build(restored_variables)
  tf.train.Checkpoint(variables=restored_variables, optimizer=restored).restore(
      path).assert_consumed()
  assert int(restored.iterations.numpy()) == 3
  for a, e in zip(_slots(restored), _slots(optimizer)):
    np.testing.assert_array_equal(a, e)

  # Both go on from the checkpoint to the same place.
  @tf.function
  def apply_fn(opt, variables, grads):
    opt.apply_gradients(zip(grads, variables))

  for grads in gradients[3:]:
    apply_fn(optimizer, variables, grads)
    apply_fn(restored, restored_variables, grads)
  for a, e in zip(restored_variables, variables):
    np.testing.assert_allclose(a.numpy(), e.numpy(), rtol=1e-5, atol=1e-6)


def test_config_round_trip_keeps_use_locking():
  optimizer = optimizer_lib.FusedAdam(3e-4, use_locking=False)
  clone = optimizer_lib.FusedAdam.from_config(optimizer.get_config())
  assert (clone.use_locking, clone.get_config()["learning_rate"]) == (False, 3e-4)
  assert optimizer_lib.FusedAdam().use_locking


@pytest.mark.slow
def test_exact_step_count_under_parameter_servers_with_sharded_variables(tmp_path):
  """Two asynchronous workers, two ps shards: `iterations` counts every step once."""
  run = subprocess.run(
      [sys.executable, os.path.join(REPO, "tests", "train", "fused_adam_cluster.py")],
      capture_output=True, text=True, timeout=240, cwd=REPO)
  assert run.returncode == 0, run.stderr[-3000:]
  result = json.loads(run.stdout.strip().splitlines()[-1])
  assert result["iterations"] == result["scheduled_steps"] == 60
  assert result["fused_kernels_per_step"] == result["num_variable_shards"] > 8
  assert result["last_loss"] < result["first_loss"]
