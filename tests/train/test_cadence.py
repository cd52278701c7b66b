"""Tests for train/cadence.py: actions fire at the multiples of their interval."""

import pytest

from train.cadence import Cadence


def _fired(cadence, steps):
  fired = []
  for step in steps:
    if cadence.due(step):
      fired.append(step)
      cadence.advance(step)
  return fired


def test_fires_at_each_multiple_reached():
  assert _fired(Cadence.after(0, 10), range(1, 36)) == [10, 20, 30]


def test_uneven_advances_fire_once_per_crossing_and_stay_on_the_multiples():
  # Calls of 7 steps: 14 crosses 10, 21 crosses 20, 28 does not cross 30.
  assert _fired(Cadence.after(0, 10), [7, 14, 21, 28, 35, 42]) == [14, 21, 35, 42]
  cadence = Cadence.after(0, 10)
  cadence.advance(14)
  assert cadence.next_step == 20


def test_a_resumed_job_keeps_the_same_multiples():
  assert Cadence.after(25, 10).next_step == 30
  assert Cadence.after(30, 10).next_step == 40


def test_interval_0_never_fires():
  cadence = Cadence.after(0, 0)
  assert _fired(cadence, range(1, 1000)) == [] and cadence.next_step == float("inf")


def test_a_negative_interval_is_refused():
  with pytest.raises(ValueError, match="interval must be >= 0 steps, got -1"):
    Cadence.after(0, -1)
