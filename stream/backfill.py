"""Backfill recorded files into the store, on one machine or across a Ray cluster.

``python -m stream backfill FILES... [--ray auto|local|ADDRESS] [--actors N]``

The files are cut into shards -- a whole file, or for a large uncompressed file in a line-per-item
format, byte ranges that start on line starts (``stream.replay.line_boundaries``). Each shard is an
ordinary ``ReplaySource`` with its own source key, run through the ordinary ``Pipeline`` (validation,
quarantine, topic matching, language identification), so it keeps its own offset in the store: a
shard that is retried after its actor or node died resumes after its last committed batch, and the
store holds every post exactly once. Shards run in a pool of actors (``threads`` scoring threads
each, one CPU each by default); the model travels to the actors through Ray's object store, the
recorded files must be readable at the same path on every node (a shared or copied directory), and
the store must be one they can all reach (PostgreSQL across machines; an SQLite file on one machine).

For a live source above one machine's rate, ``RayScorer`` stands in for the local ``Scorer``: each
micro-batch is split across the actor pool, and the pipeline's bounded queue holds the reader back
while the pool is busy (backpressure).
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from .replay import ReplaySource, is_compressed, line_boundaries

log = logging.getLogger(__name__)

__all__ = ["Shard", "plan", "run_shard", "backfill", "RayScorer", "ClusterLost", "connect_ray"]

#: a shard of about this many bytes (an uncompressed line-per-item file larger than this is split)
DEFAULT_SHARD_BYTES = 64 << 20
_MODEL_FILES_MAX = 512 << 20


@dataclasses.dataclass(frozen=True)
class Shard:
    path: str
    fmt: str
    byte_range: tuple[int, int] | None = None  # None: the whole file
    est_items: int = 0  # estimated items (progress bar)

    def source(self) -> ReplaySource:
        return ReplaySource(self.path, fmt=self.fmt, byte_range=self.byte_range)


def _avg_line_bytes(path: Path, sample: int = 1 << 20) -> float:
    with open(path, "rb") as f:
        head = f.read(sample)
    return max(1.0, len(head) / max(1, head.count(b"\n")))


def plan(files: Iterable[str | os.PathLike], shard_bytes: int = DEFAULT_SHARD_BYTES, fmt: str | None = None) -> list[Shard]:
    """Shards of ``files``: byte ranges of about ``shard_bytes`` for large uncompressed files with
    one item per line, whole files otherwise (compressed files, CSV with multi-line fields)."""
    shards = []
    for f in files:
        src = ReplaySource(f, fmt=fmt)  # detects the format; missing files raise FileNotFoundError
        path = src.path
        size = path.stat().st_size
        splittable = src.fmt in ReplaySource._LINE_PER_ITEM and not is_compressed(path)
        per_item = _avg_line_bytes(path) if splittable else 0.0
        if splittable and size > shard_bytes:
            b = line_boundaries(path, shard_bytes)
            shards += [Shard(str(path), src.fmt, (x, y), int((y - x) / per_item)) for x, y in zip(b, b[1:])]
        else:
            shards.append(Shard(str(path), src.fmt, None, int(size / per_item) if per_item else 0))
    return shards


def run_shard(shard: Shard, store: Any, scorer: Any, model_name: str, *, batch_size: int = 64, max_batch_size: int = 512) -> dict:
    """One shard through the pipeline (resuming after its committed offset); its stats."""
    from .pipeline import Pipeline

    t = time.perf_counter()
    st = Pipeline(shard.source(), scorer, store, model_name=model_name, batch_size=batch_size, max_batch_size=max_batch_size).run()
    d = st.as_dict()
    d["seconds"] = time.perf_counter() - t
    if d["error"]:
        raise RuntimeError(f"shard {shard.path} {shard.byte_range}: {d['error']}")
    return d


# ------------------------------------------------------------------------------------------ ray
def connect_ray(address: str, num_cpus: int | None = None) -> Any:
    """``ray.init``: ``auto`` joins the cluster started on this machine by ``ray start``, ``local``
    starts a private one on this machine, anything else is a cluster address (``ray://host:10001``
    or ``host:6379``)."""
    try:
        import ray
    except ImportError:
        raise RuntimeError("--ray needs Ray: pip install 'sparsepulse[cluster]'") from None
    if ray.is_initialized():
        return ray
    kw: dict[str, Any] = {"logging_level": logging.WARNING, "log_to_driver": False}
    if address == "local":
        ray.init(num_cpus=num_cpus, include_dashboard=False, object_store_memory=200 << 20, **kw)
    else:
        try:
            ray.init(address=address, **kw)
        except ConnectionError as e:
            raise RuntimeError(f"no Ray cluster at {address!r} ({e}); start one with `ray start --head`, or use --ray local") from None
    return ray


def _model_blob(model_dir: Path) -> dict[str, bytes]:
    files = {p.name: p.read_bytes() for p in sorted(model_dir.iterdir()) if p.is_file()}
    if sum(map(len, files.values())) > _MODEL_FILES_MAX:
        raise ValueError(f"{model_dir}: more than {_MODEL_FILES_MAX >> 20} MiB of files; not a runtime model directory?")
    return files


class _ShardWorker:
    """The actor: a Scorer (its model written from the object store to a local directory) and a
    store handle; runs shards, scores batches."""

    def __init__(self, model: dict[str, bytes], model_name: str, db: str | None, threads: int):
        from runtime import Scorer

        from .store import Store

        self.dir = Path(tempfile.mkdtemp(prefix="sparsepulse-model-"))
        for name, data in model.items():
            (self.dir / name).write_bytes(data)
        self.scorer = Scorer(self.dir, threads=threads)
        self.model_name = model_name
        self.store = Store(db) if db else None

    def node(self) -> str:
        import ray

        return ray.get_runtime_context().get_node_id()

    def run(self, shard: Shard, batch_size: int, max_batch_size: int) -> dict:
        d = run_shard(shard, self.store, self.scorer, self.model_name, batch_size=batch_size, max_batch_size=max_batch_size)
        d["pid"] = os.getpid()
        return d

    def score(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        return self.scorer.score(list(texts))


class _Pool:
    """Actors of one run. An actor gets work once its constructor has finished; an actor that dies
    (its node lost, or killed) is dropped, its shard re-queued, and a replacement requested (it
    starts when the cluster has room). The model blob stays referenced for the replacements."""

    def __init__(self, ray: Any, n: int, model_dir: Path, db: str | None, threads: int, cpus: float):
        self.ray, self.n = ray, n
        self.blob = ray.put(_model_blob(model_dir))
        self.cls = ray.remote(num_cpus=cpus, max_restarts=0, max_task_retries=0)(_ShardWorker)
        self.args = (self.blob, model_dir.name, db, threads)
        self.starting: dict[Any, Any] = {}  # ready ref -> actor
        self.ready: list = []
        for _ in range(n):
            self.spawn()

    def spawn(self) -> None:
        a = self.cls.options(scheduling_strategy="SPREAD").remote(*self.args)
        self.starting[a.node.remote()] = a

    def lost(self, actor: Any) -> None:
        if actor in self.ready:
            self.ready.remove(actor)
        with contextlib.suppress(Exception):
            self.ray.kill(actor)
        self.spawn()

    def started(self, ref: Any) -> None:
        a = self.starting.pop(ref)
        try:
            self.ray.get(ref)
        except _actor_errors(self.ray):
            self.spawn()
            return
        self.ready.append(a)

    def wait_ready(self, timeout: float, every: bool = False) -> bool:
        """Until one actor (``every``: every actor) is ready, or ``timeout`` passes; whether one is."""
        deadline = time.monotonic() + timeout
        while (self.starting if every else not self.ready) and time.monotonic() < deadline:
            done, _ = self.ray.wait(list(self.starting), num_returns=1, timeout=1.0)
            for r in done:
                self.started(r)
        return bool(self.ready)

    def close(self) -> None:
        for a in [*self.ready, *self.starting.values()]:
            with contextlib.suppress(Exception):
                self.ray.kill(a)


def _actor_errors(ray: Any) -> tuple[type[BaseException], ...]:
    ex = ray.exceptions
    return (ex.RayActorError, ex.WorkerCrashedError, ex.NodeDiedError, ex.ObjectLostError, ex.OwnerDiedError)


#: with no actor alive and none starting for this long, the backfill gives up (the cluster has no room)
ACTOR_START_TIMEOUT_S = 300.0


def backfill(shards: list[Shard], db: str, model_dir: Path, *, ray_address: str | None = None, actors: int = 0, threads: int = 1, cpus_per_actor: float = 1.0,
             batch_size: int = 64, max_batch_size: int = 512, progress: bool = True) -> dict:
    """Run ``shards`` into the store ``db``; without ``ray_address``, one after another in this
    process with one Scorer. Returns totals: ``items`` (read), ``stored`` (new posts) and
    ``skipped`` as the store counts them (exact, also when an actor was lost mid-shard); ``posts``,
    ``matched``, ``rejected``, ``unmatched`` as the finished shards reported them (a lost shard
    attempt's report is gone); ``seconds``, ``shards``, ``retried`` (shards re-queued after their
    actor died)."""
    from .store import Store

    t0 = time.perf_counter()
    totals: dict[str, Any] = {"items": 0, "posts": 0, "matched": 0, "stored": 0, "rejected": 0, "unmatched": 0, "skipped": {}, "shards": len(shards), "retried": 0}
    store = Store(db)
    if not store.topics():
        raise ValueError("no topics in the store: add some (python -m stream topics add ..., or --topic)")
    keys = [s.source().key for s in shards]
    # the totals that matter come from the store, not from the actors' reports (an actor lost
    # mid-shard takes its report with it; the store has what it committed)
    items0, posts0 = store.offsets_total(keys), store.count_posts()
    skips0 = [store.skip_counts(k) for k in keys]
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=sum(s.est_items for s in shards) or None, unit=" items", dynamic_ncols=True, mininterval=1.0, desc="backfill (~total)")
        bar.update(store.offsets_total(keys))

    def add(d: dict) -> None:
        for k in ("items", "posts", "matched", "stored", "rejected", "unmatched"):
            totals[k] += d[k]
        for r, n in d["skipped"].items():
            totals["skipped"][r] = totals["skipped"].get(r, 0) + n

    def tick() -> None:
        if bar is not None:
            bar.update(store.offsets_total(keys) - bar.n)
            bar.set_postfix(stored=store.count_posts(), refresh=False)

    if ray_address is None:
        from runtime import Scorer

        scorer = Scorer(model_dir, threads=threads)
        for s in shards:
            add(run_shard(s, store, scorer, model_dir.name, batch_size=batch_size, max_batch_size=max_batch_size))
            tick()
    else:
        ray = connect_ray(ray_address, num_cpus=actors or None)
        n = actors or max(1, int(ray.cluster_resources().get("CPU", 1) // cpus_per_actor))
        pool = _Pool(ray, n, model_dir, db, threads, cpus_per_actor)
        try:
            todo = list(range(len(shards)))
            running: dict[Any, tuple[int, Any]] = {}  # result ref -> (shard, actor)
            while todo or running:
                busy = {id(a) for _, a in running.values()}
                for a in pool.ready:
                    if todo and id(a) not in busy:
                        i = todo.pop(0)
                        running[a.run.remote(shards[i], batch_size, max_batch_size)] = (i, a)
                if not running and not pool.wait_ready(ACTOR_START_TIMEOUT_S):
                    raise RuntimeError(f"no scoring actor could start within {ACTOR_START_TIMEOUT_S:.0f} s (cluster resources: {ray.available_resources()})")
                done, _ = ray.wait([*running, *pool.starting], num_returns=1, timeout=1.0)
                for ref in done:
                    if ref in pool.starting:
                        pool.started(ref)
                        continue
                    i, a = running.pop(ref)
                    try:
                        add(ray.get(ref))
                    except _actor_errors(ray) as e:
                        # the actor or its node died mid-shard: the shard goes back in the queue and
                        # resumes after its committed offset on another actor
                        log.warning("shard %d lost with its actor (%s): re-queued", i, type(e).__name__)
                        totals["retried"] += 1
                        todo.insert(0, i)
                        pool.lost(a)
                tick()
        finally:
            pool.close()
    if bar is not None:
        tick()
        bar.close()
    totals["seconds"] = time.perf_counter() - t0
    totals["items"] = store.offsets_total(keys) - items0
    totals["stored"] = store.count_posts() - posts0
    skipped: dict[str, int] = {}
    for k, before in zip(keys, skips0):
        for r, n in store.skip_counts(k).items():
            if n - before.get(r, 0):
                skipped[r] = skipped.get(r, 0) + n - before.get(r, 0)
    totals["skipped"] = skipped
    return totals


class RayScorer:
    """A ``Scorer`` stand-in that splits every batch across a pool of Ray actors (a live source
    above one machine's rate). The caller waits for the whole batch, so the pipeline's bounded
    queue applies backpressure to the reader."""

    def __init__(self, model_dir: Path, address: str, actors: int = 0, threads: int = 1, cpus_per_actor: float = 1.0):
        self.ray = connect_ray(address, num_cpus=actors or None)
        n = actors or max(1, int(self.ray.cluster_resources().get("CPU", 1) // cpus_per_actor))
        self._pool = _Pool(self.ray, n, Path(model_dir), None, threads, cpus_per_actor)
        self._pool.wait_ready(ACTOR_START_TIMEOUT_S, every=True)  # all of them, for an even split
        if not self._pool.ready:
            raise RuntimeError("no scoring actor could start on the Ray cluster")
        self.kernel = f"ray x{n}"
        self._stats = {"batches": 0, "texts": 0, "seconds": 0.0}

    def stats(self) -> dict:
        return {**self._stats, "kernel": self.kernel}

    def score(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        texts = list(texts)
        if not texts:
            return np.zeros(0, np.int64), np.zeros((0, 3), np.float32)
        t = time.perf_counter()
        for _ in range(3):  # an actor lost mid-batch: the batch again on the others
            pool = list(self._pool.ready)
            if not pool and not self._pool.wait_ready(ACTOR_START_TIMEOUT_S):
                break
            pool = list(self._pool.ready)
            k = min(len(pool), len(texts))
            cuts = np.linspace(0, len(texts), k + 1).astype(int)
            refs = [(a, a.score.remote(texts[a0:b0])) for a, a0, b0 in zip(pool, cuts, cuts[1:])]
            parts, lost = [], []
            for a, r in refs:
                try:
                    parts.append(self.ray.get(r))
                except _actor_errors(self.ray):
                    lost.append(a)
            for a in lost:
                log.warning("scoring actor lost: batch re-sent to the others")
                self._pool.lost(a)
            if not lost:
                self._stats["batches"] += 1
                self._stats["texts"] += len(texts)
                self._stats["seconds"] += time.perf_counter() - t
                return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
        raise ClusterLost("no scoring actor left on the Ray cluster")


class ClusterLost(RuntimeError):
    """The scoring actors are gone: not the records' fault (the pipeline stops with its offset
    instead of quarantining posts)."""

    systemic = True
