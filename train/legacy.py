"""The r0.12 program's trained models: find, check, run and load them into our CNN.

The seed saved two kinds of files. Its Supervisor wrote checkpoints,
`<log_dir>/model.ckpt-N`, of the training graph: the global step `Variable`, the
network's eight variables, named by the graph (`cnn/convolution1/Variable` for the
first kernel, `cnn/convolution1/Variable_1` for its bias, ...), and Adam's two
slots beside each (`.../Adam`, `.../Adam_1`) with `optimizer/beta1_power` and
`optimizer/beta2_power`. At the end it wrote `<model_dir>/export.meta`, the
prediction graph whose `inputs` and `outputs` collections hold JSON maps of
`key`/`image` and `key`/`scores` to tensor names, and `<model_dir>/export`, a
checkpoint of that graph's variables only.

Every variable is mapped by the graph's own name onto a layer of model/cnn.py and
checked against that layer's shape; the layers compute what the seed's ops did
(Conv2D with SAME padding is tf.nn.conv2d, MaxPooling2D(2, SAME) is tf.nn.max_pool,
Flatten of NHWC is the seed's reshape to [-1, 7*7*64], Dense is matmul + bias), so
the weights carry over unchanged. `run_legacy_graph` runs the seed's own graph,
which is how train.migrate proves it.
"""

import dataclasses
import functools
import json
import os

from absl import logging
import numpy as np
import tensorflow as tf
import tf_keras

from model import cnn

GLOBAL_STEP = "Variable"  # The seed's first tf.Variable: tf.Variable(0, trainable=False).
# Adam's slots of a variable V are V/Adam (first moment, m) and V/Adam_1 (second, v).
ADAM_M, ADAM_V = "Adam", "Adam_1"
BETA_POWERS = ("optimizer/beta1_power", "optimizer/beta2_power")
# The r0.12 tf.train.AdamOptimizer's defaults, which the seed kept.
LEGACY_BETA_1 = 0.9
# The collections of export.meta that name the prediction API's tensors.
INPUTS_COLLECTION, OUTPUTS_COLLECTION = "inputs", "outputs"

# The seed graph's variable names, in its order, and the weight of our CNN each is.
MODEL_VARIABLES = (
    ("cnn/convolution1/Variable", "conv1", "kernel"),
    ("cnn/convolution1/Variable_1", "conv1", "bias"),
    ("cnn/convolution2/Variable", "conv2", "kernel"),
    ("cnn/convolution2/Variable_1", "conv2", "bias"),
    ("cnn/fully-connected/Variable", "hidden", "kernel"),
    ("cnn/fully-connected/Variable_1", "hidden", "bias"),
    ("cnn/output/Variable", "scores", "kernel"),
    ("cnn/output/Variable_1", "scores", "bias"),
)

# Images per run of either network: a whole test set of conv activations at once
# would take gigabytes.
_RUN_BATCH_SIZE = 500


class LegacyCheckpointError(ValueError):
  """The path holds no legacy checkpoint, or one that does not fit the seed's network."""


@dataclasses.dataclass(frozen=True)
class LegacySource:
  """A legacy checkpoint found at a user's path."""
  prefix: str                # What tf.train.load_checkpoint reads.
  meta_graph: str | None     # The seed's export.meta beside it, when it is an export.


@dataclasses.dataclass(frozen=True)
class LegacyCheckpoint:
  """The values read from a legacy checkpoint, checked against our CNN."""
  source: LegacySource
  weights: dict              # Legacy name -> ndarray, for every MODEL_VARIABLES name.
  global_step: int | None    # None: an export, which has no training state.
  slots: dict                # Legacy slot name (V/Adam, V/Adam_1) -> ndarray; may be empty.
  beta_powers: tuple | None  # (beta1_power, beta2_power), or None.


@functools.cache
def _expected_shapes() -> dict:
  """Legacy name -> (our weight's name, its shape), from the CNN itself (built once,
  eagerly: never call it first inside a tf.Graph)."""
  model = cnn.build_cnn()
  return {name: (f"{layer}/{weight}",
                 tuple(getattr(model.get_layer(layer), weight).shape))
          for name, layer, weight in MODEL_VARIABLES}


def _is_export_meta_graph(meta_path: str) -> bool:
  """Whether `meta_path` is a meta graph with the seed export's API collections."""
  if not tf.io.gfile.exists(meta_path):
    return False
  meta = tf.compat.v1.MetaGraphDef()
  with tf.io.gfile.GFile(meta_path, "rb") as f:
    meta.ParseFromString(f.read())
  return {INPUTS_COLLECTION, OUTPUTS_COLLECTION} <= set(meta.collection_def)


def _checkpoint_exists(prefix: str) -> bool:
  # V2 checkpoints (the default since r0.12) are PREFIX.index + PREFIX.data-*;
  # V1 ones a single file named PREFIX.
  return (tf.io.gfile.exists(prefix + ".index")
          or (tf.io.gfile.exists(prefix) and not tf.io.gfile.isdir(prefix)))


def find_legacy_checkpoint(path: str) -> LegacySource:
  """Resolves `path`: a checkpoint prefix, a directory with a `checkpoint` file (the
  newest is taken), or the seed's export prefix (`<model_dir>/export`, with
  export.meta beside it). The seed's `<model_dir>` itself is taken for its export.
  """
  prefix = path
  if tf.io.gfile.isdir(path):
    prefix = tf.train.latest_checkpoint(path)
    if prefix is None:
      export = os.path.join(path, "export")
      if not (_checkpoint_exists(export) and _is_export_meta_graph(export + ".meta")):
        raise LegacyCheckpointError(
            f"{path} is a directory without a 'checkpoint' file naming a checkpoint and "
            "without the seed's export (export.meta + export.index): expected the seed's "
            "--log_dir, its --model_dir, or a checkpoint prefix")
      prefix = export
  elif not _checkpoint_exists(path):
    raise LegacyCheckpointError(
        f"no checkpoint at {path}: expected a checkpoint prefix (such as "
        "<log_dir>/model.ckpt-1000, with its .index beside it), a directory with a "
        "'checkpoint' file, or the seed's export prefix <model_dir>/export")
  meta = prefix + ".meta"
  return LegacySource(prefix, meta if _is_export_meta_graph(meta) else None)


def check_variables(shapes: dict, dtypes: dict | None = None) -> list[str]:
  """What keeps a checkpoint of these {name: shape} from being the seed's network.

  Returns one message per missing, extra or mis-shaped variable, naming it; empty
  when it fits. Optimizer state (the global step, Adam's slots of the seed's
  variables and its beta powers) is allowed beside the network.
  """
  expected = _expected_shapes()
  dtypes = dtypes or {}
  allowed_state = {GLOBAL_STEP, *BETA_POWERS,
                   *(f"{name}/{slot}" for name in expected for slot in (ADAM_M, ADAM_V))}
  problems = []
  for name, (ours, shape) in expected.items():
    if name not in shapes:
      problems.append(f"{name} (our {ours}, shape {list(shape)}) is missing")
    elif tuple(shapes[name]) != shape:
      problems.append(f"{name} has shape {list(shapes[name])}, expected {list(shape)} "
                      f"(our {ours})")
    elif name in dtypes and dtypes[name] != tf.float32:
      problems.append(f"{name} is {dtypes[name].name}, expected float32 (our {ours})")
  for name in sorted(set(shapes) - set(expected) - allowed_state):
    problems.append(f"{name} (shape {list(shapes[name])}) is not a variable of the seed's "
                    "network")
  for name in sorted(set(shapes) & allowed_state - {GLOBAL_STEP, *BETA_POWERS}):
    ours, shape = expected[name.rsplit("/", 1)[0]]
    if tuple(shapes[name]) != shape:
      problems.append(f"{name} has shape {list(shapes[name])}, expected {list(shape)} "
                      f"(Adam's slot of our {ours})")
  return problems


def read_legacy_checkpoint(path: str) -> LegacyCheckpoint:
  """Finds, reads and checks the legacy checkpoint at `path` (see find_legacy_checkpoint).

  Raises LegacyCheckpointError naming every missing, extra or mis-shaped variable.
  """
  source = find_legacy_checkpoint(path)
  try:
    reader = tf.train.load_checkpoint(source.prefix)
  except (tf.errors.OpError, ValueError) as e:
    raise LegacyCheckpointError(f"{source.prefix} is not a readable checkpoint: "
                                f"{str(e).splitlines()[0]}") from e
  shapes = reader.get_variable_to_shape_map()
  problems = check_variables(shapes, reader.get_variable_to_dtype_map())
  if problems:
    raise LegacyCheckpointError(
        f"{source.prefix} does not hold the seed's network: " + "; ".join(problems))
  weights = {name: reader.get_tensor(name) for name, _, _ in MODEL_VARIABLES}
  slots = {f"{name}/{slot}": reader.get_tensor(f"{name}/{slot}")
           for name, _, _ in MODEL_VARIABLES for slot in (ADAM_M, ADAM_V)
           if f"{name}/{slot}" in shapes}
  step = int(reader.get_tensor(GLOBAL_STEP)) if GLOBAL_STEP in shapes else None
  powers = (tuple(float(reader.get_tensor(n)) for n in BETA_POWERS)
            if all(n in shapes for n in BETA_POWERS) else None)
  return LegacyCheckpoint(source, weights, step, slots, powers)


def _our_variable(model: tf_keras.Model, layer: str, weight: str):
  return getattr(model.get_layer(layer), weight)


def load_weights(model: tf_keras.Model, legacy: LegacyCheckpoint) -> None:
  """Assigns the legacy weights to our CNN's variables, whatever their strategy.

  A parameter-server (possibly sharded) or mirrored variable takes a whole value
  in the cross-replica context and places or splits it itself.
  """
  for name, layer, weight in MODEL_VARIABLES:
    _our_variable(model, layer, weight).assign(legacy.weights[name])


def set_adam_slots(optimizer, variable, m: np.ndarray, v: np.ndarray) -> None:
  """Sets Adam's first and second moments of `variable` in `optimizer`.

  TF1's Adam slots are tf_keras's: the same moving averages of the gradient and of
  its square. tf_keras's optimizers (and their subclasses) keep them in
  `_momentums`/`_velocities` by the variable's key; its legacy optimizers (and
  Keras 2's OptimizerV2 subclasses) behind `get_slot(variable, "m" | "v")`. A
  variable split over parameter servers (a ShardedVariable) has a slot per shard.
  """
  for piece, m_piece, v_piece in _shards(variable, m, v):
    if hasattr(optimizer, "get_slot"):
      optimizer.get_slot(piece, "m").assign(m_piece)
      optimizer.get_slot(piece, "v").assign(v_piece)
    else:
      index = optimizer._index_dict[optimizer._var_key(piece)]
      optimizer._momentums[index].assign(m_piece)
      optimizer._velocities[index].assign(v_piece)


def _shards(variable, *values):
  """[(variable, *values)], or for a ShardedVariable each shard with its slices of
  `values`: shards split the first axis, in order."""
  shards = getattr(variable, "variables", None)  # Only a ShardedVariable has them.
  if not isinstance(shards, (list, tuple)):
    return [(variable, *values)]
  pieces, start = [], 0
  for shard in shards:
    end = start + int(shard.shape[0])
    pieces.append((shard, *(value[start:end] for value in values)))
    start = end
  return pieces


def load_optimizer_state(model: tf_keras.Model, optimizer,
                         legacy: LegacyCheckpoint) -> None:
  """Adam's slots of every variable and the global step, as the optimizer's iterations.

  The optimizer must be built on the model's trainable variables already.
  """
  missing = [f"{name}/{slot}" for name, _, _ in MODEL_VARIABLES for slot in (ADAM_M, ADAM_V)
             if f"{name}/{slot}" not in legacy.slots]
  if legacy.global_step is None:
    missing.insert(0, GLOBAL_STEP)
  if missing:
    raise LegacyCheckpointError(
        f"{legacy.source.prefix} has no optimizer state to warm-start from (missing "
        f"{', '.join(missing[:3])}{', ...' if len(missing) > 3 else ''}): expected a "
        "training checkpoint of the seed's --log_dir, not its export; leave out "
        "--warm_start_optimizer to start from the weights only")
  for name, layer, weight in MODEL_VARIABLES:
    set_adam_slots(optimizer, _our_variable(model, layer, weight),
                   legacy.slots[f"{name}/{ADAM_M}"], legacy.slots[f"{name}/{ADAM_V}"])
  optimizer.iterations.assign(legacy.global_step)
  if legacy.beta_powers is not None:
    # TF1 multiplies beta1_power by beta1 after each update: beta1^(updates + 1).
    updates = round(np.log(legacy.beta_powers[0]) / np.log(LEGACY_BETA_1)) - 1
    if updates != legacy.global_step:
      logging.warning("%s: the global step is %d but Adam's beta1_power counts %d updates; "
                      "the bias correction follows the global step",
                      legacy.source.prefix, legacy.global_step, updates)


def warm_start(model: tf_keras.Model, path: str, optimizer=None) -> LegacyCheckpoint:
  """Loads the legacy checkpoint at `path` into `model` (and `optimizer`'s Adam state
  and step, when given); returns what was read."""
  legacy = read_legacy_checkpoint(path)
  load_weights(model, legacy)
  if optimizer is not None:
    load_optimizer_state(model, optimizer, legacy)
  return legacy


def weights_fingerprint(variables) -> tf.Tensor:
  """An int64 that equal variables share: the sum of their float32 bit patterns.

  Integer sums are exact in any order, so two replicas holding the same values
  compute the same number, and a replica holding any other values almost never does.
  """
  total = tf.constant(0, tf.int64)
  for variable in variables:
    bits = tf.bitcast(tf.cast(tf.convert_to_tensor(variable), tf.float32), tf.int32)
    total += tf.reduce_sum(tf.cast(bits, tf.int64))
  return total


def check_replicas_equal(strategy: tf.distribute.Strategy, variables) -> None:
  """Under a synchronous multi-worker strategy: raises unless every replica holds the
  same values of `variables`. A collective: every worker must call it."""
  def fingerprint_fn():
    return tf.reshape(weights_fingerprint(variables), [1])

  per_replica = strategy.run(fingerprint_fn)
  everyone = strategy.gather(per_replica, axis=0).numpy()
  if len(set(everyone.tolist())) != 1:
    raise LegacyCheckpointError(
        f"the replicas started from different weights (fingerprints {everyone.tolist()}): "
        "every worker must read the same legacy checkpoint")


def _run_in_batches(run_fn, images: np.ndarray, keys: np.ndarray):
  scores, out_keys = [], []
  for start in range(0, len(images), _RUN_BATCH_SIZE):
    batch_scores, batch_keys = run_fn(images[start:start + _RUN_BATCH_SIZE],
                                      keys[start:start + _RUN_BATCH_SIZE])
    scores.append(batch_scores)
    out_keys.append(batch_keys)
  return np.concatenate(scores), np.concatenate(out_keys)


def _seed_network(x, variables: dict):
  """The seed's get_model(x, None, training=False), op for op, in a TF1 graph."""
  def conv_relu_pool(inputs, kernel, bias):
    conv = tf.compat.v1.nn.conv2d(inputs, kernel, strides=[1, 1, 1, 1], padding="SAME")
    return tf.compat.v1.nn.max_pool(tf.nn.relu(conv + bias), ksize=[1, 2, 2, 1],
                                    strides=[1, 2, 2, 1], padding="SAME")

  image = tf.reshape(x, [-1, cnn.IMAGE_SIZE, cnn.IMAGE_SIZE, 1])
  pool1 = conv_relu_pool(image, variables["cnn/convolution1/Variable"],
                         variables["cnn/convolution1/Variable_1"])
  pool2 = conv_relu_pool(pool1, variables["cnn/convolution2/Variable"],
                         variables["cnn/convolution2/Variable_1"])
  flat = tf.reshape(pool2, [-1, 7 * 7 * 64])
  hidden = tf.nn.relu(tf.matmul(flat, variables["cnn/fully-connected/Variable"])
                      + variables["cnn/fully-connected/Variable_1"])
  return tf.nn.softmax(tf.matmul(hidden, variables["cnn/output/Variable"])
                       + variables["cnn/output/Variable_1"])


def run_legacy_graph(source: LegacySource, images: np.ndarray,
                     keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """The seed's own predictions: (scores [N, 10], keys [N]) for float32 images [N, 784].

  An export runs its export.meta, imported with tf.compat.v1 and fed through its
  `inputs`/`outputs` collections. A training checkpoint runs the seed's prediction
  network rebuilt in a TF1 graph, its variables restored by their names by a Saver.
  """
  shapes = {name: shape for name, (_, shape) in _expected_shapes().items()}  # Keras, eagerly.
  with tf.Graph().as_default() as graph, tf.compat.v1.Session(graph=graph) as sess:
    if source.meta_graph:
      saver = tf.compat.v1.train.import_meta_graph(source.meta_graph, clear_devices=True)
      saver.restore(sess, source.prefix)
      inputs = json.loads(graph.get_collection(INPUTS_COLLECTION)[0])
      outputs = json.loads(graph.get_collection(OUTPUTS_COLLECTION)[0])
      fetches = [outputs["scores"], outputs["key"]]

      def run_fn(image_batch, key_batch):
        return sess.run(fetches, {inputs["image"]: image_batch, inputs["key"]: key_batch})
    else:
      x = tf.compat.v1.placeholder(tf.float32, [None, cnn.IMAGE_PIXELS])
      key = tf.compat.v1.placeholder(tf.int64, [None])
      variables = {name: tf.compat.v1.Variable(tf.zeros(shape), name=name)
                   for name, shape in shapes.items()}
      scores = _seed_network(x, variables)
      tf.compat.v1.train.Saver(var_list=variables).restore(sess, source.prefix)
      fetches = [scores, tf.identity(key)]

      def run_fn(image_batch, key_batch):
        return sess.run(fetches, {x: image_batch, key: key_batch})

    return _run_in_batches(run_fn, images, keys)


def run_model(model: tf_keras.Model, images: np.ndarray) -> np.ndarray:
  """Our CNN's scores for float32 images [N, 784], in the same batches as the legacy run."""
  return np.concatenate([model(images[start:start + _RUN_BATCH_SIZE], training=False).numpy()
                         for start in range(0, len(images), _RUN_BATCH_SIZE)])
