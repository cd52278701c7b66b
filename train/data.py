"""The tf.data input pipeline, built per input pipeline by dataset_fn(input_context)."""

from typing import Callable

import numpy as np
import tensorflow as tf

from model import cnn

DatasetFn = Callable[[tf.distribute.InputContext | None], tf.data.Dataset]


def make_dataset_fn(images: np.ndarray, labels: np.ndarray, global_batch_size: int, *,
                    shuffle: bool = True, repeat: bool = True,
                    seed: int | None = None) -> DatasetFn:
  """Returns the training `dataset_fn(input_context=None)` over uint8 `images` [N, 784].

  Each call builds one input pipeline yielding (float32 [b, 784] images in [0, 1],
  int64 [b] labels), with b the per-replica batch size when an input context is given
  (`global_batch_size` otherwise). Batches are whole (drop_remainder) so that shapes
  are static. Hand the function to `strategy.distribute_datasets_from_function` or to
  `ClusterCoordinator.create_per_worker_dataset`.

  Randomness: under MultiWorkerMirroredStrategy each pipeline reads its own shard, so
  the pipelines differ by data. Under ParameterServerStrategy every worker is told
  num_input_pipelines == 1 and input_pipeline_id == 0 and reads all the data, so the
  workers differ only through their shuffle: keep seed=None there (and the global
  seed unset, which would also fix it), and each worker draws its own order. A fixed
  `seed` is mixed with input_pipeline_id, which only tells MWMS pipelines apart.
  """
  images, labels = _check_arrays(images, labels)
  _check_positive("global_batch_size", global_batch_size)
  if seed is not None and (not isinstance(seed, (int, np.integer)) or seed < 0):
    raise ValueError(f"seed {seed!r}: expected None or a non-negative integer")

  def dataset_fn(input_context: tf.distribute.InputContext | None = None) -> tf.data.Dataset:
    num_pipelines, pipeline_id = 1, 0
    batch_size = global_batch_size
    if input_context is not None:
      num_pipelines = input_context.num_input_pipelines
      pipeline_id = input_context.input_pipeline_id
      batch_size = input_context.get_per_replica_batch_size(global_batch_size)
      if not 0 <= pipeline_id < num_pipelines:
        raise ValueError(f"input_pipeline_id {pipeline_id}: expected 0 to "
                         f"{num_pipelines - 1} for {num_pipelines} input pipelines")
    shard_size = len(images[pipeline_id::num_pipelines])
    if shard_size == 0 or (not repeat and shard_size < batch_size):
      raise ValueError(f"{shard_size} examples in input pipeline {pipeline_id} of "
                       f"{num_pipelines} cannot fill one batch of {batch_size}: "
                       "expected a smaller batch, or repeat=True")
    # uint8, not float32: under ParameterServerStrategy this function is traced and
    # sent to every worker with the arrays embedded as constants, 47 MB for the
    # training images rather than 188 MB (and a GraphDef must stay under 2 GB).
    dataset = tf.data.Dataset.from_tensor_slices((images, labels))
    if num_pipelines > 1:
      # Shard before shuffling, so that the shards are disjoint whatever each
      # pipeline's shuffle order.
      dataset = dataset.shard(num_pipelines, pipeline_id)
    if shuffle:
      # A buffer of the whole shard gives a uniform shuffle, and is cheap in uint8.
      dataset = dataset.shuffle(shard_size, seed=_mix_seed(seed, pipeline_id),
                                reshuffle_each_iteration=True)
    if repeat:
      dataset = dataset.repeat()
    dataset = dataset.batch(batch_size, drop_remainder=True)
    dataset = dataset.map(_scale_images, num_parallel_calls=tf.data.AUTOTUNE)
    return dataset.prefetch(tf.data.AUTOTUNE)

  return dataset_fn


def make_eval_dataset(images: np.ndarray, labels: np.ndarray,
                      batch_size: int) -> tf.data.Dataset:
  """Every example exactly once, in order, the last batch possibly partial."""
  images, labels = _check_arrays(images, labels)
  _check_positive("batch_size", batch_size)
  dataset = tf.data.Dataset.from_tensor_slices((images, labels))
  dataset = dataset.batch(batch_size, drop_remainder=False)
  dataset = dataset.map(_scale_images, num_parallel_calls=tf.data.AUTOTUNE)
  return dataset.prefetch(tf.data.AUTOTUNE)


def _scale_images(images: tf.Tensor, labels: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
  # Mapped on whole batches: one vectorized op per batch, not one per example.
  # float32 division by 255, bit-identical to common.mnist.to_float.
  return tf.cast(images, tf.float32) / 255.0, labels


def _mix_seed(seed: int | None, pipeline_id: int) -> int | None:
  if seed is None:
    return None
  return int(np.random.SeedSequence([seed, pipeline_id]).generate_state(1)[0])


def _check_arrays(images, labels) -> tuple[np.ndarray, np.ndarray]:
  images, labels = np.asarray(images), np.asarray(labels)
  if images.dtype != np.uint8 or images.ndim != 2 or images.shape[1] != cnn.IMAGE_PIXELS:
    raise ValueError(f"images are {images.dtype} {list(images.shape)}: expected uint8 "
                     f"[N, {cnn.IMAGE_PIXELS}] (common.mnist keeps them uint8; the pipeline "
                     "scales them to [0, 1])")
  if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
    raise ValueError(f"labels are {labels.dtype} {list(labels.shape)}: expected integers [N]")
  if len(labels) != len(images):
    raise ValueError(f"{len(labels)} labels for {len(images)} images: "
                     "expected one label per image")
  return images, labels.astype(np.int64, copy=False)


def _check_positive(name: str, value) -> None:
  if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
    raise ValueError(f"{name} {value!r}: expected a positive integer")
