r"""Brings a model trained by the r0.12 program across: a SavedModel version of its weights.

Typical usage:

  # The seed's newest Supervisor checkpoint in its --log_dir ...
  python -m train.migrate --legacy_checkpoint=/tmp/logs --model_dir=/tmp/model
  # ... or a given one, or the seed's export (<its --model_dir>/export):
  python -m train.migrate --legacy_checkpoint=/tmp/logs/model.ckpt-10000 \
      --model_dir=/tmp/model
  python -m train.migrate --legacy_checkpoint=/tmp/legacy_model/export \
      --model_dir=/tmp/model

Every variable of the seed's network is mapped by its graph name onto our CNN and
checked (a missing, extra or mis-shaped one is refused, naming it). Then the legacy
graph itself (its export.meta, or the seed's network rebuilt in a TF1 graph from a
training checkpoint) and our CNN predict the same test images, and the version is
published only if no score differs by more than 1e-5: <model_dir>/<version>/,
written, verified and renamed into place exactly as training exports.

Exit codes: 0 published; 2 bad flags, or no legacy checkpoint of the seed's network
at the path; 3 the two networks disagree (nothing published).
"""

import dataclasses
import json
import sys

from absl import flags

from common import runtime
from common import settings
from common.settings import setting

if __name__ == "__main__":
  runtime.import_tensorflow()  # The program: quiet TensorFlow's start-up, before it loads.

EXIT_BAD_INPUT = 2
EXIT_NOT_EQUIVALENT = 3

# How far any score of ours may be from the legacy graph's.
MAX_SCORE_DIFFERENCE = 1e-5


class NotEquivalentError(RuntimeError):
  """Our CNN with the legacy weights does not compute what the legacy graph did."""


@dataclasses.dataclass(frozen=True)
class MigrateConfig:
  legacy_checkpoint: str = setting(
      "", "The r0.12 program's checkpoint: a prefix (<log_dir>/model.ckpt-N), a directory "
      "with a 'checkpoint' file (the newest is taken), or its export prefix "
      "(<model_dir>/export, with export.meta beside it).")
  model_dir: str = setting(
      "", "Export base directory: the SavedModel goes to <model_dir>/<version>/.")
  version: int | None = setting(None, "Version number; default: one above the highest.")
  data_dir: str | None = setting(
      None, "MNIST whose test images both networks predict (IDX files or mnist.npz); "
      "default: the copy vendored in data/mnist.")
  num_images: int | None = setting(
      None, "Compare on the first N test images; default: all of them.")

  def __post_init__(self):
    for name in ("legacy_checkpoint", "model_dir"):
      if not getattr(self, name):
        raise ValueError(f"--{name} is required")
    for name in ("version", "num_images"):
      value = getattr(self, name)
      if value is not None and value < 1:
        raise ValueError(f"--{name}={value}: expected a positive integer")


@dataclasses.dataclass(frozen=True)
class MigrateResult:
  export_dir: str
  legacy_prefix: str
  legacy_graph: str           # "export.meta" or "rebuilt from the checkpoint".
  global_step: int | None     # None for an export.
  num_images: int
  max_abs_difference: float   # Over every score of every image compared.
  legacy_accuracy: float      # Of the legacy graph on those images.


def compare_scores(ours, legacy_scores) -> tuple[float, tuple[int, int]]:
  """The largest |ours - legacy| and where it is, (image, class)."""
  import numpy as np
  difference = np.abs(np.asarray(ours, np.float64) - np.asarray(legacy_scores, np.float64))
  where = np.unravel_index(int(np.argmax(difference)), difference.shape)
  return float(difference[where]), (int(where[0]), int(where[1]))


def migrate(config: MigrateConfig) -> MigrateResult:
  """Converts, proves equal on the test images, and publishes; see the module's docstring.

  Raises legacy.LegacyCheckpointError for a path that holds no checkpoint of the seed's
  network, NotEquivalentError when any score differs by more than MAX_SCORE_DIFFERENCE.
  """
  from absl import logging
  import numpy as np

  from common import mnist
  from model import cnn
  from train import export
  from train import legacy

  checkpoint = legacy.read_legacy_checkpoint(config.legacy_checkpoint)
  source = checkpoint.source
  model = cnn.build_cnn()
  legacy.load_weights(model, checkpoint)
  data = mnist.load_mnist(config.data_dir)
  count = min(config.num_images or len(data.test_labels), len(data.test_labels))
  images = mnist.to_float(data.test_images[:count])
  labels = data.test_labels[:count]
  keys = np.arange(count, dtype=np.int64)[::-1] * 7 + 10**12  # Past int32, reordered.
  legacy_scores, legacy_keys = legacy.run_legacy_graph(source, images, keys)
  graph = "export.meta" if source.meta_graph else "rebuilt from the checkpoint"
  if not np.array_equal(legacy_keys, keys):
    raise NotEquivalentError(f"the legacy graph ({source.meta_graph}) did not return the "
                             "keys it was given: its 'key' output is not its input")
  ours = legacy.run_model(model, images)
  difference, (image, label) = compare_scores(ours, legacy_scores)
  logging.info("Scores of %d test images: max |ours - legacy graph (%s)| = %.3g "
               "(image %d, class %d)", count, graph, difference, image, label)
  if not difference <= MAX_SCORE_DIFFERENCE:
    raise NotEquivalentError(
        f"our CNN with the weights of {source.prefix} differs from the legacy graph "
        f"({graph}) by up to {difference:.3g} (test image {image}, class {label}: ours "
        f"{ours[image, label]:.7g}, legacy {legacy_scores[image, label]:.7g}), more than "
        f"{MAX_SCORE_DIFFERENCE:g}; nothing was published")
  export_dir = export.export_model(model, config.model_dir, version=config.version,
                                   sample_images=images[:8])
  return MigrateResult(
      export_dir=export_dir, legacy_prefix=source.prefix, legacy_graph=graph,
      global_step=checkpoint.global_step, num_images=count, max_abs_difference=difference,
      legacy_accuracy=float(np.mean(legacy_scores.argmax(axis=1) == labels)))


FLAGS = flags.FLAGS


def define_flags(flag_values: flags.FlagValues = FLAGS) -> None:
  """One flag per setting of MigrateConfig."""
  settings.define_flags(MigrateConfig, flag_values)


def migrate_config_from_flags(flag_values: flags.FlagValues) -> MigrateConfig:
  return MigrateConfig(**settings.values_from_flags(MigrateConfig, flag_values))


def main(argv):
  if len(argv) > 1:
    print(f"error: unexpected arguments {argv[1:]}: expected flags only", file=sys.stderr)
    return EXIT_BAD_INPUT
  try:
    config = migrate_config_from_flags(FLAGS)
  except ValueError as e:
    print(f"error: {e}", file=sys.stderr)
    return EXIT_BAD_INPUT
  from common import mnist
  from train import legacy
  try:
    result = migrate(config)
  except (legacy.LegacyCheckpointError, mnist.DataError, FileExistsError) as e:
    print(f"error: {e}", file=sys.stderr)
    return EXIT_BAD_INPUT
  except NotEquivalentError as e:
    print(f"error: {e}", file=sys.stderr)
    return EXIT_NOT_EQUIVALENT
  print(json.dumps(dataclasses.asdict(result)))
  return 0


if __name__ == "__main__":
  from absl import app
  define_flags()
  app.run(main, flags_parser=settings.parse_flags)
