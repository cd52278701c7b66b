"""How many parameter-server shards a cluster needs: a model from per-step costs.

Under ParameterServerStrategy each step of a worker reads the variables it uses
from the parameter servers and sends their gradients back, and the servers apply
the update (Adam) to the variables they hold. With the hidden layer's products on
the servers (--products_on_ps), its kernel stays there: the worker sends the
layer's input and its output's gradient instead, and receives the output and its
input's gradient. So each worker step costs:

  * on the network: `bytes_each_way` out of the parameter servers and as many
    into them (the model's bytes each way, or fewer with the products on the ps);
  * on the parameter servers' CPU: the update, the transfers and any products,
    `ps_cpu_ms` (measured on one server holding the whole model).

`--num_ps_shards=S` splits the large variables over S servers, so each carries
1/S of both (of the products too; each shard's output, though, is the layer's
whole output, so with the products on the ps the bytes split less than evenly).
One shard (one server) can then feed as many workers as its link and its cores
allow, and a cluster of N workers needs N divided by that many.
"""

import dataclasses
import math

BITS_PER_BYTE = 8


@dataclasses.dataclass(frozen=True)
class StepCost:
  """What one worker step costs the parameter servers, and how fast a worker steps."""
  parameter_bytes: int           # The model's variables.
  bytes_each_way: int            # A worker step's bytes out of the ps, and into them.
  ps_cpu_ms: float               # Parameter-server CPU per worker step, whole model.
  worker_steps_per_sec: float    # One worker's steps per second (its own cores).

  @property
  def bytes_per_step(self) -> int:
    """Bytes a worker moves per step, both ways."""
    return 2 * self.bytes_each_way


def workers_per_shard_network(cost: StepCost, link_gbit_per_sec: float) -> float:
  """Workers one server's full-duplex link carries: each way, bytes_each_way per step."""
  bytes_per_sec = link_gbit_per_sec * 1e9 / BITS_PER_BYTE
  return bytes_per_sec / (cost.bytes_each_way * cost.worker_steps_per_sec)


def workers_per_shard_cpu(cost: StepCost, ps_cores: float) -> float:
  """Workers one server's cores keep up with (update, transfers and any products of
  the whole model)."""
  return ps_cores * 1000.0 / (cost.ps_cpu_ms * cost.worker_steps_per_sec)


def workers_per_shard(cost: StepCost, link_gbit_per_sec: float, ps_cores: float) -> float:
  """Workers one shard feeds: the smaller of what its link and its cores allow."""
  return min(workers_per_shard_network(cost, link_gbit_per_sec),
             workers_per_shard_cpu(cost, ps_cores))


def shards_needed(num_workers: int, cost: StepCost, link_gbit_per_sec: float,
                  ps_cores: float) -> int:
  """The --num_ps_shards (parameter servers) for `num_workers` workers never to wait."""
  if num_workers < 1:
    raise ValueError(f"num_workers {num_workers}: expected at least 1")
  return max(1, math.ceil(num_workers / workers_per_shard(cost, link_gbit_per_sec,
                                                           ps_cores)))


def worker_link_gbit_per_sec(cost: StepCost) -> float:
  """What each worker's own link carries each way, whatever the number of shards."""
  return cost.bytes_each_way * cost.worker_steps_per_sec * BITS_PER_BYTE / 1e9


@dataclasses.dataclass(frozen=True)
class ClusterCheck:
  """What a local cluster of 1 ps and `num_workers` workers measured."""
  num_workers: int
  ps_cpu_ms: float | None          # Per global step.
  ps_bytes_per_step: float | None  # Through the ps's connections, both ways.


LINKS_GBIT_PER_SEC = (10, 100)
CLUSTER_WORKERS = (4, 8, 16, 32, 64)


def _number(value, scale: float = 1.0, digits: int = 2) -> str:
  return "-" if value is None else f"{value / scale:.{digits}f}"


def report(cost: StepCost, checks: list[ClusterCheck], ps_cores: float,
           worker_cores: float) -> list[str]:
  """The model's inputs, its check against local clusters, and the shards it gives."""
  lines = [
      f"Model: {cost.parameter_bytes / 1e6:.2f} MB of variables; per worker step "
      f"{cost.bytes_per_step / 1e6:.2f} MB moved, {cost.bytes_each_way / 1e6:.2f} MB each "
      "way (variables read, gradients sent; with the hidden layer's products on the ps, "
      "its activations and their gradients instead of its kernel).",
      f"Measured here (1 ps + 1 worker): ps CPU {cost.ps_cpu_ms:.1f} ms per worker step; "
      f"a worker with {worker_cores:g} cores of its own steps {cost.worker_steps_per_sec:.1f} "
      f"times/s, so its link carries {worker_link_gbit_per_sec(cost):.2f} Gbit/s each way.",
      "",
      "Check on the local clusters (1 ps): the model's per-step costs against what they "
      "measure.",
      "| workers | ps CPU ms/step: measured | model | ps bytes/step: measured (MB) "
      "| model (MB) |",
      "|---|---|---|---|---|"]
  for check in checks:
    lines.append(f"| {check.num_workers} | {_number(check.ps_cpu_ms, digits=1)} "
                 f"| {cost.ps_cpu_ms:.1f} | {_number(check.ps_bytes_per_step, 1e6)} "
                 f"| {cost.bytes_per_step / 1e6:.2f} |")
  lines += [
      "",
      f"One ps shard (a {ps_cores:g}-core parameter server) feeds, and a cluster of N "
      "such workers needs --num_ps_shards:",
      "| link | workers per shard: link | cores | shards for N = "
      + ", ".join(str(n) for n in CLUSTER_WORKERS) + " |",
      "|---|---|---|---|"]
  for link in LINKS_GBIT_PER_SEC:
    shards = [shards_needed(n, cost, link, ps_cores) for n in CLUSTER_WORKERS]
    lines.append(f"| {link} Gbit/s | {workers_per_shard_network(cost, link):.1f} "
                 f"| {workers_per_shard_cpu(cost, ps_cores):.1f} "
                 f"| {', '.join(str(s) for s in shards)} |")
  return lines
