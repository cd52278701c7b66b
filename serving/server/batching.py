"""Server-side batching: concurrent requests of one signature merged into one session call."""

import collections
import threading
import time

import grpc
import numpy as np

from serving.server import config
from serving.server import errors
from serving.server.errors import ServingError


class _Task:
  __slots__ = ("feeds", "rows", "done", "outputs", "error")

  def __init__(self, feeds, rows):
    self.feeds, self.rows = feeds, rows
    self.done = threading.Event()
    self.outputs = self.error = None


class BatchScheduler:
  """Merges concurrent requests of one signature into one session call (--enable_batching).

  A batch thread takes the oldest queued request and every queued one that still
  fits into max_batch_size rows; with batch_timeout_micros > 0 it waits that long
  for more before running. Inputs are concatenated on dimension 0 and the
  outputs split back by each request's rows, so keys stay with their images.
  """

  def __init__(self, run_fn, options: config.BatchingOptions, name: str):
    self._run_fn = run_fn  # list of feed arrays -> list of output arrays
    self._options = options
    self._queue = collections.deque()
    self._queued_rows = 0
    self._cond = threading.Condition()
    self._closed = False
    self.num_batches = 0  # Batches run and requests in them, for tests and logs.
    self.num_requests = 0
    self._threads = [threading.Thread(target=self._loop, name=f"batch-{name}-{i}", daemon=True)
                     for i in range(options.num_batch_threads)]
    for t in self._threads:
      t.start()

  def run(self, feeds: list, rows: int) -> list:
    options = self._options
    if rows == 0 or rows > options.max_batch_size:
      # A request bigger than a batch runs on its own rather than being refused.
      return self._run_fn(feeds)
    task = _Task(feeds, rows)
    with self._cond:
      if self._closed:
        raise ServingError(grpc.StatusCode.UNAVAILABLE, "the servable is unloading")
      if self._queued_rows + rows > options.max_enqueued_batches * options.max_batch_size:
        raise ServingError(grpc.StatusCode.UNAVAILABLE,
                           f"the batch queue is full ({self._queued_rows} rows queued, "
                           f"max_enqueued_batches={options.max_enqueued_batches})")
      self._queue.append(task)
      self._queued_rows += rows
      self._cond.notify()
    task.done.wait()
    if task.error is not None:
      raise task.error
    return task.outputs

  def close(self) -> None:
    with self._cond:
      self._closed = True
      self._cond.notify_all()
    for t in self._threads:
      t.join()

  def _take_batch(self) -> list:
    timeout_s = self._options.batch_timeout_micros / 1e6
    with self._cond:
      while not self._queue and not self._closed:
        self._cond.wait()
      if not self._queue:
        return []
      batch = [self._queue.popleft()]
      rows = batch[0].rows
      deadline = time.monotonic() + timeout_s
      while rows < self._options.max_batch_size:
        if self._queue:
          if rows + self._queue[0].rows > self._options.max_batch_size:
            break
          batch.append(self._queue.popleft())
          rows += batch[-1].rows
          continue
        remaining = deadline - time.monotonic()
        if remaining <= 0 or self._closed:
          break
        self._cond.wait(remaining)
      self._queued_rows -= rows
      self.num_batches += 1
      self.num_requests += len(batch)
      return batch

  def _loop(self) -> None:
    while True:
      batch = self._take_batch()
      if not batch:
        return
      try:
        self._run_batch(batch)
      except Exception as e:  # pylint: disable=broad-except
        error = errors.status_from_exception(e)
        for task in batch:
          task.error = error
      finally:
        for task in batch:
          task.done.set()

  def _run_batch(self, batch: list) -> None:
    if len(batch) == 1:
      feeds = batch[0].feeds
    else:
      feeds = [np.concatenate(arrays) for arrays in zip(*(t.feeds for t in batch))]
    rows = sum(t.rows for t in batch)
    padded_rows = next((s for s in self._options.allowed_batch_sizes if s >= rows), rows)
    if padded_rows > rows:
      feeds = [np.concatenate([f, np.repeat(f[:1], padded_rows - rows, axis=0)]) for f in feeds]
    outputs = self._run_fn(feeds)
    for out in outputs:
      if out.ndim == 0 or out.shape[0] != padded_rows:
        raise ServingError(grpc.StatusCode.INTERNAL,
                           f"a batched output has shape {list(out.shape)}; expected "
                           f"dimension 0 to be the batch size {padded_rows}")
    if len(batch) == 1:
      batch[0].outputs = [out[:rows] for out in outputs]
      return
    splits = np.cumsum([t.rows for t in batch])
    parts = [np.split(out[:rows], splits[:-1]) for out in outputs]
    for i, task in enumerate(batch):
      task.outputs = [p[i] for p in parts]
