"""What the seed program's --result_json holds: its step times and last accuracy.

Not part of the seed: the instrumentation a benchmark needs, kept out of its code.
The chief (the master, or the one process) records, for each training step it ran,
the global step that `sess.run` returned and `time.monotonic()` just before and
just after that run, so evaluation, checkpoints and start-up fall outside every
interval. time.monotonic is one clock for every process of this machine, so runs
can be compared side by side.

The file (SCHEMA_VERSION 1):

  {"schema_version": 1, "clock": "time.monotonic", "batch_size": 100,
   "global_step": [1, 2, ...],        # per step the chief ran, in order
   "run_start_s": [...], "run_end_s": [...],   # around that step's sess.run
   "final_global_step": 30,           # read after the last checkpoint
   "test_accuracy": 0.91,             # the last evaluation's (null if none)
   "test_accuracy_step": 21}          # the global step it was taken at

`examples_per_second` reads a throughput off it, as a benchmark does.
"""

import json
import os

SCHEMA_VERSION = 1


class StepTimes:
  """Collects the chief's step times; `write` saves them as --result_json."""

  def __init__(self):
    self.global_step = []
    self.run_start_s = []
    self.run_end_s = []
    self.test_accuracy = None
    self.test_accuracy_step = None

  def add_step(self, global_step, run_start_s, run_end_s):
    self.global_step.append(int(global_step))
    self.run_start_s.append(run_start_s)
    self.run_end_s.append(run_end_s)

  def add_evaluation(self, global_step, test_accuracy):
    self.test_accuracy = float(test_accuracy)
    self.test_accuracy_step = int(global_step)

  def as_dict(self, final_global_step, batch_size):
    return {
        "schema_version": SCHEMA_VERSION,
        "clock": "time.monotonic",
        "batch_size": int(batch_size),
        "global_step": self.global_step,
        "run_start_s": self.run_start_s,
        "run_end_s": self.run_end_s,
        "final_global_step": int(final_global_step),
        "test_accuracy": self.test_accuracy,
        "test_accuracy_step": self.test_accuracy_step,
    }

  def write(self, path, final_global_step, batch_size):
    """Writes the file whole (a temporary file renamed), so a reader never sees half."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    partial = f"{path}.partial"
    with open(partial, "w") as f:
      json.dump(self.as_dict(final_global_step, batch_size), f)
    os.replace(partial, path)


def examples_per_second(result, first_step, last_step):
  """Examples trained per second between two global steps, from a --result_json dict.

  Takes the first step the chief recorded at or past each bound and divides the
  global steps between them (every trainer's, not only the chief's) times the batch
  size by the time between the ends of those two runs. The window should hold no
  evaluation: the seed evaluates in the chief's loop, so one would count as training.
  """
  if not 0 <= first_step < last_step:
    raise ValueError(f"steps {first_step} to {last_step}: expected 0 <= first < last")
  steps = result["global_step"]
  try:
    i = next(i for i, step in enumerate(steps) if step >= first_step)
    j = next(j for j, step in enumerate(steps) if step >= last_step)
  except StopIteration:
    raise ValueError(f"global steps {first_step} to {last_step} are not both in the "
                     f"result: it recorded {steps[0] if steps else None} to "
                     f"{steps[-1] if steps else None}") from None
  if j == i:
    raise ValueError(f"global steps {first_step} to {last_step} fall in one recorded "
                     f"step ({steps[i]}): expected a wider window")
  seconds = result["run_end_s"][j] - result["run_end_s"][i]
  return (steps[j] - steps[i]) * result["batch_size"] / seconds
