"""Fixtures shared by the whole test tree."""

import pytest

from tests.legacy import run as legacy_run

# The seed checkpoints and evaluates at its first step and past each multiple of
# --checkpoint: three checkpoints and two evaluations, cheap enough for the suite.
LEGACY_MAX_STEPS = 30
LEGACY_CHECKPOINT = 15


@pytest.fixture(scope="session")
def legacy_artifacts(tmp_path_factory) -> legacy_run.LegacyRun:
  """The seed's r0.12 program trained LEGACY_MAX_STEPS steps as 1 ps + master on the
  vendored MNIST: `.log_dir` holds its Supervisor checkpoints (model.ckpt-N),
  `.model_dir` its export.meta + export.index/data. Multi-process: mark users slow."""
  return legacy_run.run_legacy(str(tmp_path_factory.mktemp("legacy")),
                               max_steps=LEGACY_MAX_STEPS, checkpoint=LEGACY_CHECKPOINT,
                               timeout_s=240)
