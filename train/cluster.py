"""TF_CONFIG, parsed and validated: the cluster, this task, its strategy and its role.

Pure Python with no TensorFlow import, so that every platform's TF_CONFIG (legacy AI
Platform, Vertex AI, Kubeflow TFJob, train.local_cluster) can be checked in tests
and by `python -m train.task --dry_run` in milliseconds.
"""

import dataclasses
import json
from typing import Mapping

CHIEF = "chief"
MASTER = "master"  # The r0.12 / AI Platform name of the chief.
WORKER = "worker"
PS = "ps"
EVALUATOR = "evaluator"
TASK_TYPES = (CHIEF, MASTER, WORKER, PS, EVALUATOR)

# Strategies (the --strategy flag).
AUTO = "auto"
ONE_DEVICE = "one_device"
PARAMETER_SERVER = "parameter_server"
MULTI_WORKER_MIRRORED = "multi_worker_mirrored"
STRATEGIES = (AUTO, ONE_DEVICE, PARAMETER_SERVER, MULTI_WORKER_MIRRORED)

# Roles: what this process does, the first thing the entry point dispatches on.
STANDALONE = "standalone"      # Trains alone, no cluster.
COORDINATOR = "coordinator"    # PS chief: runs the ClusterCoordinator.
SERVER = "server"              # PS ps or worker: serves a tf.distribute.Server.
COLLECTIVE = "collective"      # MWMS worker (the chief included): trains in lockstep.
SIDECAR_EVALUATOR = "evaluator"  # Follows checkpoints and evaluates them.


class TFConfigError(ValueError):
  """A TF_CONFIG that cannot describe a runnable task; the message names the problem."""


@dataclasses.dataclass(frozen=True)
class ClusterConfig:
  """This task's view of the cluster, after validation.

  `cluster` is the training cluster only: `master` renamed to `chief`, and any
  `evaluator` left out (the coordinator would otherwise wait for it for ever).
  """
  task_type: str
  task_index: int
  cluster: Mapping[str, tuple[str, ...]]
  written_task_type: str = ""   # As TF_CONFIG spelled it ("master" stays visible here).
  num_evaluators: int = 0
  trial: str | None = None

  @property
  def is_local(self) -> bool:
    return not self.cluster

  @property
  def is_chief(self) -> bool:
    """Whether this task writes checkpoints, summaries and the export.

    The chief, or worker 0 in a chief-less MultiWorkerMirrored cluster.
    """
    if self.task_type == EVALUATOR:
      return False
    if self.is_local:
      return True
    if CHIEF in self.cluster:
      return self.task_type == CHIEF
    return self.task_type == WORKER and self.task_index == 0

  def as_dict(self) -> dict:
    return {"task": {"type": self.task_type, "index": self.task_index,
                     "written_type": self.written_task_type or self.task_type},
            "cluster": {k: list(v) for k, v in self.cluster.items()}}


LOCAL = ClusterConfig(task_type=CHIEF, task_index=0, cluster={})


def normalize_task_type(task_type: str) -> str:
  """Maps the legacy `master` to `chief`: the one place this happens."""
  if task_type not in TASK_TYPES:
    raise TFConfigError(f"TF_CONFIG task type {task_type!r} is not one of "
                        f"{', '.join(TASK_TYPES)}")
  return CHIEF if task_type == MASTER else task_type


def _parse_addresses(task_type: str, value) -> tuple[str, ...]:
  if isinstance(value, str):
    value = [value]
  if not isinstance(value, list) or not all(isinstance(a, str) and a for a in value):
    raise TFConfigError(f"TF_CONFIG cluster[{task_type!r}] must be a list of "
                        f"'host:port' strings, got {value!r}")
  if not value:
    raise TFConfigError(f"TF_CONFIG cluster[{task_type!r}] is empty")
  return tuple(value)


def _parse_cluster(raw) -> tuple[dict[str, tuple[str, ...]], int]:
  if not isinstance(raw, dict):
    raise TFConfigError(f"TF_CONFIG 'cluster' must be an object, got {raw!r}")
  if CHIEF in raw and MASTER in raw:
    raise TFConfigError("TF_CONFIG cluster has both 'chief' and 'master'; "
                        "they name the same task, give one")
  cluster = {}
  num_evaluators = 0
  for task_type, addresses in raw.items():
    normalized = normalize_task_type(task_type)
    parsed = _parse_addresses(task_type, addresses)
    if normalized == EVALUATOR:
      num_evaluators = len(parsed)  # Not part of the training cluster.
      continue
    cluster[normalized] = parsed
  if len(cluster.get(CHIEF, ())) > 1:
    raise TFConfigError(f"TF_CONFIG cluster has {len(cluster[CHIEF])} chiefs; "
                        "expected exactly one")
  if cluster and CHIEF not in cluster and WORKER not in cluster:
    raise TFConfigError("TF_CONFIG cluster has no chief, master or worker: "
                        "nothing would train")
  if PS in cluster and CHIEF not in cluster:
    raise TFConfigError("TF_CONFIG cluster has 'ps' but no 'chief' (or 'master'): "
                        "parameter-server training needs a chief to coordinate")
  if PS in cluster and WORKER not in cluster:
    raise TFConfigError("TF_CONFIG cluster has 'ps' but no 'worker': "
                        "parameter-server training needs at least one worker")
  return cluster, num_evaluators


def _parse_index(raw) -> int:
  if isinstance(raw, str) and raw.isdigit():
    raw = int(raw)
  if isinstance(raw, bool) or not isinstance(raw, int) or raw < 0:
    raise TFConfigError(f"TF_CONFIG task index {raw!r} is not a non-negative integer")
  return raw


def parse_tf_config(text: str | None) -> ClusterConfig:
  """Parses a TF_CONFIG JSON string; None or empty means one local process.

  Accepts the extra fields that Vertex AI, AI Platform and Kubeflow write
  (`job`, `environment`, `rpc_layer`, `task.trial`, `task.cloud`) and ignores them.
  Raises TFConfigError with a message naming the problem.
  """
  if text is None or not text.strip():
    return LOCAL
  try:
    raw = json.loads(text)
  except json.JSONDecodeError as e:
    raise TFConfigError(f"TF_CONFIG is not valid JSON ({e}): {text[:200]!r}") from None
  if not isinstance(raw, dict):
    raise TFConfigError(f"TF_CONFIG must be a JSON object, got {type(raw).__name__}")
  cluster, num_evaluators = _parse_cluster(raw.get("cluster") or {})
  task = raw.get("task") or {}
  if not isinstance(task, dict):
    raise TFConfigError(f"TF_CONFIG 'task' must be an object, got {task!r}")
  if not task:
    if cluster:
      raise TFConfigError("TF_CONFIG has a cluster but no 'task': which task is this?")
    return LOCAL
  if "type" not in task:
    raise TFConfigError(f"TF_CONFIG task {task!r} has no 'type'")
  written_type = task["type"]
  if not isinstance(written_type, str):
    raise TFConfigError(f"TF_CONFIG task type {written_type!r} is not a string")
  task_type = normalize_task_type(written_type)
  task_index = _parse_index(task.get("index", 0))
  if task_type != EVALUATOR:
    if task_type not in cluster:
      raise TFConfigError(f"TF_CONFIG task {written_type}:{task_index} is missing from "
                          f"its cluster, which has {sorted(cluster) or 'no tasks'}")
    if task_index >= len(cluster[task_type]):
      raise TFConfigError(f"TF_CONFIG task index {task_index} is out of range: cluster "
                          f"has {len(cluster[task_type])} {written_type} task(s)")
  trial = task.get("trial")
  return ClusterConfig(
      task_type=task_type, task_index=task_index, cluster=cluster,
      written_task_type=written_type, num_evaluators=num_evaluators,
      trial=None if trial is None else str(trial))


def resolve_strategy(config: ClusterConfig, requested: str = AUTO) -> str:
  """Picks the strategy: no cluster or a cluster of one task, one device; `ps` in
  it, parameter server; workers only, multi-worker mirrored. A forced choice must
  fit the cluster."""
  if requested not in STRATEGIES:
    raise TFConfigError(f"strategy {requested!r} is not one of {', '.join(STRATEGIES)}")
  training = config.cluster
  if requested == AUTO:
    # A one-replica job (Vertex AI writes {"chief": [...]} for it) has no peer to
    # synchronize with: a collective strategy would only start a server for nobody.
    if sum(len(v) for v in training.values()) <= 1:
      return ONE_DEVICE
    return PARAMETER_SERVER if PS in training else MULTI_WORKER_MIRRORED
  if requested == PARAMETER_SERVER and PS not in training:
    raise TFConfigError("strategy parameter_server needs 'ps' tasks in TF_CONFIG's "
                        f"cluster, which has {sorted(training) or 'no tasks'}")
  if requested == MULTI_WORKER_MIRRORED and PS in training:
    raise TFConfigError("strategy multi_worker_mirrored cannot use the 'ps' tasks in "
                        "TF_CONFIG's cluster; use parameter_server or auto")
  if requested == ONE_DEVICE and sum(len(v) for v in training.values()) > 1:
    raise TFConfigError("strategy one_device cannot run in a cluster of "
                        f"{sum(len(v) for v in training.values())} tasks")
  return requested


def resolve_role(config: ClusterConfig, strategy: str) -> str:
  """What this process does, given its task and the strategy."""
  if config.task_type == EVALUATOR:
    return SIDECAR_EVALUATOR
  if strategy == ONE_DEVICE:
    return STANDALONE
  if strategy == PARAMETER_SERVER:
    return COORDINATOR if config.task_type == CHIEF else SERVER
  return COLLECTIVE


def describe(config: ClusterConfig, strategy: str) -> dict:
  """The resolved task as one JSON-able object (what --dry_run prints)."""
  return {"role": resolve_role(config, strategy), "strategy": strategy,
          "is_chief": config.is_chief, **config.as_dict(),
          "num_evaluators": config.num_evaluators, "trial": config.trial}
