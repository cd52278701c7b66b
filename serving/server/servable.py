"""One loaded version of a model: TF Serving's SavedModelBundle, a TF1 Session on its graph."""

import os
import threading
import time

from absl import logging
import grpc
import tensorflow as tf
from tensorflow.core.protobuf import config_pb2

from serving.server import config
from serving.server import tensors
# Imported by name: Servable's `batching` argument is the module's name too.
from serving.server.batching import BatchScheduler
from serving.server.errors import ServingError

DEFAULT_SIGNATURE = tf.saved_model.DEFAULT_SERVING_SIGNATURE_DEF_KEY
REAL_SERVER_BINARY = "tensorflow_model_server"
TFLITE_FILE = "model.tflite"
PER_MODEL_BATCHING_FILE = "batching_params.pbtxt"


class UnsupportedModelError(Exception):
  """A version that needs a feature only tensorflow_model_server has (TFLite, TPU)."""


def check_supported(path: str, options: config.LoadOptions) -> None:
  """Raises UnsupportedModelError, naming the flag, for a version this server cannot run."""
  has_saved_model = any(tf.io.gfile.exists(os.path.join(path, name))
                        for name in ("saved_model.pb", "saved_model.pbtxt"))
  has_tflite = tf.io.gfile.exists(os.path.join(path, TFLITE_FILE))
  use_binary = f"serve it with {REAL_SERVER_BINARY}"
  if has_tflite and (options.prefer_tflite_model or not has_saved_model):
    raise UnsupportedModelError(
        f"{path} is a TensorFlow Lite model ({TFLITE_FILE}"
        f"{', --prefer_tflite_model' if options.prefer_tflite_model else ''}); this server runs "
        f"SavedModels only: {use_binary} --prefer_tflite_model=true")
  if "tpu" in options.saved_model_tags:
    raise UnsupportedModelError(
        f"--saved_model_tags={','.join(options.saved_model_tags)} asks for a TPU graph; this "
        f"server has no TPU support: {use_binary} on a TPU host")


class Servable:
  """One version of one model, loaded as TF Serving's SavedModelBundle: a Session on its graph.

  `on_run(seconds)`, when given, hears how long each session run took.
  """

  def __init__(self, name: str, version: int, path: str,
               options: config.LoadOptions = config.LoadOptions(), on_run=None):
    self.name, self.version, self.path = name, version, path
    check_supported(path, options)
    self.graph = tf.Graph()
    self.session = tf.compat.v1.Session(graph=self.graph, config=options.session_config)
    try:
      with self.graph.as_default():
        meta_graph = tf.compat.v1.saved_model.loader.load(
            self.session, list(options.saved_model_tags), path)
    except BaseException:
      self.session.close()
      raise
    # All of them, __saved_model_init_op included, as TF Serving's metadata lists them.
    self.signatures = dict(meta_graph.signature_def)
    self.warmup_requests_run = 0
    self._batching = _batching_options(path, options)
    self._on_run = on_run or (lambda seconds: None)
    self._callables = {}
    self._batchers = {}
    self._lock = threading.RLock()  # _batcher makes a callable while holding it.
    self._in_flight = 0
    self._cond = threading.Condition()
    self._closed = False

  def find_signature(self, signature_name: str) -> tuple:
    """(name, SignatureDef or None); an empty name means serving_default."""
    signature_name = signature_name or DEFAULT_SIGNATURE
    return signature_name, self.signatures.get(signature_name)

  def predict_request(self, request, limits: config.RequestLimits) -> tuple:
    """Predict on a PredictRequest: its inputs decoded within `limits`, the signature's
    defaults for inputs not sent; returns (signature name, {output name: array})."""
    inputs = tensors.decode_inputs(request.inputs, limits)
    signature = self.find_signature(request.model_spec.signature_name)[1]
    if signature is not None:
      inputs = tensors.with_defaults(inputs, signature)
    return self.predict(request.model_spec.signature_name, inputs, request.output_filter)

  def predict(self, signature_name: str, inputs: dict, output_filter=()) -> tuple:
    """Validates and runs one Predict; returns (signature name, {output name: array})."""
    signature_name, signature = self.find_signature(signature_name)
    if signature is None:
      # TF Serving's status and words (predict_util.cc).
      raise ServingError(grpc.StatusCode.FAILED_PRECONDITION,
                         f'Serving signature key "{signature_name}" not found.')
    tensors.check_inputs(signature_name, signature, inputs)
    output_names = tensors.check_output_filter(signature, output_filter)
    feeds = {signature.inputs[n].name: array for n, array in inputs.items()}
    # Only requests whose every input has the signature's rank and one batch size
    # can be merged along dimension 0 with others; the rest run on their own.
    batchable = tensors.is_batch_major(signature) and all(
        array.ndim == len(signature.inputs[n].tensor_shape.dim) for n, array in inputs.items())
    outputs = self.run(feeds, tuple(signature.outputs[n].name for n in output_names),
                       batchable)
    return signature_name, dict(zip(output_names, outputs))

  def run(self, feeds: dict, fetches: tuple, batchable: bool = False) -> list:
    """Runs the graph: {tensor name: array} in, the arrays of the `fetches` tensor names out.

    With batching on, a `batchable` run (every feed batch-major, one batch size)
    may be merged with concurrent ones.
    """
    feed_names = tuple(sorted(feeds))
    arrays = [feeds[n] for n in feed_names]
    key = (feed_names, tuple(fetches))
    batcher = None
    if self._batching and batchable and arrays and all(
        a.ndim and a.shape[0] == arrays[0].shape[0] for a in arrays):
      batcher = self._batcher(key)
    start = time.monotonic()
    if batcher is not None:
      outputs = batcher.run(arrays, arrays[0].shape[0])
    else:
      outputs = self._callable(key)(arrays)
    self._on_run(time.monotonic() - start)
    return outputs

  def _callable(self, key):
    fn = self._callables.get(key)
    if fn is None:
      feed_names, fetch_names = key
      options = config_pb2.CallableOptions(feed=list(feed_names), fetch=list(fetch_names))
      with self._lock:
        # A session callable (TF_SessionMakeCallable) skips the feed and fetch
        # handling that Session.run and Session.make_callable redo on every call:
        # about 0.3 ms of a 1 ms batch-1 request. The method is private, but it is
        # what tf.compat.v1 Keras has long run its functions with.
        # pylint: disable-next=protected-access
        session_fn = self.session._make_callable_from_options(options)
        fn = self._callables[key] = lambda feeds: session_fn(*feeds)
    return fn

  def _batcher(self, key):
    batcher = self._batchers.get(key)
    if batcher is None:
      with self._lock:
        batcher = self._batchers.get(key)
        if batcher is None:
          batcher = self._batchers[key] = BatchScheduler(
              self._callable(key), self._batching, f"{self.name}-{self.version}")
    return batcher

  def acquire(self) -> None:
    with self._cond:
      if self._closed:
        raise ServingError(grpc.StatusCode.UNAVAILABLE,
                           f"model '{self.name}' version {self.version} is unloading")
      self._in_flight += 1

  def release(self) -> None:
    with self._cond:
      self._in_flight -= 1
      self._cond.notify_all()

  def close(self, drain_timeout_s: float = 30.0) -> None:
    """Waits for requests in flight (up to drain_timeout_s), then frees the session."""
    with self._cond:
      self._closed = True
      self._cond.wait_for(lambda: self._in_flight == 0, timeout=drain_timeout_s)
    for (_, fetches), batcher in self._batchers.items():
      batcher.close()
      logging.info("Model %s version %d (fetching %s) ran %d requests in %d batches",
                   self.name, self.version, ",".join(fetches), batcher.num_requests,
                   batcher.num_batches)
    self.session.close()


def _batching_options(path: str, options: config.LoadOptions):
  """The batching of this version: its own batching_params.pbtxt where asked, else the server's."""
  if options.batching is None or not options.enable_per_model_batching_params:
    return options.batching
  own = os.path.join(path, PER_MODEL_BATCHING_FILE)
  if not tf.io.gfile.exists(own):
    return options.batching
  return config.parse_batching_parameters_file(own)
