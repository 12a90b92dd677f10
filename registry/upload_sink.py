"""Hashing and writing an upload's file bytes beside the event loop.

The loop parses the body and hands over batches of views into the received chunks
(:meth:`UploadSink.put`). Two lanes take every batch in order, one hashing it and one writing
it into its blob's temporary file, each in a thread of a small shared pool: hashing and writing
release the GIL, so on two cores the hash, the disk writes and the loop's own receiving and
parsing all go on at once. Handing a batch over costs the loop an append under a lock per lane,
and a wake-up of a pool thread only when that lane had run dry: no future and no callback back
into the loop. A lane's thread leaves when it finds nothing more to do, so an idle or slow
upload holds no thread. The loop waits only when a lane falls more than :data:`AHEAD_BYTES`
or :data:`AHEAD_BATCHES` behind, which bounds what one upload holds in memory (the second
limit for clients that trickle their bytes, whose batches are many small views).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from registry.blobs import BlobWriter

AHEAD_BYTES = 8 * 1024 * 1024
AHEAD_BATCHES = 16
# Enough threads that the lanes of a few uploads running at once each get one; a lane whose
# turn has not come holds its upload back at AHEAD_BYTES, as a slow disk would.
_POOL = ThreadPoolExecutor(
    max_workers=max(4, 4 * (os.cpu_count() or 1)), thread_name_prefix="dgml-upload"
)

_Batch = tuple[BlobWriter, list[memoryview], int]


class _Lane:
    """One kind of work (hashing or writing) done on every batch, in order, in a pool thread."""

    def __init__(self, sink: UploadSink, work: Callable[[BlobWriter, list[memoryview]], None]):
        self._sink = sink
        self._work = work
        self._pending: deque[_Batch] = deque()
        self.running = False  # a pool thread is taking batches (guarded by the sink's lock)
        self.done = 0  # bytes this lane has finished; only its thread writes it
        self.done_batches = 0  # the same in batches

    def put(self, batch: _Batch) -> None:
        with self._sink.lock:
            self._pending.append(batch)
            if self.running or self._sink.stopped:
                return
            self.running = True
        try:
            _POOL.submit(self._drain)
        except RuntimeError:  # the pool is shut down: the interpreter is on its way out
            with self._sink.lock:
                self.running = False
            raise

    def clear(self) -> None:
        self._pending.clear()

    def _drain(self) -> None:
        sink = self._sink
        while True:
            with sink.lock:
                if not self._pending or sink.stopped:
                    self.running = False
                    break
                writer, views, size = self._pending.popleft()
            try:
                self._work(writer, views)
            except Exception as exc:  # a disk error: the loop raises it at its next step
                sink.fail(exc)
            self.done += size
            self.done_batches += 1
            sink.wake_waiter()
        sink.lane_left()


class UploadSink:
    """The batches of one upload, each hashed and written, in the order they were put."""

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.lock = threading.Lock()
        self.stopped = False  # batches not taken yet are dropped (guarded by lock)
        self._lanes = (_Lane(self, BlobWriter.hash_batch), _Lane(self, BlobWriter.write_batch))
        self._cleanup: Callable[[], None] | None = None  # the last lane to leave runs it
        self._queued = 0  # bytes put; only the loop writes it
        self._queued_batches = 0
        self._waiter: asyncio.Future[None] | None = None  # the loop waits for bytes stored
        self._left: asyncio.Future[None] | None = None  # the loop waits for the lanes to leave
        self.error: Exception | None = None

    def _ahead(self, ahead_bytes: int, ahead_batches: int) -> bool:
        """More than that many bytes or batches are put and not stored yet."""
        done = min(lane.done for lane in self._lanes)
        done_batches = min(lane.done_batches for lane in self._lanes)
        return (
            self._queued - done > ahead_bytes or self._queued_batches - done_batches > ahead_batches
        )

    @property
    def behind(self) -> bool:
        """More than :data:`AHEAD_BYTES` or :data:`AHEAD_BATCHES` are not stored yet."""
        return self._ahead(AHEAD_BYTES, AHEAD_BATCHES)

    def put(self, writer: BlobWriter, views: list[memoryview], size: int) -> None:
        """Hand a batch over; raises what storing an earlier batch raised."""
        if self.error is not None:
            raise self.error
        self._queued += size
        self._queued_batches += 1
        for lane in self._lanes:
            lane.put((writer, views, size))

    async def wait(self, *, drained: bool = False) -> None:
        """Wait until the lanes are no longer behind, or with ``drained`` until they have
        stored every batch; raises what storing raised."""
        limits = (0, 0) if drained else (AHEAD_BYTES, AHEAD_BATCHES)
        while self.error is None and self._ahead(*limits):
            waiter = self._loop.create_future()
            self._waiter = waiter
            # Checked again once the waiter is visible: a batch finished in between would
            # otherwise have found no one to wake.
            if self.error is None and self._ahead(*limits):
                await waiter
            self._waiter = None
        if self.error is not None:
            raise self.error

    async def discard(self, cleanup: Callable[[], None]) -> None:
        """Drop the batches not taken yet, then run ``cleanup`` once no thread works on this
        upload any more: here, or in the last thread to leave (also should this wait be
        cancelled, so that a writer is never closed under a thread's feet)."""
        with self.lock:
            self.stopped = True
            for lane in self._lanes:
                lane.clear()
            if any(lane.running for lane in self._lanes):
                self._cleanup = cleanup
                left = self._left = self._loop.create_future()
            else:
                left = None
        if left is None:
            cleanup()
            return
        await asyncio.shield(left)

    # --- called from the lanes' threads --------------------------------------------------------

    def fail(self, exc: Exception) -> None:
        with self.lock:
            if self.error is None:
                self.error = exc
            self.stopped = True
            for lane in self._lanes:
                lane.clear()

    def lane_left(self) -> None:
        with self.lock:
            if any(lane.running for lane in self._lanes):
                return
            cleanup, self._cleanup = self._cleanup, None
        if cleanup is not None:
            try:
                cleanup()
            finally:
                self._wake(self._left)
        self.wake_waiter()

    def wake_waiter(self) -> None:
        self._wake(self._waiter)

    def _wake(self, waiter: asyncio.Future[None] | None) -> None:
        if waiter is None:
            return
        # A closed loop (the server has stopped) has no one waiting.
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(_set_done, waiter)


def _set_done(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)
