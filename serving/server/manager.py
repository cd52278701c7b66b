"""The models a server serves: version folders and policies, loads with retries and warmup, hot swap."""

import concurrent.futures
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
from serving.server.errors import ServingError
from serving.server.servable import Servable
from serving.server.servable import UnsupportedModelError

# TF Serving reads at most this many records from a warmup file.
MAX_WARMUP_RECORDS = 1000

_State = get_model_status_pb2.ModelVersionStatus.State


def select_versions(on_disk, policy) -> set[int]:
  """The versions a ServableVersionPolicy aspires to serve (default: the latest one)."""
  choice = policy.WhichOneof("policy_choice")
  if choice == "all":
    return set(on_disk)
  if choice == "specific":
    return set(policy.specific.versions) & set(on_disk)
  num_versions = policy.latest.num_versions if choice == "latest" else 0
  return set(sorted(on_disk)[-max(1, num_versions):])


def explain_missing_versions(base_path: str) -> str:
  """Why no version was found under base_path, and the likely fix."""
  if not tf.io.gfile.exists(base_path):
    return (f"base path {base_path} does not exist; expected a folder holding numeric "
            "version folders such as 1/")
  parent, leaf = os.path.split(base_path.rstrip("/"))
  if leaf.isdigit() and tf.io.gfile.exists(os.path.join(base_path, "saved_model.pb")):
    return (f"{base_path} is itself a version folder (it holds saved_model.pb); the base "
            f"path is its parent: use --model_base_path={parent}")
  return (f"no numeric version folder under {base_path}; expected e.g. "
          f"{os.path.join(base_path, '1', 'saved_model.pb')} (did you forget to name the "
          "leaf folder as a number?)")


def run_warmup(servable: Servable, iterations: int = 1,
               options: inference.InferenceOptions = inference.InferenceOptions()) -> int:
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
        servable.predict_request(log.predict_log.request, options.limits)
      elif kind == "classify_log":
        inference.run_examples(servable, inference.CLASSIFY, log.classify_log.request, options)
      elif kind == "regress_log":
        inference.run_examples(servable, inference.REGRESS, log.regress_log.request, options)
      elif kind == "multi_inference_log":
        inference.run_multi_inference(servable, log.multi_inference_log.request, options)
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

  `poll_once` compares each model's version folders with its version policy and
  starts loading the aspired versions that are new (running their warmup
  records). A load that fails is retried `max_num_load_retries` times,
  `load_retry_interval_s` apart, as TF Serving does (files still being copied
  in place load on a later try); a version that never loads ends in state END
  with its error. Versions no longer aspired are unloaded only once an aspired
  version is available, so a model never goes dark during a swap (TF Serving's
  AvailabilityPreservingPolicy) and the last good version keeps serving.

  `on_change(manager)` hears of every load and unload; `on_load(version path,
  succeeded, seconds)` of every load attempt; `on_run(model name, seconds)` of
  every session run.
  """

  def __init__(self, model_configs, options: config.LoadOptions = config.LoadOptions(), *,
               inference_options: inference.InferenceOptions = inference.InferenceOptions(),
               allow_version_labels_for_unavailable_models: bool = False,
               on_change=None, on_load=None, on_run=None):
    self._options = options
    self._inference_options = inference_options
    self._allow_unavailable_labels = allow_version_labels_for_unavailable_models
    self._on_change = on_change or (lambda manager: None)
    self._on_load = on_load or (lambda path, ok, seconds: None)
    self._on_run = on_run or (lambda name, seconds: None)
    self._lock = threading.Lock()
    self._poll_lock = threading.Lock()
    self._stop = threading.Event()
    self._poll_thread = None
    self._configs = {}
    self._versions = {}  # name -> version -> _VersionStatus
    self._on_disk = {}  # name -> {version: folder name} at the last poll
    self._warned = {}  # name -> the last missing-versions warning, said once
    self._loads = concurrent.futures.ThreadPoolExecutor(
        max_workers=max(1, options.num_load_threads), thread_name_prefix="load")
    self._set_configs(model_configs)

  # -- configuration --

  def _set_configs(self, model_configs) -> None:
    config.validate_model_configs(model_configs)
    with self._lock:
      self._check_labels(model_configs)
      old = self._configs
      self._configs = {c.name: c for c in model_configs}
      for c in model_configs:
        if c.name in old and old[c.name].base_path != c.base_path:
          self._on_disk.pop(c.name, None)
        self._versions.setdefault(c.name, {})

  def _check_labels(self, model_configs) -> None:
    """TF Serving's rule: a label may only name an available version, unless
    --allow_version_labels_for_unavailable_models (and then not move an existing label)."""
    for c in model_configs:
      versions = self._versions.get(c.name, {})
      old_labels = self._configs[c.name].version_labels if c.name in self._configs else {}
      for label, version in c.version_labels.items():
        available = version in versions and versions[version].state == _State.AVAILABLE
        allowed = self._allow_unavailable_labels and old_labels.get(label, version) == version
        if not (available or allowed):
          raise ServingError(
              grpc.StatusCode.FAILED_PRECONDITION,
              f"Request to assign label to version {version} of model {c.name}, which is not "
              "currently available for inference (start without version_labels and add them "
              "by a config reload once the version is available, or pass "
              "--allow_version_labels_for_unavailable_models)")

  def reload_config(self, model_configs) -> None:
    """Serves exactly `model_configs` from now on, waiting for the first load of new models."""
    self._set_configs(model_configs)
    self.poll_once(wait=True)

  # -- loading --

  def poll_once(self, wait: bool = False) -> None:
    """Looks at every model's folders once; with `wait`, until the loads it starts are done."""
    with self._poll_lock:
      with self._lock:
        configs = list(self._configs.values())
        removed = [n for n in self._versions if n not in self._configs]
      for name in removed:
        self._unload_model(name)
      loads = []
      for model_config in configs:
        loads += self._poll_model(model_config)
    if wait:
      concurrent.futures.wait(loads)
    self._on_change(self)

  def _poll_model(self, model_config) -> list:
    name, base_path = model_config.name, model_config.base_path
    try:
      on_disk = contract.list_version_dirs(base_path)
    except tf.errors.OpError as e:
      self._warn_once(name, f"cannot list the versions of model {name} under {base_path}: "
                      f"{e.message}; keeping what is loaded")
      return []
    aspired = select_versions(on_disk, model_config.model_version_policy)
    with self._lock:
      self._on_disk[name] = on_disk
      versions = self._versions[name]
      # A failed or unloaded version whose folder is gone is forgotten, so that
      # it loads afresh if it is published again.
      for version in [v for v, s in versions.items() if s.state == _State.END
                      and v not in on_disk]:
        del versions[version]
      # Versions unloaded cleanly load again when aspired again (say, the newer
      # one was deleted); failed ones stay failed.
      held = {v for v, s in versions.items() if s.state != _State.END or s.error is not None}
      new = sorted(aspired - held)
      for version in new:
        versions[version] = _VersionStatus(_State.LOADING)
    loads = [self._loads.submit(self._load, model_config, version, on_disk[version])
             for version in new]
    self._unload_superseded(name)
    if on_disk:
      self._warned.pop(name, None)
    else:
      self._warn_once(name, f"No versions of model {name} found: "
                      f"{explain_missing_versions(base_path)}")
    return loads

  def _warn_once(self, name: str, message: str) -> None:
    if self._warned.get(name) != message:
      self._warned[name] = message
      logging.warning("%s (said once; polling goes on)", message)

  def _aspired(self, name: str, version: int) -> bool:
    with self._lock:
      model_config = self._configs.get(name)
      on_disk = self._on_disk.get(name, {})
    return model_config is not None and version in select_versions(
        on_disk, model_config.model_version_policy)

  def _load(self, model_config, version: int, folder: str) -> None:
    """Loads one version, with TF Serving's retries; never raises."""
    name, path = model_config.name, os.path.join(model_config.base_path, folder)
    attempts = 1 + max(0, self._options.max_num_load_retries)
    for attempt in range(1, attempts + 1):
      logging.info("Loading model %s version %d from %s%s", name, version, path,
                   f" (retry {attempt - 1} of {attempts - 1})" if attempt > 1 else "")
      start = time.monotonic()
      try:
        servable, warmed = self._load_once(name, version, path)
      except Exception as e:  # pylint: disable=broad-except
        error = errors.status_from_exception(e)
        if isinstance(e, UnsupportedModelError):
          error = ServingError(grpc.StatusCode.UNIMPLEMENTED, str(e))
          attempts = attempt  # Trying again cannot help.
        self._on_load(path, False, time.monotonic() - start)
        last = attempt == attempts or self._stop.is_set() or not self._aspired(name, version)
        logging.error("Failed to load model %s version %d from %s%s: %s", name, version, path,
                      "" if last else f"; retrying in {self._options.load_retry_interval_s:g} s",
                      errors.printable(error.message, 2000))
        with self._lock:
          if name not in self._versions:  # The model left the config meanwhile.
            return
          self._versions[name][version] = _VersionStatus(
              _State.END if last else _State.LOADING, error=error)
        if last or self._stop.wait(max(0.0, self._options.load_retry_interval_s)):
          break
        continue
      self._on_load(path, True, time.monotonic() - start)
      with self._lock:
        versions = self._versions.get(name)
        if versions is None or self._stop.is_set():
          servable.close()
          return
        versions[version] = _VersionStatus(_State.AVAILABLE, servable=servable)
      logging.info("Model %s version %d is available (loaded in %.2f s, %d warmup requests)",
                   name, version, time.monotonic() - start, warmed)
      break
    self._unload_superseded(name)
    self._on_change(self)

  def _load_once(self, name: str, version: int, path: str) -> tuple:
    servable = Servable(name, version, path, self._options,
                        on_run=lambda seconds: self._on_run(name, seconds))
    try:
      warmed = (run_warmup(servable, self._options.num_request_iterations_for_warmup,
                           self._inference_options)
                if self._options.enable_model_warmup else 0)
    except BaseException:
      servable.close()
      raise
    return servable, warmed

  def _unload_superseded(self, name: str) -> None:
    """Unloads the available versions no longer aspired, once an aspired one is available."""
    with self._lock:
      model_config, versions = self._configs.get(name), self._versions.get(name)
      if model_config is None or versions is None:
        return
      on_disk = self._on_disk.get(name, {})
      aspired = select_versions(on_disk, model_config.model_version_policy)
      any_aspired_available = any(versions[v].state == _State.AVAILABLE
                                  for v in aspired if v in versions)
      to_unload = [v for v, s in versions.items()
                   if s.state == _State.AVAILABLE and v not in aspired
                   and (any_aspired_available or v not in on_disk)]
    for version in to_unload:
      self._unload(name, version)

  def _unload(self, name: str, version: int) -> None:
    with self._lock:
      status = self._versions[name][version]
      servable, status.servable, status.state = status.servable, None, _State.UNLOADING
    if servable is None:
      return
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
      self._on_disk.pop(name, None)

  def start_polling(self, interval_s: float) -> None:
    """Polls every interval_s seconds in a thread; 0: never (the first poll is the caller's)."""
    if interval_s <= 0:
      return

    def poll_fn():
      while not self._stop.wait(interval_s):
        try:
          self.poll_once()
        except Exception:  # pylint: disable=broad-except
          logging.exception("Polling the model folders failed; retrying in %g s", interval_s)

    self._poll_thread = threading.Thread(target=poll_fn, name="version-poll", daemon=True)
    self._poll_thread.start()

  def close(self) -> None:
    self._stop.set()
    if self._poll_thread is not None:
      self._poll_thread.join()
    self._loads.shutdown(wait=True, cancel_futures=True)
    with self._poll_lock:
      for name in list(self._versions):
        self._unload_model(name)

  # -- serving --

  @contextlib.contextmanager
  def servable(self, name: str, version: int | None = None, label: str | None = None):
    """Resolves a ModelSpec to an available version and holds it for the request."""
    with self._lock:
      if label:
        version = self._version_of_label(name, label)
      versions = self._versions.get(name, {})
      available = {v: s.servable for v, s in versions.items() if s.state == _State.AVAILABLE}
      if not available or (version is not None and version not in available):
        # One answer for an unknown model, no version yet and an unknown version,
        # in TF Serving's words: its readiness probes and clients match on them.
        raise errors.servable_not_found(name, version)
      servable = available[max(available) if version is None else version]
      servable.acquire()
    try:
      yield servable
    finally:
      servable.release()

  def _version_of_label(self, name: str, label: str) -> int:
    model_config = self._configs.get(name)
    if model_config is None or label not in model_config.version_labels:
      raise errors.invalid_argument(
          f"Unrecognized servable version label: {errors.printable(label)}")
    return model_config.version_labels[label]

  def is_configured(self, name: str) -> bool:
    with self._lock:
      return name in self._configs

  def has_available_version(self) -> bool:
    with self._lock:
      return any(s.state == _State.AVAILABLE for v in self._versions.values() for s in v.values())

  def version_states(self, name: str, version: int | None = None,
                     label: str | None = None) -> list:
    """[(version, state enum, ServingError or None)], newest first, for GetModelStatus."""
    with self._lock:
      if label:
        version = self._version_of_label(name, label)
      states = [(v, s.state, s.error) for v, s in sorted(self._versions.get(name, {}).items(),
                                                         reverse=True)]
    if version is not None:
      states = [s for s in states if s[0] == version]
      if not states:
        raise ServingError(grpc.StatusCode.NOT_FOUND,
                           f"Could not find version {version} of model "
                           f"{errors.printable(name)}")
    if not states:
      raise ServingError(grpc.StatusCode.NOT_FOUND,
                         f"Could not find any versions of model {errors.printable(name)}")
    return states
