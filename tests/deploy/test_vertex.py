"""Vertex AI CustomJobSpecs (deploy/vertex/*.yaml) and the submit helper."""

import importlib.util
import json

import jsonschema
import pytest
import yaml

from tests.deploy import platforms
from train import cluster

VERTEX = platforms.DEPLOY / "vertex"
VALUES = {"IMAGE_URI": "us-docker.pkg.dev/my-project/mnist/train:1",
          "OUTPUT_DIR": "gs://my-bucket/mnist/run1"}
# The flags that would override AIP_CHECKPOINT_DIR, AIP_TENSORBOARD_LOG_DIR and
# AIP_MODEL_DIR, which Vertex AI derives from baseOutputDirectory.
OUTPUT_FLAGS = ("--log_dir", "--checkpoint_dir", "--tensorboard_dir", "--model_dir")

# spec file -> strategy, expected task type per pool.
SPECS = {
    "pss.yaml": (cluster.PARAMETER_SERVER, ("chief", "worker", "ps", "evaluator")),
    "mwms.yaml": (cluster.MULTI_WORKER_MIRRORED, ("chief", "worker")),
}

# The part of the v1 REST CustomJobSpec these specs use, unknown fields rejected
# (field names from the Vertex AI REST reference: CustomJobSpec, WorkerPoolSpec,
# ContainerSpec, MachineSpec, DiskSpec, GcsDestination, Scheduling, EnvVar).
_closed = lambda props, required=(): {"type": "object", "additionalProperties": False,
                                      "properties": props, "required": list(required)}
_strings = {"type": "array", "items": {"type": "string"}}
CUSTOM_JOB_SPEC_SCHEMA = _closed({
    "workerPoolSpecs": {"type": "array", "minItems": 1, "maxItems": 4, "items": {
        "anyOf": [{"type": "object", "maxProperties": 0}, _closed({
            "machineSpec": _closed({"machineType": {"type": "string", "minLength": 1},
                                    "acceleratorType": {"type": "string"},
                                    "acceleratorCount": {"type": "integer"}},
                                   ["machineType"]),
            "replicaCount": {"type": "integer", "minimum": 1},
            "containerSpec": _closed({
                "imageUri": {"type": "string", "minLength": 1},
                "command": _strings, "args": _strings,
                "env": {"type": "array", "items": _closed(
                    {"name": {"type": "string"}, "value": {"type": "string"}},
                    ["name", "value"])}}, ["imageUri"]),
            "diskSpec": _closed({"bootDiskType": {"type": "string"},
                                 "bootDiskSizeGb": {"type": "integer"}}),
        }, ["machineSpec", "replicaCount", "containerSpec"])]}},
    "baseOutputDirectory": _closed({"outputUriPrefix": {"type": "string",
                                                        "pattern": "^gs://"}},
                                   ["outputUriPrefix"]),
    "scheduling": _closed({"timeout": {"type": "string"},
                           "restartJobOnWorkerRestart": {"type": "boolean"}}),
    "serviceAccount": {"type": "string"},
    "network": {"type": "string"},
    "tensorboard": {"type": "string"},
}, ["workerPoolSpecs", "baseOutputDirectory"])


def load_submit_module():
  spec = importlib.util.spec_from_file_location("vertex_submit", VERTEX / "submit.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


submit = load_submit_module()


def rendered(name: str) -> dict:
  return submit.render_spec((VERTEX / name).read_text(), VALUES)


def all_keys(value):
  if isinstance(value, dict):
    for k, v in value.items():
      yield k
      yield from all_keys(v)
  elif isinstance(value, list):
    for v in value:
      yield from all_keys(v)


def replicas(spec: dict):
  """(pool index, replica index) of every replica the spec asks for."""
  for pool_index, pool in enumerate(spec["workerPoolSpecs"]):
    for replica in range(int(pool.get("replicaCount", 0))):
      yield pool_index, replica


def test_every_spec_is_tested():
  assert sorted(p.name for p in VERTEX.glob("*.yaml")) == sorted(SPECS)


@pytest.mark.parametrize("name", sorted(SPECS))
def test_spec_has_what_gcloud_and_the_api_require(name):
  raw = yaml.safe_load((VERTEX / name).read_text())
  spec = rendered(name)
  jsonschema.validate(spec, CUSTOM_JOB_SPEC_SCHEMA)
  # gcloud ai custom-jobs create --config: "keys with underscore are invalid".
  assert not [k for k in all_keys(raw) if "_" in k]
  pools = spec["workerPoolSpecs"]
  assert pools[0]["replicaCount"] == 1, "pool 0 is the one primary replica (the chief)"
  assert spec["baseOutputDirectory"]["outputUriPrefix"] == VALUES["OUTPUT_DIR"]
  assert "${" not in json.dumps(spec)
  # Every pool runs the same image and arguments; TF_CONFIG alone sets the role.
  assert len({json.dumps(p["containerSpec"], sort_keys=True) for p in pools if p}) == 1


@pytest.mark.parametrize("name", sorted(SPECS))
def test_outputs_come_from_base_output_directory(name):
  for pool in rendered(name)["workerPoolSpecs"]:
    args = pool["containerSpec"].get("args", [])
    overriding = [a for a in args if a.split("=")[0] in OUTPUT_FLAGS]
    assert not overriding, f"{overriding} would override Vertex AI's AIP_* directories"


@pytest.mark.parametrize("name", sorted(SPECS))
def test_pools_are_in_vertex_order(name):
  strategy, task_types = SPECS[name]
  spec = rendered(name)
  pools = spec["workerPoolSpecs"]
  assert len(pools) == len(task_types)
  for pool_index, replica in replicas(spec):
    config = cluster.parse_tf_config(platforms.vertex_tf_config(spec, pool_index, replica))
    assert config.task_type == task_types[pool_index]


@pytest.mark.parametrize("name", sorted(SPECS))
def test_every_replica_resolves_to_its_role(name):
  """Each replica's Vertex TF_CONFIG, through train.cluster and the real --dry_run."""
  strategy, task_types = SPECS[name]
  spec = rendered(name)
  expected_role = {
      "chief": cluster.COORDINATOR if strategy == cluster.PARAMETER_SERVER
               else cluster.COLLECTIVE,
      "worker": cluster.SERVER if strategy == cluster.PARAMETER_SERVER
                else cluster.COLLECTIVE,
      "ps": cluster.SERVER,
      "evaluator": cluster.SIDECAR_EVALUATOR,
  }
  for pool_index, replica in replicas(spec):
    tf_config = platforms.vertex_tf_config(spec, pool_index, replica, trial="")
    raw = json.loads(tf_config)
    assert "evaluator" not in raw["cluster"] and "trial" in raw["task"] and "job" in raw
    config = cluster.parse_tf_config(tf_config)
    task_type = task_types[pool_index]
    assert cluster.resolve_strategy(config, cluster.AUTO) == strategy
    assert cluster.resolve_role(config, strategy) == expected_role[task_type]
    assert config.is_chief == (task_type == "chief")
    args = spec["workerPoolSpecs"][pool_index]["containerSpec"]["args"]
    described = platforms.dry_run(
        args, tf_config,
        extra_env={"AIP_MODEL_DIR": VALUES["OUTPUT_DIR"] + "/model/",
                   "AIP_CHECKPOINT_DIR": VALUES["OUTPUT_DIR"] + "/checkpoints/",
                   "AIP_TENSORBOARD_LOG_DIR": VALUES["OUTPUT_DIR"] + "/logs/"})
    assert (described["role"], described["strategy"]) == (expected_role[task_type],
                                                           strategy)
    assert described["task"] == {"type": task_type, "index": replica,
                                 "written_type": task_type}


def test_pss_cluster_sizes_match_the_pools():
  spec = rendered("pss.yaml")
  config = cluster.parse_tf_config(platforms.vertex_tf_config(spec, 0, 0))
  pools = spec["workerPoolSpecs"]
  assert len(config.cluster[cluster.WORKER]) == pools[1]["replicaCount"]
  assert len(config.cluster[cluster.PS]) == pools[2]["replicaCount"]
  assert config.num_evaluators == 0  # Vertex AI keeps the evaluator out of `cluster`.


def test_legacy_ai_platform_tf_config_resolves():
  """The form the r0.12 program got on Cloud ML: master, worker, ps."""
  expected = {"master": cluster.COORDINATOR, "worker": cluster.SERVER,
              "ps": cluster.SERVER}
  for task_type, role in expected.items():
    config = cluster.parse_tf_config(platforms.ai_platform_tf_config(2, 1, task_type, 0))
    strategy = cluster.resolve_strategy(config, cluster.AUTO)
    assert strategy == cluster.PARAMETER_SERVER
    assert cluster.resolve_role(config, strategy) == role
    assert config.is_chief == (task_type == "master")
  # Without ps the same form is a MultiWorkerMirrored cluster, master included.
  config = cluster.parse_tf_config(platforms.ai_platform_tf_config(2, 0, "master", 0))
  assert cluster.resolve_strategy(config, cluster.AUTO) == cluster.MULTI_WORKER_MIRRORED
  assert cluster.resolve_role(config, cluster.MULTI_WORKER_MIRRORED) == cluster.COLLECTIVE


# The submit helper.

def test_render_requires_every_placeholder():
  template = (VERTEX / "pss.yaml").read_text()
  with pytest.raises(KeyError, match=r"\$\{OUTPUT_DIR\}"):
    submit.render_spec(template, {"IMAGE_URI": "x"})
  with pytest.raises(ValueError, match="IMAGE_URL"):
    submit.render_spec(template, {**VALUES, "IMAGE_URL": "x"})


def test_render_leaves_comments_alone():
  # Comments mention $REGION and ${OUTPUT_DIR}/model/; only values are filled.
  spec = submit.render_spec("# $REGION\nimage: ${IMAGE_URI}\n", {"IMAGE_URI": "i"})
  assert spec == {"image": "i"}


def test_render_command_prints_a_spec_gcloud_reads(capsys):
  assert submit.main(["--config", str(VERTEX / "pss.yaml"), "--render",
                      "--image_uri", VALUES["IMAGE_URI"],
                      "--output_dir", VALUES["OUTPUT_DIR"] + "/"]) == 0
  assert yaml.safe_load(capsys.readouterr().out) == rendered("pss.yaml")


@pytest.mark.parametrize("name", sorted(SPECS))
def test_spec_is_a_valid_custom_job_spec_proto(name):
  """Against the real v1 proto (google-cloud-aiplatform, in the test extra)."""
  spec = rendered(name)
  proto = submit.parse_job_spec(spec)  # Unknown fields raise.
  assert len(proto.worker_pool_specs) == len(spec["workerPoolSpecs"])
  assert proto.base_output_directory.output_uri_prefix == VALUES["OUTPUT_DIR"]


class FakeJobClient:
  """Vertex AI's JobServiceClient, as far as submit.py uses it; nothing is sent."""

  def __init__(self, states=("JOB_STATE_SUCCEEDED",)):
    self.created = []
    self.states = list(states)

  def create_custom_job(self, *, parent, custom_job):
    from google.cloud import aiplatform_v1

    self.created.append((parent, custom_job))
    return aiplatform_v1.CustomJob(name=f"{parent}/customJobs/123",
                                   display_name=custom_job.display_name,
                                   job_spec=custom_job.job_spec,
                                   state=aiplatform_v1.JobState.JOB_STATE_QUEUED)

  def get_custom_job(self, *, name):
    from google.cloud import aiplatform_v1

    state = self.states.pop(0) if len(self.states) > 1 else self.states[0]
    return aiplatform_v1.CustomJob(name=name, state=aiplatform_v1.JobState[state])


def sent_spec(client: FakeJobClient) -> dict:
  """The CustomJobSpec the client was asked to create, as REST JSON."""
  from google.cloud import aiplatform_v1

  ((_, job),) = client.created
  return json.loads(aiplatform_v1.CustomJobSpec.to_json(
      job.job_spec, always_print_fields_with_no_presence=False))


def rest_json(spec: dict) -> dict:
  """`spec` as the API writes it back (64-bit integers as strings)."""
  from google.cloud import aiplatform_v1

  return json.loads(aiplatform_v1.CustomJobSpec.to_json(
      aiplatform_v1.CustomJobSpec.from_json(json.dumps(spec)),
      always_print_fields_with_no_presence=False))


# CustomJobSpec fields beyond the pools and the output directory, as a user adds
# them to a spec; gcloud's --config honours every one.
EXTRA_FIELDS = {
    "scheduling": {"timeout": "86400s", "restartJobOnWorkerRestart": True},
    "serviceAccount": "trainer@my-project.iam.gserviceaccount.com",
    "network": "projects/12345/global/networks/my-vpc",
    "tensorboard": "projects/my-project/locations/us-central1/tensorboards/7",
    "enableWebAccess": True,
}


@pytest.mark.parametrize("name", sorted(SPECS))
def test_submit_sends_every_field_of_the_spec(name):
  spec = {**rendered(name), **EXTRA_FIELDS}
  client = FakeJobClient()
  job = submit.submit(spec, display_name="mnist-test", project="my-project",
                      region="us-central1", client=client)
  ((parent, created),) = client.created
  assert parent == "projects/my-project/locations/us-central1"
  assert created.display_name == "mnist-test"
  assert sent_spec(client) == rest_json(spec)
  assert set(EXTRA_FIELDS) <= set(sent_spec(client))
  assert job.name == parent + "/customJobs/123"


def test_submit_refuses_a_field_custom_job_spec_lacks():
  client = FakeJobClient()
  spec = {**rendered("pss.yaml"), "schedulling": {"timeout": "60s"}}
  with pytest.raises(ValueError, match="schedulling"):
    submit.submit(spec, display_name="x", project="p", region="r", client=client)
  nested = rendered("pss.yaml")
  nested["workerPoolSpecs"][1]["replicaCont"] = 3
  with pytest.raises(ValueError, match=r"replicaCont.*workerPoolSpecs\[1\]"):
    submit.submit(nested, display_name="x", project="p", region="r", client=client)
  assert not client.created


def test_submit_service_account_flag_fills_the_spec_or_conflicts():
  client = FakeJobClient()
  submit.submit(rendered("mwms.yaml"), display_name="x", project="p", region="r",
                service_account="sa@p.iam.gserviceaccount.com", client=client)
  assert sent_spec(client)["serviceAccount"] == "sa@p.iam.gserviceaccount.com"
  spec = {**rendered("mwms.yaml"), "serviceAccount": "other@p.iam.gserviceaccount.com"}
  with pytest.raises(ValueError, match="other@p"):
    submit.submit(spec, display_name="x", project="p", region="r",
                  service_account="sa@p.iam.gserviceaccount.com", client=client)


def test_wait_for_job_follows_the_states_until_the_end(capsys):
  client = FakeJobClient(["JOB_STATE_PENDING", "JOB_STATE_RUNNING", "JOB_STATE_RUNNING",
                          "JOB_STATE_FAILED"])
  sleeps = []
  job = submit.wait_for_job(client, "projects/p/locations/r/customJobs/1", poll_s=30,
                            sleep=sleeps.append)
  assert job.state.name == "JOB_STATE_FAILED"
  assert sleeps == [30, 30, 30]
  lines = capsys.readouterr().err.splitlines()
  assert [l.rsplit(" ", 1)[1] for l in lines] == [
      "JOB_STATE_PENDING", "JOB_STATE_RUNNING", "JOB_STATE_FAILED"]


def test_submit_command_reports_a_bad_spec_without_a_traceback(tmp_path, capsys,
                                                              monkeypatch):
  client = FakeJobClient()
  monkeypatch.setattr(submit, "make_job_client", lambda region: client)
  config = tmp_path / "bad.yaml"
  config.write_text((VERTEX / "pss.yaml").read_text() + "enableWebAcess: true\n")
  assert submit.main(["--config", str(config), "--project", "p",
                      "--image_uri", VALUES["IMAGE_URI"],
                      "--output_dir", VALUES["OUTPUT_DIR"]]) == 2
  err = capsys.readouterr().err
  assert err.startswith(f"error: {config}: ") and "enableWebAcess" in err
  assert "Traceback" not in err and not client.created


def test_submit_command_creates_and_follows_the_job(capsys, monkeypatch):
  client = FakeJobClient(["JOB_STATE_RUNNING", "JOB_STATE_SUCCEEDED"])
  monkeypatch.setattr(submit, "make_job_client", lambda region: client)
  monkeypatch.setattr(submit.time, "sleep", lambda s: None)
  assert submit.main(["--config", str(VERTEX / "pss.yaml"), "--project", "my-project",
                      "--region", "europe-west4", "--image_uri", VALUES["IMAGE_URI"],
                      "--output_dir", VALUES["OUTPUT_DIR"]]) == 0
  ((parent, _),) = client.created
  assert parent == "projects/my-project/locations/europe-west4"
  assert sent_spec(client) == rest_json(rendered("pss.yaml"))
  assert capsys.readouterr().out.strip() == parent + "/customJobs/123"


# Vertex AI starts each replica's code as soon as its machine is ready, so the
# first ones wait minutes for the machines and image pulls of the others.
MIN_CLUSTER_TIMEOUT_S = 600


@pytest.mark.parametrize("name", sorted(SPECS))
def test_every_replica_waits_long_enough_for_its_peers(name):
  for index, pool in enumerate(rendered(name)["workerPoolSpecs"]):
    args = pool["containerSpec"]["args"]
    timeouts = [float(a.split("=", 1)[1]) for a in args
                if a.startswith("--cluster_timeout=")]
    assert timeouts and timeouts[-1] >= MIN_CLUSTER_TIMEOUT_S, (
        f"workerPoolSpecs[{index}]: --cluster_timeout {timeouts or 'not given'}")
    evals = [float(a.split("=", 1)[1]) for a in args if a.startswith("--eval_timeout=")]
    # The evaluator must outwait a chief that restarts and waits for its peers.
    assert evals and evals[-1] >= 2 * timeouts[-1], f"workerPoolSpecs[{index}]"
