"""Kubernetes manifests (deploy/k8s/): schemas, the TF_CONFIG every pod gets, and the
storage, restart and lifetime policies that only a real cluster would otherwise test."""

import ast
import importlib.resources
import json
import re

import jsonschema
import kubernetes_validate
import pytest
import referencing
import referencing.jsonschema
import yaml

from tests.deploy import platforms
from train import cluster

K8S = platforms.DEPLOY / "k8s"
MANIFESTS = sorted(K8S.rglob("*.yaml"))
# The oldest version these manifests need (the StatefulSet pod-index label is
# there from 1.28) and the newest that kubernetes-validate ships schemas for.
K8S_VERSIONS = ("1.28.0", kubernetes_validate.utils.latest_version())
TFJOB_SCHEMA = K8S / "schemas" / "tfjob-kubeflow.org-v1.json"
TFJOBS = {
    "tfjob-pss.yaml": cluster.PARAMETER_SERVER,
    "tfjob-mwms.yaml": cluster.MULTI_WORKER_MIRRORED,
}
TRAINING_IMAGE = "mnist-train:latest"
SERVING_IMAGE = "mnist-serving:latest"


def documents():
  for path in MANIFESTS:
    for doc in platforms.load_yaml_documents(path):
      yield path, doc


def doc_id(item):
  path, doc = item
  return f"{path.relative_to(K8S)}:{doc['kind']}/{doc['metadata']['name']}"


ALL_DOCUMENTS = list(documents())


def tfjob_validator(k8s_version: str):
  """The vendored TFJob schema, its pod template resolved from Kubernetes' own."""
  # kubernetes-validate keeps one _definitions.json per version and strictness.
  definitions = json.loads(
      (importlib.resources.files("kubernetes_validate") / "kubernetes-json-schema"
       / f"v{k8s_version}-local-strict" / "_definitions.json").read_text())
  registry = referencing.Registry().with_resource(
      definitions["$id"], referencing.Resource.from_contents(definitions))
  schema = json.loads(TFJOB_SCHEMA.read_text())
  return jsonschema.Draft202012Validator(schema, registry=registry)


def tfjob(name: str) -> dict:
  (doc,) = [d for d in platforms.load_yaml_documents(K8S / name) if d["kind"] == "TFJob"]
  return doc


def expected_role(strategy: str, replica_type: str) -> str:
  if replica_type == "Evaluator":
    return cluster.SIDECAR_EVALUATOR
  if strategy == cluster.MULTI_WORKER_MIRRORED:
    return cluster.COLLECTIVE
  return cluster.COORDINATOR if replica_type in ("Chief", "Master") else cluster.SERVER


def test_manifests_are_found():
  kinds = {doc["kind"] for _, doc in ALL_DOCUMENTS}
  assert {"TFJob", "Deployment", "Service", "HorizontalPodAutoscaler", "StatefulSet",
          "Job", "ConfigMap", "PersistentVolumeClaim"} <= kinds
  assert set(TFJOBS) == {p.name for p, d in ALL_DOCUMENTS if d["kind"] == "TFJob"}


@pytest.mark.parametrize("k8s_version", K8S_VERSIONS)
@pytest.mark.parametrize("item", ALL_DOCUMENTS, ids=doc_id)
def test_manifest_matches_its_schema(item, k8s_version):
  path, doc = item
  if doc["kind"] == "TFJob":
    errors = sorted(tfjob_validator(k8s_version).iter_errors(doc), key=str)
    assert not errors, "\n".join(
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors)
  else:
    try:
      kubernetes_validate.validate(doc, k8s_version, strict=True)
    except kubernetes_validate.ValidationError as e:
      pytest.fail(f"{path.name}: {'/'.join(map(str, e.path))}: {e.message}")


def test_tfjob_schema_rejects_what_the_api_server_would_drop():
  doc = tfjob("tfjob-pss.yaml")
  validator = tfjob_validator(K8S_VERSIONS[-1])
  typo = json.loads(json.dumps(doc))
  typo["spec"]["tfReplicaSpecs"]["Worker"]["replica"] = 2
  assert not validator.is_valid(typo)
  pod_typo = json.loads(json.dumps(doc))
  pod_typo["spec"]["tfReplicaSpecs"]["PS"]["template"]["spec"]["containers"][0]["imag"] = "x"
  assert not validator.is_valid(pod_typo)
  bad_type = json.loads(json.dumps(doc))
  bad_type["spec"]["tfReplicaSpecs"]["Parameter"] = bad_type["spec"]["tfReplicaSpecs"]["PS"]
  assert not validator.is_valid(bad_type)


@pytest.mark.parametrize("name", sorted(TFJOBS))
def test_tfjob_passes_the_operators_own_checks(name):
  """What the training operator's validation adds to the schema."""
  specs = tfjob(name)["spec"]["tfReplicaSpecs"]
  assert sum(t in ("Chief", "Master") for t in specs) <= 1
  for rtype, spec in specs.items():
    containers = spec["template"]["spec"]["containers"]
    assert all(c.get("image") for c in containers)
    (main,) = [c for c in containers if c["name"] == platforms.TFJOB_CONTAINER]
    assert main["image"] == TRAINING_IMAGE
    if rtype in ("Chief", "Master"):
      assert spec.get("replicas", 1) == 1


@pytest.mark.parametrize("name", sorted(TFJOBS))
@pytest.mark.parametrize("evaluator_in_cluster", [True, False],
                         ids=["operator-1.2+", "operator-1.1"])
def test_every_tfjob_replica_resolves_to_its_role(name, evaluator_in_cluster):
  strategy = TFJOBS[name]
  job = tfjob(name)
  specs = job["spec"]["tfReplicaSpecs"]
  for rtype, spec in specs.items():
    for index in range(spec.get("replicas", 1)):
      tf_config = platforms.tfjob_tf_config(job, rtype, index,
                                            evaluator_in_cluster=evaluator_in_cluster)
      config = cluster.parse_tf_config(tf_config)
      assert cluster.resolve_strategy(config, cluster.AUTO) == strategy
      assert cluster.resolve_role(config, strategy) == expected_role(strategy, rtype)
      # The evaluator never joins the training cluster, however it is written.
      assert cluster.EVALUATOR not in config.cluster
      assert len(config.cluster[cluster.WORKER]) == specs["Worker"].get("replicas", 1)
      has_chief = "Chief" in specs
      assert config.is_chief == (rtype == "Chief" or
                                 (not has_chief and rtype == "Worker" and index == 0))


@pytest.mark.parametrize("name", sorted(TFJOBS))
def test_tfjob_container_args_parse_for_every_replica_type(name):
  strategy = TFJOBS[name]
  job = tfjob(name)
  args_seen = set()
  for rtype, spec in job["spec"]["tfReplicaSpecs"].items():
    (container,) = spec["template"]["spec"]["containers"]
    args_seen.add(tuple(container["args"]))
    described = platforms.dry_run(container["args"],
                                  platforms.tfjob_tf_config(job, rtype, 0))
    assert (described["role"], described["strategy"]) == (
        expected_role(strategy, rtype), strategy)
  assert len(args_seen) == 1, "every replica type should run the same arguments"


def test_tfjob_with_master_is_the_legacy_chief():
  """A TFJob written with the r0.12 name Master: the operator's key is `master`."""
  job = tfjob("tfjob-pss.yaml")
  specs = job["spec"]["tfReplicaSpecs"]
  specs["Master"] = specs.pop("Chief")
  config = cluster.parse_tf_config(platforms.tfjob_tf_config(job, "Master", 0))
  assert config.written_task_type == "master" and config.task_type == cluster.CHIEF
  assert cluster.resolve_role(config, cluster.PARAMETER_SERVER) == cluster.COORDINATOR


def test_pss_tfjob_ends_with_its_chief():
  """PS and Worker servers never exit: the job must end on the chief, and clean up."""
  spec = tfjob("tfjob-pss.yaml")["spec"]
  assert spec.get("successPolicy", "") == ""  # Default: the chief's completion.
  assert spec["runPolicy"]["cleanPodPolicy"] in ("Running", "All")


def test_mwms_tfjob_waits_for_all_workers():
  spec = tfjob("tfjob-mwms.yaml")["spec"]
  assert set(spec["tfReplicaSpecs"]) == {"Worker"}
  assert spec["successPolicy"] == "AllWorkers"


# The plain-Kubernetes alternative.

def pod_sources(docs):
  """(pod name, labels, annotations, pod template) of every pod the workloads create."""
  for doc in docs:
    kind, name = doc["kind"], doc["metadata"]["name"]
    spec = doc.get("spec", {})
    if kind == "StatefulSet":
      for i in range(spec.get("replicas", 1)):
        labels = {**spec["template"]["metadata"]["labels"],
                  "apps.kubernetes.io/pod-index": str(i)}
        yield f"{name}-{i}", spec["serviceName"], labels, {}, spec["template"]
    elif kind == "Job":
      indexed = spec.get("completionMode") == "Indexed"
      for i in range(spec.get("completions", 1)):
        annotations = {"batch.kubernetes.io/job-completion-index": str(i)} if indexed else {}
        hostname = f"{name}-{i}" if indexed else None
        yield (hostname, spec["template"]["spec"].get("subdomain"),
               spec["template"]["metadata"]["labels"], annotations, spec["template"])


@pytest.mark.parametrize("path, strategy", [
    (K8S / "plain" / "pss.yaml", cluster.PARAMETER_SERVER),
    (K8S / "plain" / "mwms.yaml", cluster.MULTI_WORKER_MIRRORED),
], ids=["pss", "mwms"])
def test_plain_manifests_give_every_pod_a_working_tf_config(path, strategy):
  docs = platforms.load_yaml_documents(path)
  config_maps = {d["metadata"]["name"]: d for d in docs if d["kind"] == "ConfigMap"}
  services = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Service"}
  reachable = {}  # DNS name -> the pod's labels
  tasks = {}      # (type, index) -> TF_CONFIG
  for hostname, subdomain, labels, annotations, template in pod_sources(docs):
    (container,) = template["spec"]["containers"]
    env = platforms.k8s_container_env(container, pod_labels=labels,
                                      pod_annotations=annotations, config_maps=config_maps)
    config = cluster.parse_tf_config(env["TF_CONFIG"])
    key = (config.task_type, config.task_index)
    assert key not in tasks, f"two pods are task {key}"
    tasks[key] = env["TF_CONFIG"]
    if hostname and subdomain:
      reachable[f"{hostname}.{subdomain}"] = labels
    described = platforms.dry_run(container["args"], env["TF_CONFIG"])
    role = (cluster.SIDECAR_EVALUATOR if config.task_type == cluster.EVALUATOR
            else cluster.COLLECTIVE if strategy == cluster.MULTI_WORKER_MIRRORED
            else cluster.COORDINATOR if config.task_type == cluster.CHIEF
            else cluster.SERVER)
    assert (described["role"], described["strategy"]) == (role, strategy)
  # Every address of the cluster is a pod of these manifests, selected by the
  # headless Service it is named under, on the port that pod serves.
  some_config = cluster.parse_tf_config(next(iter(tasks.values())))
  for task_type, addresses in some_config.cluster.items():
    for index, address in enumerate(addresses):
      host, _, port = address.rpartition(":")
      assert host in reachable, f"{address} is no pod of {path.name}"
      assert (task_type, index) in tasks, f"no pod is task {task_type}:{index}"
      service = services[host.split(".")[1]]
      assert service["spec"]["clusterIP"] == "None"
      selector = service["spec"]["selector"]
      assert selector.items() <= reachable[host].items()
      assert int(port) in [p["port"] for p in service["spec"]["ports"]]
  training_tasks = {(t, i) for t, addresses in some_config.cluster.items()
                    for i in range(len(addresses))}
  assert {k for k in tasks if k[0] != cluster.EVALUATOR} == training_tasks


# Serving.

def serving_documents():
  return {d["kind"]: d for d in platforms.load_yaml_documents(K8S / "serving.yaml")}


def test_serving_deployment_probes_and_resources():
  docs = serving_documents()
  pod = docs["Deployment"]["spec"]["template"]["spec"]
  (container,) = pod["containers"]
  assert container["image"] == SERVING_IMAGE
  ports = {p["name"]: p["containerPort"] for p in container["ports"]}
  assert ports == {"grpc": 8500, "http": 8501}
  for probe in ("startupProbe", "readinessProbe"):
    get = container[probe]["httpGet"]
    assert get["path"] == "/v1/models/mnist" and ports[get["port"]] == 8501
  assert container["resources"]["requests"]["cpu"]  # The autoscaler's yardstick.
  (mount,) = container["volumeMounts"]
  assert mount["mountPath"] == "/models/mnist" and mount["readOnly"]


def test_serving_service_and_autoscaler_target_the_deployment():
  docs = serving_documents()
  deployment, service, hpa = docs["Deployment"], docs["Service"], docs["HorizontalPodAutoscaler"]
  labels = deployment["spec"]["template"]["metadata"]["labels"]
  assert service["spec"]["selector"].items() <= labels.items()
  assert {p["port"] for p in service["spec"]["ports"]} == {8500, 8501}
  assert hpa["apiVersion"] == "autoscaling/v2"
  target = hpa["spec"]["scaleTargetRef"]
  assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])
  assert hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]


def test_volumes_name_the_shared_claim():
  (pvc,) = platforms.load_yaml_documents(K8S / "workdir-pvc.yaml")
  claims = {volume["persistentVolumeClaim"]["claimName"]
            for _, doc in ALL_DOCUMENTS
            for volumes in _find_all(doc, "volumes")
            for volume in volumes if "persistentVolumeClaim" in volume}
  assert claims == {pvc["metadata"]["name"]}


def _find_all(value, key):
  """Every value stored under `key` anywhere inside `value`."""
  if isinstance(value, dict):
    for k, v in value.items():
      if k == key:
        yield v
      yield from _find_all(v, key)
  elif isinstance(value, list):
    for v in value:
      yield from _find_all(v, key)


# Policies a real cluster would enforce only at run time: storage, restart
# budgets, waiting for peers, the evaluator's lifetime, autoscaled replicas.

CLAIM = "mnist-workdir"
# The label on every pod that mounts the claim, which BUILD.md's pod affinity
# selects to keep them on the node of a ReadWriteOnce volume.
WORKDIR_LABEL = ("workdir", CLAIM)
# Retryable failures (a lost task, peers not up in time) a training job survives.
TOLERATED_FAILURES = 3
# Seconds a task must wait for its peers: a node added by the autoscaler plus a
# cold pull of the training image take minutes, and a shorter wait turns every
# slow start into exit 3 and a restart that spends the budget.
MIN_CLUSTER_TIMEOUT_S = 600


def pod_templates(doc):
  """(name, pod template) of every pod a workload or TFJob creates."""
  kind = doc["kind"]
  if kind == "TFJob":
    for rtype, spec in doc["spec"]["tfReplicaSpecs"].items():
      yield f"{doc['metadata']['name']}/{rtype}", spec["template"]
  elif kind in ("Deployment", "StatefulSet", "Job"):
    yield doc["metadata"]["name"], doc["spec"]["template"]


def claims_of(template) -> set:
  return {v["persistentVolumeClaim"]["claimName"]
          for v in template["spec"].get("volumes", []) if "persistentVolumeClaim" in v}


def trainer_containers():
  """(where, container) of every container that runs the training image."""
  for path, doc in ALL_DOCUMENTS:
    for name, template in pod_templates(doc):
      for container in template["spec"]["containers"]:
        if container["image"] == TRAINING_IMAGE:
          yield f"{path.relative_to(K8S)}:{name}", container


def test_default_claim_binds_on_kind_and_one_node():
  """kind's local-path class, and the default block storage of the clouds,
  provision ReadWriteOnce only: a ReadWriteMany claim stays Pending there."""
  (pvc,) = platforms.load_yaml_documents(K8S / "workdir-pvc.yaml")
  assert pvc["metadata"]["name"] == CLAIM
  assert pvc["spec"]["accessModes"] == ["ReadWriteOnce"]
  assert "storageClassName" not in pvc["spec"], "the cluster's default class"


def test_multi_node_claim_is_a_read_write_many_variant_named_in_build_md():
  (rwx,) = platforms.load_yaml_documents(K8S / "workdir-pvc-rwx.yaml")
  (rwo,) = platforms.load_yaml_documents(K8S / "workdir-pvc.yaml")
  assert rwx["metadata"]["name"] == rwo["metadata"]["name"]
  assert rwx["spec"]["accessModes"] == ["ReadWriteMany"]
  # A default class is block storage: the variant must name a file-storage one.
  assert rwx["spec"].get("storageClassName")
  assert rwx["spec"]["resources"] == rwo["spec"]["resources"]
  build_md = (platforms.REPO / "BUILD.md").read_text()
  assert "deploy/k8s/workdir-pvc-rwx.yaml" in build_md


def build_md_pod_affinity() -> dict:
  """The pod affinity BUILD.md gives for a ReadWriteOnce claim on several nodes."""
  text = (platforms.REPO / "BUILD.md").read_text()
  blocks = [yaml.safe_load(b) for b in re.findall(r"^```yaml\n(.*?)^```", text,
                                                   re.M | re.S) if "podAffinity" in b]
  assert len(blocks) == 1, "BUILD.md should give one pod affinity for the claim"
  return blocks[0]


def test_pods_sharing_a_read_write_once_claim_can_be_kept_on_one_node():
  affinity = build_md_pod_affinity()["affinity"]
  (term,) = affinity["podAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
  assert term["topologyKey"] == "kubernetes.io/hostname"
  selector = term["labelSelector"]["matchLabels"]
  mounting = [(f"{path.name}:{name}", template)
              for path, doc in ALL_DOCUMENTS for name, template in pod_templates(doc)
              if CLAIM in claims_of(template)]
  assert len(mounting) >= 5  # Chiefs, evaluators, MWMS workers, TF Serving.
  for where, template in mounting:
    labels = template.get("metadata", {}).get("labels", {})
    assert dict([WORKDIR_LABEL]).items() <= labels.items(), f"{where} lacks the label"
    assert selector.items() <= labels.items(), f"BUILD.md's affinity misses {where}"
  others = [name for _, doc in ALL_DOCUMENTS for name, template in pod_templates(doc)
            if CLAIM not in claims_of(template)
            and WORKDIR_LABEL[0] in template.get("metadata", {}).get("labels", {})]
  assert not others, f"pods that do not mount the claim carry its label: {others}"
  # The snippet is a valid pod affinity where BUILD.md says to put it.
  (deployment,) = [d for p, d in ALL_DOCUMENTS if d["kind"] == "Deployment"]
  patched = json.loads(json.dumps(deployment))
  patched["spec"]["template"]["spec"]["affinity"] = affinity
  kubernetes_validate.validate(patched, K8S_VERSIONS[-1], strict=True)


def retry_budget(doc) -> tuple[int, int, bool]:
  """(backoffLimit, pods that can fail in one failure, whether reaching the limit
  already fails the job) of a TFJob or Job."""
  if doc["kind"] == "TFJob":
    # The operator sums the restarts of the replicas it restarts and fails the
    # job when the sum reaches backoffLimit.
    counted = sum(spec.get("replicas", 1) for spec in doc["spec"]["tfReplicaSpecs"].values()
                  if spec.get("restartPolicy", "Never") != "Never")
    return doc["spec"]["runPolicy"]["backoffLimit"], counted, True
  spec = doc["spec"]
  pods = spec.get("parallelism", 1)
  # OnFailure: the restarts of the running pods are summed, failing at the limit;
  # Never: a failed pod is replaced, failing the Job once more than the limit failed.
  on_failure = spec["template"]["spec"]["restartPolicy"] == "OnFailure"
  return spec.get("backoffLimit", 6), pods, on_failure


BUDGETED = [(path, doc) for path, doc in ALL_DOCUMENTS if doc["kind"] in ("TFJob", "Job")]


@pytest.mark.parametrize("item", BUDGETED, ids=doc_id)
def test_restart_budget_survives_the_tolerated_failures(item):
  """One failure can restart every pod: MultiWorkerMirrored peers exit 4 with the
  lost worker, a parameter-server chief exits 4 with a lost ps."""
  limit, pods, reaching_fails = retry_budget(item[1])
  needed = pods * TOLERATED_FAILURES + (1 if reaching_fails else 0)
  assert limit >= needed, (
      f"backoffLimit {limit}: {TOLERATED_FAILURES} failures of {pods} pods need {needed}")


def train_task_exit_codes() -> dict[str, int]:
  """train/task.py's EXIT_* constants, read from its source: importing it would
  define its flags a second time beside another entry point's in this process."""
  tree = ast.parse((platforms.REPO / "train" / "task.py").read_text())
  return {node.targets[0].id: node.value.value for node in tree.body
          if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name)
          and node.targets[0].id.startswith("EXIT_") and isinstance(node.value, ast.Constant)}


@pytest.mark.parametrize("item", BUDGETED, ids=doc_id)
def test_restart_policy_retries_exactly_what_train_task_calls_retryable(item):
  codes = train_task_exit_codes()
  retryable = (codes["EXIT_CLUSTER_TIMEOUT"], codes["EXIT_TASK_FAILED"])
  _, doc = item
  if doc["kind"] == "TFJob":
    for rtype, spec in doc["spec"]["tfReplicaSpecs"].items():
      assert spec["restartPolicy"] in ("OnFailure", "ExitCode"), rtype
      if spec["restartPolicy"] == "ExitCode":
        # The operator restarts only exit codes 128 and above under ExitCode.
        assert min(retryable) >= 128, f"{rtype}: ExitCode would not retry {retryable}"
    return
  spec = doc["spec"]
  rules = spec.get("podFailurePolicy", {}).get("rules", [])
  if spec["template"]["spec"]["restartPolicy"] == "OnFailure":
    assert not rules  # The API server allows a pod failure policy only with Never.
    return
  (fail,) = [r for r in rules if r["action"] == "FailJob"]
  assert not fail.get("onPodConditions")
  assert fail["onExitCodes"] == {"containerName": platforms.TFJOB_CONTAINER,
                                 "operator": "In", "values": [codes["EXIT_BAD_CONFIG"]]}
  assert {"type": "DisruptionTarget", "status": "True"} in [
      c for r in rules if r["action"] == "Ignore" for c in r.get("onPodConditions", [])]


def flag_value(args: list[str], name: str) -> str | None:
  values = [a.split("=", 1)[1] for a in args if a.startswith(f"--{name}=")]
  return values[-1] if values else None


def test_every_trainer_waits_long_enough_for_its_peers():
  seen = 0
  for where, container in trainer_containers():
    seen += 1
    timeout = flag_value(container["args"], "cluster_timeout")
    assert timeout is not None, f"{where}: no --cluster_timeout (the default is short)"
    assert float(timeout) >= MIN_CLUSTER_TIMEOUT_S, f"{where}: --cluster_timeout={timeout}"
  assert seen >= 8


def test_evaluators_wait_for_a_restarted_chief():
  """A side-car evaluator gives up after --eval_timeout without a new checkpoint:
  it must outwait a chief that restarts and waits for its peers."""
  for where, container in trainer_containers():
    args = container["args"]
    assert float(flag_value(args, "eval_timeout")) >= 2 * float(
        flag_value(args, "cluster_timeout")), where


@pytest.mark.parametrize("name", sorted(TFJOBS))
def test_no_evaluator_replica_is_deleted_when_the_chief_completes(name):
  """With the default success policy the job ends when the chief completes, and a
  Running or All clean-pod policy then deletes the evaluator mid-evaluation."""
  spec = tfjob(name)["spec"]
  ends_with_the_chief = spec.get("successPolicy", "") == ""
  cleans = spec["runPolicy"].get("cleanPodPolicy", "Running") in ("Running", "All")
  if ends_with_the_chief and cleans:
    assert "Evaluator" not in spec["tfReplicaSpecs"]


def test_parameter_server_tfjob_has_an_evaluator_job_of_its_own():
  docs = platforms.load_yaml_documents(K8S / "tfjob-pss.yaml")
  job = tfjob("tfjob-pss.yaml")
  (chief,) = job["spec"]["tfReplicaSpecs"]["Chief"]["template"]["spec"]["containers"]
  (evaluator_job,) = [d for d in docs if d["kind"] == "Job"]
  template = evaluator_job["spec"]["template"]
  (container,) = template["spec"]["containers"]
  # It follows the same checkpoints (same flags, same volume) to the same last step.
  assert container["args"] == chief["args"]
  assert claims_of(template) == claims_of(job["spec"]["tfReplicaSpecs"]["Chief"]["template"])
  env = platforms.k8s_container_env(container, pod_labels={}, pod_annotations={},
                                    config_maps={})
  config = cluster.parse_tf_config(env["TF_CONFIG"])
  # Its cluster is the TFJob's, so that the shared --strategy resolves.
  expected = cluster.parse_tf_config(platforms.tfjob_tf_config(job, "Chief", 0))
  assert {k: len(v) for k, v in config.cluster.items()} == {
      k: len(v) for k, v in expected.cluster.items()}
  described = platforms.dry_run(container["args"], env["TF_CONFIG"])
  assert (described["role"], described["strategy"]) == (cluster.SIDECAR_EVALUATOR,
                                                        cluster.PARAMETER_SERVER)


def test_no_workload_targeted_by_an_autoscaler_sets_replicas():
  """kubectl apply would set the scale back to `replicas` each time."""
  workloads = {(d["kind"], d["metadata"]["name"]): d for _, d in ALL_DOCUMENTS}
  hpas = [d for _, d in ALL_DOCUMENTS if d["kind"] == "HorizontalPodAutoscaler"]
  assert hpas
  for hpa in hpas:
    target = hpa["spec"]["scaleTargetRef"]
    workload = workloads[(target["kind"], target["name"])]
    assert "replicas" not in workload["spec"], (
        f"{target['kind']}/{target['name']} sets replicas beside HPA "
        f"{hpa['metadata']['name']} (minReplicas {hpa['spec'].get('minReplicas', 1)})")
