"""Tests for train/evaluation.py's BackgroundEvaluator: newest request wins, errors surface."""

import threading
import time

import pytest

from train import evaluation

WAIT_S = 60  # Only ever reached if the code under test hangs.


def _wait_until(predicate):
  deadline = time.monotonic() + WAIT_S
  while not predicate():
    assert time.monotonic() < deadline, "the background evaluator hangs"
    time.sleep(0.01)


class _Gate:
  """An evaluate_fn that records its requests and blocks on the first until opened."""

  def __init__(self, fail_on=None):
    self.started = threading.Event()
    self.opened = threading.Event()
    self.requests = []
    self.fail_on = fail_on

  def __call__(self, request):
    self.requests.append(request)
    if len(self.requests) == 1:
      self.started.set()
      assert self.opened.wait(WAIT_S)
    if request == self.fail_on:
      raise RuntimeError(f"cannot evaluate {request}")
    return f"result of {request}"


def test_the_newest_request_replaces_the_one_waiting():
  gate = _Gate()
  background = evaluation.BackgroundEvaluator(gate)
  background.submit(1)
  assert gate.started.wait(WAIT_S)  # 1 is in progress, blocked.
  background.submit(2)
  background.submit(3)  # Replaces 2, which never started.
  gate.opened.set()
  _wait_until(lambda: len(gate.requests) == 2)  # Else close() would drop 3.
  background.close()
  assert gate.requests == [1, 3]
  assert background.results == [(1, "result of 1"), (3, "result of 3")]
  assert not background._thread.is_alive()


def test_close_drops_the_waiting_request_and_waits_for_the_running_one():
  gate = _Gate()
  background = evaluation.BackgroundEvaluator(gate)
  background.submit(1)
  assert gate.started.wait(WAIT_S)
  background.submit(2)
  closer = threading.Thread(target=background.close)
  closer.start()
  _wait_until(lambda: background._closed)
  assert closer.is_alive()  # Waits for 1 ...
  gate.opened.set()
  closer.join(WAIT_S)
  assert not closer.is_alive() and not background._thread.is_alive()
  assert [request for request, _ in background.results] == [1]  # ... and 2 is dropped.


def test_an_error_is_raised_by_the_next_submit_and_the_thread_ends():
  gate = _Gate(fail_on=1)
  background = evaluation.BackgroundEvaluator(gate)
  background.submit(1)
  gate.opened.set()
  background._thread.join(WAIT_S)
  assert not background._thread.is_alive()
  with pytest.raises(RuntimeError, match="cannot evaluate 1"):
    background.submit(2)
  background.close()  # Raised once already; closing again is quiet.


def test_an_error_is_raised_by_close():
  gate = _Gate(fail_on=1)
  with pytest.raises(RuntimeError, match="cannot evaluate 1"):
    with evaluation.BackgroundEvaluator(gate) as background:
      background.submit(1)
      assert gate.started.wait(WAIT_S)
      gate.opened.set()
  assert not background._thread.is_alive()


def test_an_error_of_the_caller_is_not_hidden_by_the_threads():
  gate = _Gate(fail_on=1)
  with pytest.raises(KeyError):
    with evaluation.BackgroundEvaluator(gate) as background:
      background.submit(1)
      assert gate.started.wait(WAIT_S)
      gate.opened.set()
      _wait_until(lambda: not background._thread.is_alive())
      raise KeyError("training failed")
  assert not background._thread.is_alive()


def test_close_without_requests_ends_the_thread():
  background = evaluation.BackgroundEvaluator(lambda request: None)
  background.close()
  assert not background._thread.is_alive() and background.results == []
  with pytest.raises(RuntimeError, match="after close"):
    background.submit(1)
