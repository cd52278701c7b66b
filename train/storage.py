"""Where a task writes: checked before it trains, and named when its disk fills up.

A directory that cannot be written (a typo, a file where a folder was meant, a
read-only mount, a bucket without write permission) would otherwise show only at
the first checkpoint, or for the export, after the whole training has run.
"""

import dataclasses
import errno
import os
import uuid

import tensorflow as tf

from common import settings
from train import cluster
from train import evaluation
from train.config import TrainConfig

# How the C++ file systems under tf.io.gfile and checkpoints report ENOSPC and
# EDQUOT: a ResourceExhaustedError (or a plain OSError) carrying strerror's text.
_DISK_FULL_TEXTS = (os.strerror(errno.ENOSPC), os.strerror(errno.EDQUOT))


@dataclasses.dataclass(frozen=True)
class Output:
  """A directory a task writes, and what it writes there, naming the setting."""
  directory: str
  what: str


def outputs_of(config: TrainConfig, role: str, *, is_chief: bool,
               result_json: str | None = None) -> list[Output]:
  """The directories this task writes into, each once.

  Only the chief writes the job's outputs: checkpoints, TensorBoard summaries, the
  export and the result file. A side-car evaluator writes its own summaries. The
  parameter servers and the workers of a parameter-server cluster write nothing,
  and a MultiWorkerMirrored worker that is not the chief writes its copy of each
  checkpoint to a temporary directory of its own (train/loop.py): none of them
  checks anything, so a worker never fails for a directory only the chief needs.
  """
  if role == cluster.SIDECAR_EVALUATOR:
    written = [(evaluation.summary_dir(config), "evaluation summaries",
                _source(config, "tensorboard_dir"))]
  elif is_chief and role != cluster.SERVER:
    written = [(config.checkpoint_dir, "checkpoints", _source(config, "checkpoint_dir")),
               (config.tensorboard_dir, "TensorBoard summaries",
                _source(config, "tensorboard_dir"))]
    if config.export:
      written.append((config.model_dir, "the exported model", _source(config, "model_dir")))
    if result_json:
      written.append((os.path.dirname(result_json) or ".", "the result", "--result_json"))
  else:
    written = []
  merged = {}
  for directory, what, source in written:
    whats, sources = merged.setdefault(directory, ([], []))
    whats.append(what)
    if source not in sources:
      sources.append(source)
  return [Output(directory, f"{' and '.join(whats)} ({', '.join(sources)})")
          for directory, (whats, sources) in merged.items()]


def _source(config: TrainConfig, name: str) -> str:
  """Where a directory setting's value came from: its flag or variable, or --log_dir."""
  if name in ("checkpoint_dir", "tensorboard_dir") and getattr(config, name) == config.log_dir:
    return "--log_dir"
  (field,) = settings.settings_of(TrainConfig, only=[name])
  env = field.metadata["env"]
  return f"--{settings.flag_name(field)}" + (f" or ${env}" if env else "")


def check_writable(directory: str) -> str | None:
  """Why this process cannot create files in `directory`, or None when it can.

  Creates the directory if it is missing (training would), then writes and deletes
  a small probe file, through tf.io.gfile for every file system alike. On gs://
  and other object stores a missing bucket or a missing write permission shows
  only at the first write, so only a real write tells; it costs two requests. The
  probe's name starts with a dot: TF Serving, polling an export base, ignores it.
  """
  probe = os.path.join(directory, f".write-check-{uuid.uuid4().hex}")
  try:
    tf.io.gfile.makedirs(directory)
    with tf.io.gfile.GFile(probe, "w") as f:
      f.write("")
    tf.io.gfile.remove(probe)
  except tf.errors.OpError as e:
    return e.message
  except OSError as e:
    return e.strerror or str(e)
  return None


class UnwritableError(Exception):
  """A directory this task must write cannot be written; the message names it."""


def check_outputs(outputs: list[Output]) -> None:
  """Raises UnwritableError naming the first output that cannot be written, and why."""
  for output in outputs:
    problem = check_writable(output.directory)
    if problem:
      raise UnwritableError(f"cannot write {output.what} to {output.directory}: {problem}")


def is_disk_full(error: BaseException) -> bool:
  """Whether `error` is a write that failed for lack of space (ENOSPC) or quota."""
  if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
    return True
  return isinstance(error, (tf.errors.OpError, OSError)) and any(
      text in str(error) for text in _DISK_FULL_TEXTS)


def describe_disk_full(error: BaseException, outputs: list[Output]) -> str:
  """Which of `outputs` filled up, as the start of an error message."""
  text = str(error)
  # The deepest directory that the failed file's path (in the message) lies in.
  hit = max((o for o in outputs if o.directory.rstrip("/") + "/" in text),
            key=lambda o: len(o.directory), default=None)
  where = (f"{hit.directory}, where the task writes {hit.what}" if hit else
           " or ".join(o.directory for o in outputs) or "a directory this task writes")
  return f"no space left on device (ENOSPC) in {where}"
