"""What each platform hands a replica: its TF_CONFIG, rebuilt from a job spec.

Each function mirrors one platform's documented (or, for the training operator,
source-code) behaviour, so that tests can run every replica of every spec in
deploy/ through train/cluster.py and `python -m train.task --dry_run`.
"""

import json
import os
import pathlib
import re
import subprocess
import sys

import yaml

REPO = pathlib.Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"

# Vertex AI: workerPoolSpecs[i] is this task type (docs: "Distributed training",
# "Structure of the training cluster"); replicas are named workerpool<i>-<r>.
VERTEX_POOL_TASK_TYPES = ("chief", "worker", "ps", "evaluator")
VERTEX_PORT = 2222

# Kubeflow training operator (pkg/apis/kubeflow.org/v1, controller.v1/tensorflow):
# the port is the one named tfjob-port on the container named tensorflow, else 2222.
TFJOB_CONTAINER = "tensorflow"
TFJOB_PORT_NAME = "tfjob-port"
TFJOB_DEFAULT_PORT = 2222


def load_yaml_documents(path: pathlib.Path) -> list[dict]:
  with open(path) as f:
    return [doc for doc in yaml.safe_load_all(f) if doc is not None]


def vertex_tf_config(spec: dict, pool_index: int, replica_index: int, *,
                     trial: str = "") -> str:
  """The TF_CONFIG Vertex AI sets on replica `replica_index` of pool `pool_index`.

  The cluster holds the chief, worker and ps pools; an evaluator pool gets its
  task type but stays out of `cluster`. `job` is the CustomJobSpec itself.
  """
  pools = spec["workerPoolSpecs"]
  cluster = {}
  for i, pool in enumerate(pools[:3]):
    if pool:
      cluster[VERTEX_POOL_TASK_TYPES[i]] = [
          f"workerpool{i}-{r}:{VERTEX_PORT}" for r in range(int(pool["replicaCount"]))]
  return json.dumps({
      "cluster": cluster,
      "task": {"type": VERTEX_POOL_TASK_TYPES[pool_index], "index": replica_index,
               "trial": trial},
      "job": spec,
      "environment": "cloud",
  })


def ai_platform_tf_config(num_workers: int, num_ps: int, task_type: str,
                          index: int) -> str:
  """The legacy AI Platform (Cloud ML Engine) form, which the r0.12 program ran on:
  `master` instead of `chief`, and `environment: cloud`."""
  cluster = {"master": ["master-0:2222"]}
  if num_workers:
    cluster["worker"] = [f"worker-{i}:2222" for i in range(num_workers)]
  if num_ps:
    cluster["ps"] = [f"ps-{i}:2222" for i in range(num_ps)]
  return json.dumps({"cluster": cluster,
                     "task": {"type": task_type, "index": index, "trial": "",
                              "cloud": "ai-platform-id"},
                     "job": {"scale_tier": "CUSTOM"}, "environment": "cloud"})


def tfjob_port(replica_spec: dict) -> int:
  for container in replica_spec["template"]["spec"]["containers"]:
    if container["name"] == TFJOB_CONTAINER:
      for port in container.get("ports", []):
        if port.get("name") == TFJOB_PORT_NAME:
          return port["containerPort"]
  return TFJOB_DEFAULT_PORT


def tfjob_tf_config(job: dict, replica_type: str, index: int, *,
                    evaluator_in_cluster: bool = True,
                    namespace: str = "default") -> str:
  """The TF_CONFIG the training operator writes into a TFJob replica's pod.

  Every replica type, lowercased, is a job of `cluster`, at
  <job>-<type>-<index>.<namespace>.svc:<port> (genClusterSpec). Operators up to
  v1.1 left Evaluator out of `cluster`; later ones put it in.
  """
  name = job["metadata"]["name"]
  cluster = {}
  for rtype, spec in job["spec"]["tfReplicaSpecs"].items():
    if rtype == "Evaluator" and not evaluator_in_cluster:
      continue
    rt = rtype.lower()
    port = tfjob_port(spec)
    cluster[rt] = [f"{name}-{rt}-{i}.{namespace}.svc:{port}"
                   for i in range(spec.get("replicas", 1))]
  return json.dumps({"cluster": cluster,
                     "task": {"type": replica_type.lower(), "index": index},
                     "environment": "cloud"})


_K8S_VAR_REF = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


def k8s_container_env(container: dict, *, pod_labels: dict, pod_annotations: dict,
                      config_maps: dict[str, dict]) -> dict[str, str]:
  """A container's environment as the kubelet builds it.

  Handles literal values with $(VAR) references to earlier variables, downward-API
  label and annotation fields, and ConfigMap keys (from `config_maps`, by name).
  """
  env = {}
  for var in container.get("env", []):
    if "value" in var:
      # Kubernetes leaves a reference to an undefined variable as written.
      env[var["name"]] = _K8S_VAR_REF.sub(
          lambda m: env.get(m.group(1), m.group(0)), var["value"])
      continue
    source = var["valueFrom"]
    if "fieldRef" in source:
      path = source["fieldRef"]["fieldPath"]
      match = re.fullmatch(r"metadata\.(labels|annotations)\['([^']+)'\]", path)
      assert match, f"unsupported fieldPath {path!r}"
      values = pod_labels if match.group(1) == "labels" else pod_annotations
      env[var["name"]] = values[match.group(2)]
    elif "configMapKeyRef" in source:
      ref = source["configMapKeyRef"]
      env[var["name"]] = config_maps[ref["name"]]["data"][ref["key"]]
    else:
      raise AssertionError(f"unsupported env source {source!r}")
  return env


def dry_run(args: list[str], tf_config: str | None, *,
            extra_env: dict[str, str] | None = None,
            timeout_s: float = 120) -> dict:
  """Runs `python -m train.task --dry_run ARGS` with this TF_CONFIG; returns its JSON.

  Fails the calling test (rather than skipping) when train/task.py is missing:
  the container entry point is what these specs exist to run.
  """
  import pytest

  if not (REPO / "train" / "task.py").is_file():
    pytest.fail("train/task.py does not exist: the images' entry point "
                "`python -m train.task` cannot be checked")
  env = {k: v for k, v in os.environ.items()
         if k != "TF_CONFIG" and not k.startswith("AIP_")}
  if tf_config is not None:
    env["TF_CONFIG"] = tf_config
  env.update(extra_env or {})
  env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  from train import config

  task_argv = config.task_argv(options=config.TaskOptions(dry_run=True))
  result = subprocess.run(
      [sys.executable, "-m", config.TASK_MODULE, *task_argv, *args], cwd=REPO, env=env,
      capture_output=True, text=True, timeout=timeout_s)
  assert result.returncode == 0, (
      f"train.task --dry_run {' '.join(args)} exited {result.returncode}\n"
      f"stdout: {result.stdout[-2000:]}\nstderr: {result.stderr[-4000:]}")
  # The description is the one JSON object on stdout (logs go to stderr).
  for line in reversed(result.stdout.strip().splitlines()):
    line = line.strip()
    if line.startswith("{"):
      return json.loads(line)
  start = result.stdout.find("{")
  assert start >= 0, f"no JSON on stdout: {result.stdout!r}"
  return json.loads(result.stdout[start:])
