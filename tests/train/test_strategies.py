"""The servers a ps or a worker under parameter servers runs (train/strategies.py)."""

from absl import logging
import tensorflow as tf

from train import cluster as cluster_lib
from train import strategies


def test_server_threads_sleep_while_idle_unless_asked_to_spin():
  assert strategies.server_config().experimental.disable_thread_spinning is True
  spinning = strategies.server_config(thread_spinning=True)
  assert spinning.experimental.disable_thread_spinning is False
  # Nothing else departs from TensorFlow's defaults.
  assert spinning.experimental == tf.compat.v1.ConfigProto().experimental
  spinning.ClearField("experimental")
  assert spinning == tf.compat.v1.ConfigProto()


class FakeServer:
  made = []

  def __init__(self, cluster_spec, **kwargs):
    self.cluster_spec, self.kwargs = cluster_spec, kwargs
    self.target = "grpc://localhost:1"
    FakeServer.made.append(self)

  def join(self):
    pass


def test_run_server_starts_the_tasks_server_with_those_options(monkeypatch):
  monkeypatch.setattr(tf.distribute, "Server", FakeServer)
  logged = []
  monkeypatch.setattr(logging, "info", lambda fmt, *args: logged.append(fmt % args))
  config = cluster_lib.parse_tf_config(
      '{"cluster": {"chief": ["h:1"], "ps": ["h:2"], "worker": ["h:3"]}, '
      '"task": {"type": "ps", "index": 0}}')
  for spinning in (False, True):
    strategies.run_server(config, thread_spinning=spinning)
    server = FakeServer.made[-1]
    assert server.kwargs["job_name"] == "ps" and server.kwargs["task_index"] == 0
    assert server.kwargs["start"] is True
    assert server.kwargs["config"] == strategies.server_config(spinning)
  assert logged[-2:] == ["ps:0 serving at grpc://localhost:1 (thread pools sleep while idle)",
                         "ps:0 serving at grpc://localhost:1 (thread pools spin while idle)"]
