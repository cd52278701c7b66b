"""The models a server serves: version directories and policies, loading with warmup, hot swap."""

import contextlib
import dataclasses
import os
import threading
import time

from absl import logging
import grpc
import tensorflow as tf
from tensorflow_serving.apis import get_model_status_pb2
from tensorflow_serving.apis import prediction_log_pb2

from model import contract
from serving.server import config
from serving.server import errors
from serving.server import inference
from serving.server import tensors
from serving.server.servable import Servable
from serving.server.tensors import ServingError

# TF Serving reads at most this many records from a warmup file.
MAX_WARMUP_RECORDS = 1000

_State = get_model_status_pb2.ModelVersionStatus.State


def select_versions(on_disk: list[int], policy) -> set[int]:
  """The versions a ServableVersionPolicy aspires to serve (default: the latest one)."""
  choice = policy.WhichOneof("policy_choice")
  if choice == "all":
    return set(on_disk)
  if choice == "specific":
    return set(policy.specific.versions) & set(on_disk)
  num_versions = policy.latest.num_versions if choice == "latest" else 0
  return set(sorted(on_disk)[-max(1, num_versions):])

def run_warmup(servable: Servable, iterations: int = 1) -> int:
  """Replays the version's assets.extra/tf_serving_warmup_requests; returns how many ran.

  Like TF Serving, a warmup request that fails fails the load, and at most
  MAX_WARMUP_RECORDS records are read. The model name in a record is not checked.
  """
  path = os.path.join(servable.path, contract.WARMUP_FILE)
  if not tf.io.gfile.exists(path):
    return 0
  count = 0
  for record in tf.data.TFRecordDataset(path).take(MAX_WARMUP_RECORDS).as_numpy_iterator():
    log = prediction_log_pb2.PredictionLog.FromString(record)
    kind = log.WhichOneof("log_type")
    for _ in range(max(1, iterations)):
      if kind == "predict_log":
        request = log.predict_log.request
        inputs = tensors.decode_inputs(request.inputs)
        servable.predict(request.model_spec.signature_name, inputs, request.output_filter)
      elif kind == "classify_log":
        inference.run_classify(servable, log.classify_log.request)
      elif kind == "regress_log":
        inference.run_regress(servable, log.regress_log.request)
      elif kind == "multi_inference_log":
        inference.run_multi_inference(servable, log.multi_inference_log.request)
      else:
        raise ValueError(f"warmup record {count} in {path} is a {kind}; expected a "
                         "predict, classify, regress or multi_inference log")
    count += 1
  servable.warmup_requests_run = count
  return count

@dataclasses.dataclass
class _VersionStatus:
  state: int
  error: ServingError | None = None
  servable: Servable | None = None


class ModelManager:
  """Loads, serves and unloads the versions of the configured models.

  `poll_once` compares each model's version directories with its version policy:
  it loads the aspired versions that are new (running their warmup records),
  then unloads the ones no longer aspired, but only once an aspired version is
  available, so a model never goes dark during a swap (TF Serving's
  AvailabilityPreservingPolicy). A version that fails to load is not retried
  until its directory is deleted and published again.
  """

  def __init__(self, model_configs, *, session_config=None,
               batching: config.BatchingOptions | None = None, enable_model_warmup: bool = True,
               warmup_iterations: int = 1, on_change=None):
    config.validate_model_configs(model_configs)
    self._configs = {c.name: c for c in model_configs}
    self._versions = {c.name: {} for c in model_configs}  # name -> version -> _VersionStatus
    self._session_config = session_config
    self._batching = batching
    self._enable_model_warmup = enable_model_warmup
    self._warmup_iterations = warmup_iterations
    self._on_change = on_change or (lambda manager: None)
    self._lock = threading.Lock()
    self._poll_lock = threading.Lock()
    self._stop = threading.Event()
    self._poll_thread = None

  # -- loading --

  def poll_once(self) -> None:
    with self._poll_lock:
      with self._lock:
        configs = list(self._configs.values())
        removed = [n for n in self._versions if n not in self._configs]
      for name in removed:
        self._unload_model(name)
      for model_config in configs:
        self._poll_model(model_config)
      self._on_change(self)

  def _poll_model(self, model_config) -> None:
    try:
      on_disk = contract.list_versions(model_config.base_path)
    except tf.errors.OpError as e:
      logging.warning("Cannot list versions of model %s under %s: %s", model_config.name,
                      model_config.base_path, e)
      return
    aspired = select_versions(on_disk, model_config.model_version_policy)
    with self._lock:
      versions = self._versions[model_config.name]
      # A failed or unloaded version whose directory is gone is forgotten, so that
      # it loads afresh if it is published again.
      for version in [v for v, s in versions.items() if s.state == _State.END
                      and v not in on_disk]:
        del versions[version]
      # Versions unloaded cleanly load again when aspired again (say, the newer
      # one was deleted); failed ones stay failed.
      held = {v for v, s in versions.items() if s.state != _State.END or s.error is not None}
    for version in sorted(aspired - held):
      self._load(model_config, version)
    with self._lock:
      versions = self._versions[model_config.name]
      any_aspired_available = any(versions[v].state == _State.AVAILABLE
                                  for v in aspired if v in versions)
      to_unload = [v for v, s in versions.items()
                   if s.state == _State.AVAILABLE and v not in aspired
                   and (any_aspired_available or v not in on_disk)]
    for version in to_unload:
      self._unload(model_config.name, version)
    if not on_disk:
      logging.log_first_n(logging.WARNING, "No versions of model %s found under %s", 10,
                          model_config.name, model_config.base_path)

  def _load(self, model_config, version: int) -> None:
    name, path = model_config.name, os.path.join(model_config.base_path, str(version))
    with self._lock:
      self._versions[name][version] = _VersionStatus(_State.LOADING)
    logging.info("Loading model %s version %d from %s", name, version, path)
    start = time.monotonic()
    servable = None
    try:
      servable = Servable(name, version, path, session_config=self._session_config,
                          batching=self._batching)
      warmed = run_warmup(servable, self._warmup_iterations) if self._enable_model_warmup else 0
    except Exception as e:  # pylint: disable=broad-except
      error = errors.status_from_exception(e)
      if servable is not None:
        servable.close()
      logging.error("Failed to load model %s version %d from %s: %s", name, version, path,
                    error)
      with self._lock:
        self._versions[name][version] = _VersionStatus(_State.END, error=error)
      return
    with self._lock:
      self._versions[name][version] = _VersionStatus(_State.AVAILABLE, servable=servable)
    logging.info("Model %s version %d is available (loaded in %.2f s, %d warmup requests)",
                 name, version, time.monotonic() - start, warmed)

  def _unload(self, name: str, version: int) -> None:
    with self._lock:
      status = self._versions[name][version]
      servable, status.servable, status.state = status.servable, None, _State.UNLOADING
    logging.info("Unloading model %s version %d", name, version)
    servable.close()
    with self._lock:
      status.state = _State.END

  def _unload_model(self, name: str) -> None:
    with self._lock:
      versions = [v for v, s in self._versions[name].items() if s.servable is not None]
    for version in versions:
      self._unload(name, version)
    with self._lock:
      del self._versions[name]

  def reload_config(self, model_configs) -> None:
    """Serves exactly `model_configs` from now on (ModelService.HandleReloadConfigRequest)."""
    config.validate_model_configs(model_configs)
    with self._lock:
      self._configs = {c.name: c for c in model_configs}
      for c in model_configs:
        self._versions.setdefault(c.name, {})
    self.poll_once()

  def start_polling(self, interval_s: float) -> None:
    """Polls every interval_s seconds in a thread; 0: never (the first poll is the caller's)."""
    if interval_s <= 0:
      return

    def poll_fn():
      while not self._stop.wait(interval_s):
        try:
          self.poll_once()
        except Exception:  # pylint: disable=broad-except
          logging.exception("Polling the model directories failed; retrying in %g s",
                            interval_s)

    self._poll_thread = threading.Thread(target=poll_fn, name="version-poll", daemon=True)
    self._poll_thread.start()

  def close(self) -> None:
    self._stop.set()
    if self._poll_thread is not None:
      self._poll_thread.join()
    with self._poll_lock:
      for name in list(self._versions):
        self._unload_model(name)

  # -- serving --

  @contextlib.contextmanager
  def servable(self, name: str, version: int | None = None, label: str | None = None):
    """Resolves a ModelSpec to an available version and holds it for the request."""
    with self._lock:
      servable = self._resolve(name, version, label)
      servable.acquire()
    try:
      yield servable
    finally:
      servable.release()

  def _resolve(self, name: str, version: int | None, label: str | None) -> Servable:
    if not name:
      raise ServingError(grpc.StatusCode.INVALID_ARGUMENT,
                         "the request's model_spec has no model name; expected one of "
                         f"{sorted(self._configs)}")
    if name not in self._configs:
      raise ServingError(grpc.StatusCode.NOT_FOUND,
                         f"model '{name}' is not served; expected one of {sorted(self._configs)}")
    available = {v: s.servable for v, s in self._versions[name].items()
                 if s.state == _State.AVAILABLE}
    if label:
      labels = self._configs[name].version_labels
      if label not in labels:
        raise ServingError(grpc.StatusCode.NOT_FOUND,
                           f"model '{name}' has no version label '{label}'; expected one of "
                           f"{sorted(labels)}")
      version = labels[label]
    if version is None:
      if not available:
        raise ServingError(grpc.StatusCode.UNAVAILABLE,
                           f"model '{name}' has no version available yet")
      return available[max(available)]
    if version not in available:
      raise ServingError(grpc.StatusCode.NOT_FOUND,
                         f"model '{name}' version {version} is not available; expected one of "
                         f"{sorted(available)}")
    return available[version]

  def has_available_version(self) -> bool:
    with self._lock:
      return any(s.state == _State.AVAILABLE for v in self._versions.values() for s in v.values())

  def version_states(self, name: str, version: int | None = None,
                     label: str | None = None) -> list:
    """[(version, state enum, ServingError or None)], newest first, for GetModelStatus."""
    with self._lock:
      if name not in self._configs:
        raise ServingError(grpc.StatusCode.NOT_FOUND,
                           f"model '{name}' is not served; expected one of {sorted(self._configs)}")
      if label:
        labels = self._configs[name].version_labels
        if label not in labels:
          raise ServingError(grpc.StatusCode.NOT_FOUND,
                             f"model '{name}' has no version label '{label}'")
        version = labels[label]
      states = [(v, s.state, s.error) for v, s in sorted(self._versions[name].items(),
                                                         reverse=True)]
    if version is not None:
      states = [s for s in states if s[0] == version]
      if not states:
        raise ServingError(grpc.StatusCode.NOT_FOUND,
                           f"model '{name}' has no version {version}")
    return states
