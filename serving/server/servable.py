"""One loaded version of a model: TF Serving's SavedModelBundle, a TF1 Session on its graph."""

import threading

from absl import logging
import grpc
import tensorflow as tf
from tensorflow.core.protobuf import config_pb2

from model import contract
from serving.server import config
from serving.server import tensors
# Imported by name: Servable's `batching` argument is the module's name too.
from serving.server.batching import BatchScheduler
from serving.server.tensors import ServingError

INIT_OP_SIGNATURE = "__saved_model_init_op"


class Servable:
  """One version of one model, loaded as TF Serving's SavedModelBundle: a Session on its graph."""

  def __init__(self, name: str, version: int, path: str, *,
               session_config=None, batching: config.BatchingOptions | None = None):
    self.name, self.version, self.path = name, version, path
    self.graph = tf.Graph()
    self.session = tf.compat.v1.Session(graph=self.graph, config=session_config)
    with self.graph.as_default():
      meta_graph = tf.compat.v1.saved_model.loader.load(
          self.session, [tf.saved_model.SERVING], path)
    self.signatures = {k: v for k, v in meta_graph.signature_def.items()
                       if k != INIT_OP_SIGNATURE}
    self.warmup_requests_run = 0
    self._batching = batching
    self._callables = {}
    self._batchers = {}
    self._lock = threading.RLock()  # _batcher makes a callable while holding it.
    self._in_flight = 0
    self._cond = threading.Condition()
    self._closed = False

  def signature(self, signature_name: str):
    signature_name = signature_name or contract.SIGNATURE_NAME
    try:
      return signature_name, self.signatures[signature_name]
    except KeyError:
      raise ServingError(grpc.StatusCode.NOT_FOUND,
                         f"model '{self.name}' version {self.version} has no signature "
                         f"'{signature_name}'; expected one of {sorted(self.signatures)}") from None

  def predict(self, signature_name: str, inputs: dict, output_filter=()) -> tuple:
    """Validates and runs one request; returns (signature name, {output name: array})."""
    signature_name, signature = self.signature(signature_name)
    tensors.check_inputs(signature_name, signature, inputs)
    output_names = tensors.check_output_filter(signature_name, signature, output_filter)
    input_names = tuple(sorted(inputs))
    feeds = [inputs[n] for n in input_names]
    key = (signature_name, input_names, output_names)
    batcher = self._batcher(key, signature) if self._batching else None
    if batcher is not None:
      outputs = batcher.run(feeds, feeds[0].shape[0])
    else:
      outputs = self._callable(key)(feeds)
    return signature_name, dict(zip(output_names, outputs))

  def _callable(self, key):
    fn = self._callables.get(key)
    if fn is None:
      signature_name, input_names, output_names = key
      signature = self.signatures[signature_name]
      options = config_pb2.CallableOptions(
          feed=[signature.inputs[n].name for n in input_names],
          fetch=[signature.outputs[n].name for n in output_names])
      with self._lock:
        # A session callable (TF_SessionMakeCallable) skips the feed and fetch
        # handling that Session.run and Session.make_callable redo on every call:
        # about 0.3 ms of a 1 ms batch-1 request. The method is private, but it is
        # what tf.compat.v1 Keras has long run its functions with.
        # pylint: disable-next=protected-access
        session_fn = self.session._make_callable_from_options(options)
        fn = self._callables[key] = lambda feeds: session_fn(*feeds)
    return fn

  def _batcher(self, key, signature):
    if not tensors.is_batch_major(signature):
      return None
    batcher = self._batchers.get(key)
    if batcher is None:
      with self._lock:
        batcher = self._batchers.get(key)
        if batcher is None:
          batcher = self._batchers[key] = BatchScheduler(
              self._callable(key), self._batching, f"{self.name}-{self.version}-{key[0]}")
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
    for (signature_name, _, _), batcher in self._batchers.items():
      batcher.close()
      logging.info("Model %s version %d signature %s ran %d requests in %d batches",
                   self.name, self.version, signature_name, batcher.num_requests,
                   batcher.num_batches)
    self.session.close()
