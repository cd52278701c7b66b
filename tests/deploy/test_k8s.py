"""Kubernetes manifests (deploy/k8s/): schemas, and the TF_CONFIG every pod gets."""

import importlib.resources
import json

import jsonschema
import kubernetes_validate
import pytest
import referencing
import referencing.jsonschema

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
  (doc,) = platforms.load_yaml_documents(K8S / name)
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
