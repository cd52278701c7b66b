"""When the training loop's periodic actions fire: checkpoint, evaluation, log line."""

import dataclasses


@dataclasses.dataclass
class Cadence:
  """Fires at each multiple of `interval` steps that the step count reaches; never if 0.

  Multiples of the interval, not intervals since the last firing: a job resumed
  from a checkpoint, or one whose steps advance by uneven amounts (a scheduled
  function of several steps, a worker's function run twice), keeps its actions on
  the same steps as an uninterrupted one.
  """
  interval: int
  next_step: float  # float("inf") when the cadence never fires.

  @classmethod
  def after(cls, step: int, interval: int) -> "Cadence":
    """The cadence whose next firing is the first multiple of `interval` past `step`."""
    if interval < 0:
      raise ValueError(f"a cadence's interval must be >= 0 steps, got {interval}")
    return cls(interval, _next_multiple(step, interval))

  def due(self, step: int) -> bool:
    return step >= self.next_step

  def advance(self, step: int) -> None:
    """Fired at `step`: the next firing is the next multiple past it."""
    self.next_step = _next_multiple(step, self.interval)


def _next_multiple(step: int, interval: int) -> float:
  return (step // interval + 1) * interval if interval else float("inf")
