"""Source -> bounded queue -> micro-batches -> Tracker -> Scorer -> Store (one transaction per batch)."""
from __future__ import annotations

import collections
import dataclasses
import logging
import queue
import threading
import time
from typing import Any, Callable, Iterator, Protocol, Sequence

from .language import LanguageDetector
from .post import Post, Skip
from .store import Store
from .tracker import Tracker

__all__ = ["Pipeline", "PipelineStats", "ScorerLike", "SourceLike"]

log = logging.getLogger("sparsepulse.stream")
_END = object()


class ScorerLike(Protocol):
    def score(self, texts: Sequence[str]) -> tuple[Any, Any]: ...


class SourceLike(Protocol):
    key: str
    name: str

    def items(self, start_after: int = 0, stop: threading.Event | None = None) -> Iterator[tuple[int, Post | Skip]]: ...


@dataclasses.dataclass
class PipelineStats:
    items: int = 0
    posts: int = 0  # well-formed posts seen
    matched: int = 0
    stored: int = 0  # new rows (re-delivered posts are not counted twice)
    rejected: int = 0  # posts that could not be scored or stored: quarantined in the rejects table
    unmatched: int = 0
    batches: int = 0
    skipped: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    batch_latency_s: collections.deque = dataclasses.field(default_factory=lambda: collections.deque(maxlen=200))
    started: float = dataclasses.field(default_factory=time.monotonic)
    queue_depth: int = 0
    finished: bool = False  # the run has ended (the source's end, a stop, or an error)
    stopped: bool = False  # ... because a stop was asked for before the source ended (SIGTERM, the dashboard's Stop)
    error: str | None = None
    last_batch_wall: float | None = None  # time.time() when the last batch was stored

    def as_dict(self) -> dict:
        el = max(time.monotonic() - self.started, 1e-9)
        lat = sorted(self.batch_latency_s)
        return {
            "items": self.items,
            "posts": self.posts,
            "matched": self.matched,
            "stored": self.stored,
            "rejected": self.rejected,
            "unmatched": self.unmatched,
            "batches": self.batches,
            "skipped": dict(self.skipped),
            "posts_per_s": self.posts / el,
            "p50_batch_latency_ms": 1e3 * lat[len(lat) // 2] if lat else None,
            "queue_depth": self.queue_depth,
            "finished": self.finished,
            "stopped": self.stopped,
            "error": self.error,
            "last_batch_wall": self.last_batch_wall,
        }


class Pipeline:
    """Runs one source into the store. ``run()`` blocks until the source ends or ``stop`` is set.

    Crash safety: the offset of the last item of a batch is written in the batch's transaction;
    items between batches that stored nothing (unmatched, skipped) advance the offset in their own
    small transaction at the end of each batch window. A restart resumes after the stored offset.
    Topics are read from the store (and re-read when they change) unless a fixed ``tracker`` is given.
    """

    def __init__(
        self,
        source: SourceLike,
        scorer: ScorerLike,
        store: Store,
        *,
        model_name: str,
        tracker: Tracker | None = None,
        batch_size: int = 64,
        max_batch_size: int = 512,
        max_wait_s: float = 0.2,
        queue_size: int = 1024,
        topic_poll_s: float = 1.0,
        on_batch: Callable[[PipelineStats], None] | None = None,
        detect_language: bool = True,
    ):
        if batch_size <= 0 or queue_size <= 0 or max_wait_s <= 0 or max_batch_size < batch_size:
            raise ValueError("batch_size, queue_size and max_wait_s must be positive, max_batch_size >= batch_size")
        self.source, self.scorer, self.store = source, scorer, store
        self.model_name = model_name
        self._fixed_tracker = tracker is not None
        self.tracker = tracker or Tracker(store.topics())
        self._topics_version = None if self._fixed_tracker else store.topics_version()
        self.batch_size, self.max_batch_size, self.max_wait_s, self.topic_poll_s = batch_size, max_batch_size, max_wait_s, topic_poll_s
        self.queue: queue.Queue = queue.Queue(maxsize=queue_size)
        self.stats = PipelineStats()
        self.on_batch = on_batch
        self.stop = threading.Event()
        self.languages = LanguageDetector() if detect_language else None

    def _produce(self, start_after: int) -> None:
        """The reader thread: parses, matches topics and identifies languages, so that this Python
        work overlaps with the scorer's C code (which releases the GIL) on the consumer thread,
        instead of running between batches while the cores wait."""
        last_poll = [time.monotonic()]
        try:
            for offset, obj in self.source.items(start_after=start_after, stop=self.stop):
                names = None
                if not isinstance(obj, Skip):
                    self._refresh_topics(last_poll)
                    # a quote post matches on the quoted post's words too (as X's filtered stream does)
                    names = self.tracker.match(obj.text if obj.quoted_text is None else obj.text + "\n" + obj.quoted_text)
                    if names and obj.lang is None and self.languages is not None:  # the source gave none: identify it
                        lang = self.languages.detect(obj.text)
                        if lang is not None:
                            obj = obj.with_lang(lang)
                if not self._put((offset, obj, names)):
                    break
        except Exception as e:  # a source failure ends the run with a message, never silently
            log.exception("source %s failed", self.source.name)
            self.stats.error = f"source failed: {type(e).__name__}: {e}"
        finally:
            self._put(_END)

    def _put(self, item) -> bool:
        """Put with backpressure; False once the run is stopping (the consumer may be gone)."""
        while True:
            try:
                self.queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                if self.stop.is_set():
                    return False

    def _refresh_topics(self, last: list[float]) -> None:
        if self._fixed_tracker or time.monotonic() - last[0] < self.topic_poll_s:
            return
        last[0] = time.monotonic()
        v = self.store.topics_version()
        if v != self._topics_version:
            self.tracker.set_topics(self.store.topics())
            self._topics_version = v
            log.info("topics changed: %s", [t.name for t in self.tracker.topics])

    # ------------------------------------------------------------------ scoring and storing
    def _systemic(self, exc: BaseException) -> bool:
        """Errors that say nothing about the records (database down, out of memory): stop the run
        with the offset where it was, so nothing is lost; everything else is the records' fault."""
        if isinstance(exc, MemoryError) or self.store.is_transient(exc) or getattr(exc, "systemic", False):
            return True
        return getattr(exc, "status", None) == 2  # runtime.NativeError SP_ERR_NOMEM

    def _write(self, posts: list[Post], topics: list[list[str]], **commit) -> int:
        labels, probs = self.scorer.score([p.text for p in posts])
        return self.store.write_batch(posts, labels, probs, topics, self.model_name, source_key=self.source.key, **commit)

    def _isolate(self, posts: list[Post], offsets: list[int], topics: list[list[str]], err: Exception) -> tuple[int, list]:
        """Bisect a failing batch: store the halves that work, recurse into the ones that do not;
        a single failing post is rejected with the error as its reason. O(k log n) extra calls for
        k poison posts in a batch of n."""
        if len(posts) == 1:
            return 0, [(offsets[0], posts[0], f"{type(err).__name__}: {err}")]
        mid = len(posts) // 2
        stored, rejects = 0, []
        for sl in (slice(0, mid), slice(mid, None)):
            try:
                stored += self._write(posts[sl], topics[sl])
            except Exception as e:
                if self._systemic(e):
                    raise
                n, r = self._isolate(posts[sl], offsets[sl], topics[sl], e)
                stored, rejects = stored + n, rejects + r
        return stored, rejects

    def _flush(self, posts: list[Post], offsets: list[int], topics: list[list[str]], last_offset: int, skips: dict) -> None:
        st = self.stats
        try:
            st.stored += self._write(posts, topics, offset=last_offset, skips=skips)
            st.matched += len(posts)
            return
        except Exception as e:
            if self._systemic(e):
                raise
            log.warning("batch of %d failed (%s: %s): isolating the failing posts", len(posts), type(e).__name__, e)
            stored, rejects = self._isolate(posts, offsets, topics, e)
        self.store.commit_offset(self.source.key, last_offset, skips=skips, rejects=rejects)
        st.stored += stored
        st.matched += len(posts) - len(rejects)
        st.rejected += len(rejects)

    def run(self) -> PipelineStats:
        """Run until the source ends or ``stop`` is set. Never raises for a bad record: a record that
        cannot be scored or stored is quarantined; an error that is not a record's (database, memory,
        the source itself) ends the run with ``stats.error`` set and the offset where it stood."""
        st = self.stats
        producer = None
        try:
            start_after = self.store.offset(self.source.key)
            if self.languages is not None:  # load the language model (once per process) before the clock starts
                self.languages.warm_up()
            producer = threading.Thread(target=self._produce, args=(start_after,), name="source", daemon=True)
            producer.start()
            self._consume(start_after)
        except Exception as e:
            log.exception("pipeline stopped on an error")
            st.error = st.error or f"{type(e).__name__}: {e}"
        finally:
            st.stopped = self.stop.is_set() and not st.error  # asked to stop, not at the source's end
            self.stop.set()
            while True:  # unblock a producer waiting on a full queue
                try:
                    self.queue.get_nowait()
                except queue.Empty:
                    break
            if producer is not None:
                producer.join(timeout=5)
            st.finished = True
        return st

    def _consume(self, start_after: int) -> None:
        st = self.stats
        done = False
        last_offset = start_after
        while not done:
            posts: list[Post] = []
            offsets: list[int] = []
            topics: list[list[str]] = []
            skips: collections.Counter = collections.Counter()
            deadline = None
            # under load the queue backs up: take bigger batches (fewer transactions and calls per
            # post); a trickle keeps the small batch and its latency
            target = min(self.max_batch_size, max(self.batch_size, self.queue.qsize()))
            while len(posts) < target:
                timeout = 0.1 if deadline is None else max(0.0, deadline - time.monotonic())
                try:
                    item = self.queue.get(timeout=timeout)
                except queue.Empty:
                    if deadline is not None or self.stop.is_set():
                        break
                    if self.on_batch is not None:  # idle: status keeps flowing (the callback throttles itself)
                        st.queue_depth = 0
                        self.on_batch(st)
                    continue
                if item is _END:
                    done = True
                    break
                offset, obj, names = item
                last_offset = offset
                st.items += 1
                if deadline is None:
                    deadline = time.monotonic() + self.max_wait_s
                if isinstance(obj, Skip):
                    skips[obj.reason] += 1
                    continue
                st.posts += 1
                if names:  # matched (and its language identified) by the reader thread
                    posts.append(obj)
                    offsets.append(offset)
                    topics.append(names)
                else:
                    st.unmatched += 1
            st.queue_depth = self.queue.qsize()
            t0 = time.perf_counter()
            if posts:
                self._flush(posts, offsets, topics, last_offset, dict(skips))
                st.batches += 1
                st.last_batch_wall = time.time()
                st.batch_latency_s.append(time.perf_counter() - t0)
            elif last_offset != start_after:
                self.store.commit_offset(self.source.key, last_offset, skips=dict(skips))
            start_after = last_offset
            st.skipped.update(skips)
            if self.on_batch is not None:
                self.on_batch(st)
            if self.stop.is_set():
                break
