"""Tests for train/data.py: batch shapes, sharding, shuffling and the eval pass."""

import numpy as np
import pytest
import tensorflow as tf

from common import mnist
from train import data


def indexed(n: int):
  """Random uint8 images whose label is their row index, to track every example."""
  images = np.random.default_rng(0).integers(0, 256, (n, 784), dtype=np.uint8)
  images[0, :2] = (0, 255)  # Both ends of the range, to check the scaling.
  return images, np.arange(n, dtype=np.int64)


def epoch_labels(dataset: tf.data.Dataset) -> np.ndarray:
  return np.concatenate([labels.numpy() for _, labels in dataset])


def test_batches_are_static_float32_in_range_and_match_their_labels():
  images, labels = indexed(40)
  dataset = data.make_dataset_fn(images, labels, 16, seed=3)()
  assert dataset.element_spec == (tf.TensorSpec((16, 784), tf.float32),
                                  tf.TensorSpec((16,), tf.int64))
  for batch_images, batch_labels in dataset.take(5):  # Past one epoch: it repeats.
    assert 0.0 <= batch_images.numpy().min() and batch_images.numpy().max() <= 1.0
    # Bit-identical to common.mnist.to_float, the serving-side conversion.
    np.testing.assert_array_equal(batch_images.numpy(),
                                  mnist.to_float(images[batch_labels.numpy()]))


def test_one_epoch_without_repeat_drops_only_the_remainder():
  images, labels = indexed(40)
  seen = epoch_labels(data.make_dataset_fn(images, labels, 16, repeat=False)())
  assert len(seen) == 32 and len(set(seen.tolist())) == 32
  assert not np.array_equal(seen, np.arange(32))  # Shuffled.


def test_each_repeated_epoch_is_a_permutation():
  images, labels = indexed(12)
  dataset = data.make_dataset_fn(images, labels, 4, seed=1)()
  seen = epoch_labels(dataset.take(6))
  assert sorted(seen[:12].tolist()) == list(range(12))
  assert sorted(seen[12:].tolist()) == list(range(12))
  assert not np.array_equal(seen[:12], seen[12:])  # Reshuffled each epoch.


def test_per_replica_batch_size_from_the_input_context():
  images, labels = indexed(40)
  context = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=1,
                                       num_replicas_in_sync=2)
  dataset = data.make_dataset_fn(images, labels, 16)(context)
  assert dataset.element_spec[0].shape == (8, 784)
  assert dataset.element_spec[1].shape == (8,)


def test_shards_are_disjoint_halves_even_when_shuffled():
  # seed=None: were the data shuffled before sharding, each pipeline would draw its
  # own order and the shards would overlap.
  images, labels = indexed(20)
  dataset_fn = data.make_dataset_fn(images, labels, 4, repeat=False)
  shards = [epoch_labels(dataset_fn(tf.distribute.InputContext(2, i, 2))) for i in (0, 1)]
  assert sorted(shards[0].tolist()) == list(range(0, 20, 2))
  assert sorted(shards[1].tolist()) == list(range(1, 20, 2))


def test_seed_none_shuffles_differently_per_call_and_a_seed_repeats():
  images, labels = indexed(64)
  unseeded = data.make_dataset_fn(images, labels, 64, repeat=False)
  first, second = epoch_labels(unseeded()), epoch_labels(unseeded())
  assert sorted(first.tolist()) == sorted(second.tolist()) == list(range(64))
  assert not np.array_equal(first, second)
  seeded = data.make_dataset_fn(images, labels, 64, repeat=False, seed=7)
  np.testing.assert_array_equal(epoch_labels(seeded()), epoch_labels(seeded()))
  other = data.make_dataset_fn(images, labels, 64, repeat=False, seed=8)
  assert not np.array_equal(epoch_labels(seeded()), epoch_labels(other()))


def test_a_fixed_seed_is_mixed_with_the_pipeline_id():
  # Shard i holds rows i, i + 2, ...: with one shuffle seed for both pipelines, shard 1
  # would come out as shard 0's order plus one.
  images, labels = indexed(64)
  dataset_fn = data.make_dataset_fn(images, labels, 64, repeat=False, seed=7)
  orders = [epoch_labels(dataset_fn(tf.distribute.InputContext(2, i, 2))) for i in (0, 1)]
  assert sorted(orders[1].tolist()) == sorted((orders[0] + 1).tolist())
  assert not np.array_equal(orders[1], orders[0] + 1)


def test_no_shuffle_keeps_order():
  images, labels = indexed(12)
  seen = epoch_labels(data.make_dataset_fn(images, labels, 4, shuffle=False, repeat=False)())
  np.testing.assert_array_equal(seen, np.arange(12))


def test_dataset_fn_traces_inside_tf_function():
  # ParameterServerStrategy traces dataset_fn into a function sent to each worker.
  images, labels = indexed(16)
  dataset_fn = data.make_dataset_fn(images, labels, 8)
  dataset = tf.function(lambda: dataset_fn(tf.distribute.InputContext()))()
  batch_images, batch_labels = next(iter(dataset))
  assert batch_images.shape == (8, 784) and batch_labels.dtype == tf.int64


def test_eval_dataset_covers_every_example_once_with_partial_last_batch():
  images, labels = indexed(23)
  dataset = data.make_eval_dataset(images, labels, 5)
  batches = list(dataset)
  assert [len(b) for _, b in batches] == [5, 5, 5, 5, 3]
  np.testing.assert_array_equal(np.concatenate([b.numpy() for _, b in batches]), labels)
  all_images = np.concatenate([i.numpy() for i, _ in batches])
  assert all_images.dtype == np.float32
  np.testing.assert_array_equal(all_images, mnist.to_float(images))


def test_rejects_float_images_and_bad_sizes():
  images, labels = indexed(8)
  with pytest.raises(ValueError, match=r"images are float32 \[8, 784\]: expected uint8"):
    data.make_dataset_fn(mnist.to_float(images), labels, 4)
  with pytest.raises(ValueError, match="7 labels for 8 images"):
    data.make_eval_dataset(images, labels[:7], 4)
  with pytest.raises(ValueError, match="global_batch_size 0: expected a positive integer"):
    data.make_dataset_fn(images, labels, 0)
  with pytest.raises(ValueError, match="cannot fill one batch of 16"):
    data.make_dataset_fn(images, labels, 16, repeat=False)()
  with pytest.raises(ValueError, match="input_pipeline_id 2: expected 0 to 1"):
    data.make_dataset_fn(images, labels, 4)(tf.distribute.InputContext(2, 2, 2))
  with pytest.raises(ValueError):  # 5 does not split over 2 replicas.
    data.make_dataset_fn(images, labels, 5)(tf.distribute.InputContext(1, 0, 2))
