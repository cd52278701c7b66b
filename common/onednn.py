"""TensorFlow's oneDNN CPU kernels, which TensorFlow itself turns on only on some CPUs.

TensorFlow's x86 Linux packages carry two sets of kernels for convolutions, matrix
products and their gradients: Eigen's, and oneDNN's (graph functions only: its
rewrite passes swap the kernels in when a graph is optimised). Which set runs is
read once, when TensorFlow loads, from TF_ENABLE_ONEDNN_OPTS; unset, TensorFlow
2.21 picks oneDNN only on CPUs with AVX-512 VNNI or BF16, AVX-VNNI or AMX
(`DefaultOneDnnPolicy`, tensorflow/core/util/port.cc), and Eigen on the others, an
AVX2-only AMD EPYC among them. On such a CPU the seed's network trains much
faster on oneDNN's kernels, in one process and on every role of a cluster
(BUILD.md, "Kernels" under "Performance", measures it beside the r0.12 program on
either set).

`set_onednn(on)` sets the variable for TensorFlow to read; train.task calls it
before TensorFlow loads, with --onednn (default on; TF_ENABLE_ONEDNN_OPTS, when
set, gives the default instead). oneDNN sums in another order than Eigen, so
results differ from Eigen's in the last bits, as between any two kernels.
"""

import os
import sys
from typing import Mapping, MutableMapping

ENV_VAR = "TF_ENABLE_ONEDNN_OPTS"

# The /proc/cpuinfo flags of the features for which TensorFlow 2.21 picks oneDNN by
# itself on Linux.
TENSORFLOW_DEFAULT_FEATURES = ("avx512_vnni", "avx512_bf16", "avx_vnni", "amx_tile",
                               "amx_int8", "amx_bf16")


def set_onednn(on: bool, environ: MutableMapping[str, str] = os.environ) -> bool:
  """Sets TF_ENABLE_ONEDNN_OPTS to 1 or 0 in `environ`; whether it can take effect.

  False when TensorFlow is already loaded in this process: it read the variable
  then, and only processes started from here on see the new value.
  """
  environ[ENV_VAR] = "1" if on else "0"
  return "tensorflow" not in sys.modules


def tensorflow_default(cpuinfo_path: str = "/proc/cpuinfo") -> bool | None:
  """Whether TensorFlow turns oneDNN on by itself on this CPU; None if unknown.

  Read from the CPU's flags in `cpuinfo_path` (Linux x86); None where that file
  does not exist or names no x86 flags.
  """
  try:
    with open(cpuinfo_path) as f:
      lines = [line for line in f if line.startswith("flags")]
  except OSError:
    return None
  if not lines:
    return None
  cpu_flags = set(lines[0].partition(":")[2].split())
  return any(feature in cpu_flags for feature in TENSORFLOW_DEFAULT_FEATURES)


def describe(environ: Mapping[str, str] = os.environ) -> str:
  """What a TensorFlow process started with `environ` runs: oneDNN's kernels or Eigen's."""
  value = environ.get(ENV_VAR)
  if value is not None:
    return f"{ENV_VAR}={value}"
  default = tensorflow_default()
  if default is None:
    return f"{ENV_VAR} unset (TensorFlow's default for this CPU)"
  return (f"{ENV_VAR} unset: TensorFlow's default for this CPU, "
          f"{'oneDNN' if default else 'Eigen (no AVX-512 VNNI/BF16, AVX-VNNI or AMX)'}")
