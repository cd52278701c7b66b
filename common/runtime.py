"""Imports TensorFlow with its C++ start-up noise kept off the terminal.

TensorFlow 2.21 logs its start-up (oneDNN notice, CUDA probing on a CPU machine)
through absl's C++ logger before that logger is initialised, so
TF_CPP_MIN_LOG_LEVEL does not reach it. `import_tensorflow()` holds stderr (file
descriptor 2) in a temporary file while the runtime loads, and replays it if the
import fails. Only a program calls it, once, before anything imports TensorFlow:
in its main (train/task.py), or, where the module that is the program imports
TensorFlow itself, under an `if __name__ == "__main__":` above those imports.
Importing a module never calls it.
Its Python-side chatter (INFO lines while saving, deprecation notices of the TF1
loader that train/export.py uses on purpose) is dropped below ERROR as well, except
what the ClusterCoordinator says about failed and recovered workers.
Set TF_CPP_MIN_LOG_LEVEL=0 to see everything.
"""

import logging
import os
import sys
import tempfile


def import_tensorflow():
  """Imports and returns the `tensorflow` module, quietly unless TF_CPP_MIN_LOG_LEVEL=0."""
  if "tensorflow" in sys.modules or os.environ.get("TF_CPP_MIN_LOG_LEVEL") == "0":
    import tensorflow
    return tensorflow
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  sys.stderr.flush()
  saved_fd = os.dup(2)
  with tempfile.TemporaryFile() as held:
    os.dup2(held.fileno(), 2)
    try:
      import tensorflow
      import tf_keras  # noqa: F401  (loads the same runtime a second time)
      tensorflow.config.list_physical_devices()  # Device probing logs too.
    except BaseException:
      os.dup2(saved_fd, 2)
      held.seek(0)
      sys.stderr.write(held.read().decode(errors="replace"))
      raise
    finally:
      os.dup2(saved_fd, 2)
      os.close(saved_fd)
  tensorflow.get_logger().setLevel(logging.INFO)  # Filtered below.
  _quiet_records_from(os.path.dirname(tensorflow.__file__))
  return tensorflow


def _quiet_records_from(package_dir: str) -> None:
  """Keeps, of what TensorFlow's own modules log, errors and the coordinator's news."""
  from absl import logging as absl_logging
  coordinator_dir = os.path.join(package_dir, "python", "distribute", "coordinator")

  def keep(record: logging.LogRecord) -> bool:
    return (not record.pathname.startswith(package_dir) or record.levelno >= logging.ERROR
            or (record.pathname.startswith(coordinator_dir)
                and "has been recovered" in str(record.msg)))

  # TensorFlow logs through its own logger (which may have a handler of its own
  # when imported before absl's app.run) and, in some modules, through absl's.
  tensorflow_logger = logging.getLogger("tensorflow")
  tensorflow_logger.addFilter(keep)
  absl_logging.get_absl_handler().addFilter(keep)
