"""Group commit inside one process: concurrent callers' writes share one transaction, and each
caller still returns only once its own data is committed (issue 14's ingest target, ADR 0022)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, Generic, TypeVar

T = TypeVar("T")
GROUP_COMMIT_MAX = 64  # attestations per group-commit transaction


class Pending(Generic[T]):
    """One caller's item in a :class:`GroupCommit`: resolved (a value) or failed (an exception) by
    the batch that carried it."""

    def __init__(self) -> None:
        self._wake = threading.Event()
        self._lead = False
        self._done = False
        self._value: T | None = None
        self._error: BaseException | None = None

    def resolve(self, value: T) -> None:
        self._value, self._done = value, True

    def fail(self, error: BaseException) -> None:
        self._error, self._done = error, True

    @property
    def done(self) -> bool:
        return self._done

    def get(self) -> T:
        if self._error is not None:
            raise self._error
        if not self._done or self._value is None:
            raise RuntimeError("group commit: an item left its batch unresolved")
        return self._value


P = TypeVar("P", bound=Pending[Any])


class GroupCommit(Generic[P]):
    """Group commit inside one process: concurrent callers' writes share one transaction.

    A caller submits its item and blocks. If no batch is being written, it becomes the leader and
    writes everything queued (its own item first, at most ``max_batch``) with ``run``, in its own
    thread; callers arriving meanwhile queue up, and when the batch is done the leader wakes the
    first of them to write the next batch. ``run`` must resolve or fail every item of its batch,
    and resolve one only after the transaction holding it committed: so a caller returns only
    once its own data is durable, and a member that fails (``run`` retries members alone) fails
    only itself. With one caller at a time every batch is that caller alone: no wait, no thread.
    """

    def __init__(self, run: Callable[[list[P]], None], max_batch: int = GROUP_COMMIT_MAX) -> None:
        self._run = run
        self.max_batch = max_batch
        self._lock = threading.Lock()
        self._queue: list[P] = []
        self._busy = False
        self.batches = 0  # how many batches were written (tests and the benchmark read them)
        self.items = 0

    def submit(self, item: P) -> None:
        """Queue ``item`` and return once its batch is written (then ``item.get()`` is its outcome)."""
        with self._lock:
            self._queue.append(item)
            lead = not self._busy
            self._busy = True
        if not lead:
            item._wake.wait()
        if lead or item._lead:
            self._lead_until_done(item)

    def _lead_until_done(self, own: P) -> None:
        try:
            while not own.done:
                with self._lock:
                    batch = self._queue[:self.max_batch]
                    del self._queue[:self.max_batch]
                if not batch:  # cannot happen (a leader's own item heads the queue); never spin
                    own.fail(RuntimeError("group commit: the leader's item was not queued"))
                    break
                try:
                    self._run(batch)
                except BaseException as exc:  # a bug or an interrupt: its batch fails, nobody waits for ever
                    for item in batch:
                        if not item.done:
                            item.fail(exc)
                finally:
                    self.batches += 1
                    self.items += len(batch)
                    for item in batch:
                        if not item.done:
                            item.fail(RuntimeError("group commit: an item left its batch unresolved"))
                        if item is not own:
                            item._wake.set()
        finally:
            with self._lock:
                if self._queue:
                    nxt = self._queue[0]
                    nxt._lead = True
                    nxt._wake.set()
                else:
                    self._busy = False
