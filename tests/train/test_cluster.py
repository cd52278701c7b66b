"""Tests for train/cluster.py: every TF_CONFIG form, and every malformed one."""

import json

import pytest

from train import cluster as c

LEGACY = {"cluster": {"master": ["m:2222"], "worker": ["w0:2222", "w1:2222"],
                      "ps": ["p0:2222"]},
          "environment": "cloud", "task": {"type": "master", "index": 0, "cloud": "x"},
          "job": {"scale_tier": "STANDARD_1"}}
VERTEX = {"cluster": {"chief": ["c:2222"], "worker": ["w0:2222"], "ps": ["p0:2222"]},
          "environment": "cloud", "task": {"type": "chief", "index": 0, "trial": "3"},
          "job": '{"worker_pool_specs": []}'}
TFJOB = {"cluster": {"chief": ["c:2222"], "worker": ["w0:2222"], "ps": ["p0:2222"],
                     "evaluator": ["e:2222"]},
         "task": {"type": "worker", "index": 0}}


def parse(d):
  return c.parse_tf_config(json.dumps(d))


def test_no_tf_config_is_one_local_process():
  for text in (None, "", "  "):
    config = c.parse_tf_config(text)
    assert config.is_local and config.is_chief
    assert c.resolve_strategy(config) == c.ONE_DEVICE
    assert c.resolve_role(config, c.ONE_DEVICE) == c.STANDALONE


def test_legacy_master_is_mapped_to_chief():
  config = parse(LEGACY)
  assert (config.task_type, config.written_task_type) == (c.CHIEF, c.MASTER)
  assert set(config.cluster) == {c.CHIEF, c.WORKER, c.PS}
  assert config.cluster[c.CHIEF] == ("m:2222",)
  assert config.is_chief
  assert c.resolve_strategy(config) == c.PARAMETER_SERVER
  assert c.resolve_role(config, c.PARAMETER_SERVER) == c.COORDINATOR


def test_vertex_fields_are_accepted():
  config = parse(VERTEX)
  assert config.trial == "3"
  assert c.resolve_role(config, c.resolve_strategy(config)) == c.COORDINATOR


def test_evaluator_inside_cluster_is_kept_out_of_training_cluster():
  config = parse(TFJOB)
  assert c.EVALUATOR not in config.cluster
  assert config.num_evaluators == 1
  assert c.resolve_role(config, c.resolve_strategy(config)) == c.SERVER
  evaluator = parse({**TFJOB, "task": {"type": "evaluator", "index": 0}})
  assert not evaluator.is_chief
  assert c.resolve_role(evaluator, c.resolve_strategy(evaluator)) == c.SIDECAR_EVALUATOR


@pytest.mark.parametrize("task_type,index,role", [
    ("chief", 0, c.COORDINATOR), ("worker", 1, c.SERVER), ("ps", 0, c.SERVER)])
def test_parameter_server_roles(task_type, index, role):
  config = parse({"cluster": {"chief": ["c:1"], "worker": ["a:1", "b:1"], "ps": ["p:1"]},
                  "task": {"type": task_type, "index": index}})
  assert c.resolve_role(config, c.resolve_strategy(config)) == role
  assert config.is_chief == (task_type == "chief")


def test_workers_only_is_multi_worker_mirrored_with_worker_0_chief():
  cluster = {"worker": ["a:1", "b:1"]}
  w0 = parse({"cluster": cluster, "task": {"type": "worker", "index": 0}})
  w1 = parse({"cluster": cluster, "task": {"type": "worker", "index": 1}})
  assert c.resolve_strategy(w0) == c.MULTI_WORKER_MIRRORED
  assert c.resolve_role(w1, c.MULTI_WORKER_MIRRORED) == c.COLLECTIVE
  assert (w0.is_chief, w1.is_chief) == (True, False)


@pytest.mark.parametrize("cluster", [
    {"chief": ["c:2222"]},                          # Vertex AI, one replica.
    {"master": ["m:2222"]},                         # AI Platform, scale tier BASIC.
    {"chief": ["c:2222"], "evaluator": ["e:2222"]},  # TFJob: the evaluator is no peer.
    {"worker": ["w:2222"]},
], ids=["chief", "master", "chief+evaluator", "one-worker"])
def test_a_cluster_of_one_task_trains_on_one_device(cluster):
  (task_type,) = [t for t in cluster if t != "evaluator"]
  config = parse({"cluster": cluster, "task": {"type": task_type, "index": 0}})
  assert c.resolve_strategy(config) == c.ONE_DEVICE
  assert c.resolve_role(config, c.ONE_DEVICE) == c.STANDALONE
  assert config.is_chief
  if "evaluator" in cluster:
    evaluator = parse({"cluster": cluster, "task": {"type": "evaluator", "index": 0}})
    assert c.resolve_role(evaluator, c.resolve_strategy(evaluator)) == c.SIDECAR_EVALUATOR
  # Asked for by name, a collective strategy is still honoured.
  assert c.resolve_strategy(config, c.MULTI_WORKER_MIRRORED) == c.MULTI_WORKER_MIRRORED


def test_forced_strategy_must_fit_cluster():
  ps_cluster = parse(VERTEX)
  assert c.resolve_strategy(ps_cluster, c.PARAMETER_SERVER) == c.PARAMETER_SERVER
  with pytest.raises(c.TFConfigError, match="multi_worker_mirrored cannot use"):
    c.resolve_strategy(ps_cluster, c.MULTI_WORKER_MIRRORED)
  with pytest.raises(c.TFConfigError, match="needs 'ps' tasks"):
    c.resolve_strategy(parse({"cluster": {"worker": ["a:1"]},
                              "task": {"type": "worker", "index": 0}}), c.PARAMETER_SERVER)
  with pytest.raises(c.TFConfigError, match="one_device cannot run in a cluster of 4"):
    c.resolve_strategy(parse(LEGACY), c.ONE_DEVICE)
  with pytest.raises(c.TFConfigError, match="'mirror' is not one of"):
    c.resolve_strategy(ps_cluster, "mirror")


@pytest.mark.parametrize("text,message", [
    ("{not json", "not valid JSON"),
    ("[1, 2]", "must be a JSON object"),
    (json.dumps({"cluster": {"mastr": ["a:1"]}, "task": {"type": "mastr", "index": 0}}),
     "task type 'mastr' is not one of chief, master, worker, ps, evaluator"),
    (json.dumps({"cluster": {"chief": ["a:1"]}, "task": {"type": "boss", "index": 0}}),
     "task type 'boss' is not one of"),
    (json.dumps({"cluster": {"chief": ["a:1"], "worker": ["b:1"]},
                 "task": {"type": "worker", "index": 3}}),
     "index 3 is out of range: cluster has 1 worker"),
    (json.dumps({"cluster": {"chief": ["a:1"]}, "task": {"type": "worker", "index": -1}}),
     "index -1 is not a non-negative integer"),
    (json.dumps({"cluster": {"chief": ["a:1"], "ps": ["p:1"], "worker": ["w:1"]},
                 "task": {"type": "ps", "index": 1}}), "index 1 is out of range"),
    (json.dumps({"cluster": {"chief": ["a:1"]}, "task": {"type": "worker", "index": 0}}),
     "task worker:0 is missing from its cluster"),
    (json.dumps({"cluster": {"chief": ["a:1"], "ps": ["p:1"]},
                 "task": {"type": "ps", "index": 0}}), "has 'ps' but no 'worker'"),
    (json.dumps({"cluster": {"worker": ["w:1"], "ps": ["p:1"]},
                 "task": {"type": "ps", "index": 0}}), "has 'ps' but no 'chief'"),
    (json.dumps({"cluster": {"chief": ["a:1"], "master": ["b:1"]},
                 "task": {"type": "chief", "index": 0}}), "both 'chief' and 'master'"),
    (json.dumps({"cluster": {"chief": ["a:1", "b:1"]}, "task": {"type": "chief"}}),
     "2 chiefs"),
    (json.dumps({"cluster": {"chief": ["a:1"]}}), "cluster but no 'task'"),
    (json.dumps({"cluster": {"worker": "w:1, x:1".split(",") + [3]},
                 "task": {"type": "worker"}}), "list of 'host:port' strings"),
    (json.dumps({"cluster": {"ps": ["p:1"]}, "task": {"type": "ps", "index": 0}}),
     "no chief, master or worker"),
    (json.dumps({"cluster": {"chief": ["a:1"]}, "task": {"index": 0}}), "has no 'type'"),
])
def test_malformed_tf_config_names_the_problem(text, message):
  with pytest.raises(c.TFConfigError, match=message):
    c.parse_tf_config(text)


def test_describe_is_json_serializable():
  config = parse(LEGACY)
  described = json.loads(json.dumps(c.describe(config, c.resolve_strategy(config))))
  assert described["role"] == c.COORDINATOR
  assert described["task"] == {"type": "chief", "index": 0, "written_type": "master"}
  assert described["cluster"]["chief"] == ["m:2222"]
