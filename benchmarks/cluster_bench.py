"""Scale-out benchmark: backfill throughput in one process and on Ray (1 and 2 actors), store write
throughput of SQLite and PostgreSQL, and a projection to N machines.

``python -m benchmarks.cluster_bench --model models/X [--copies 4] [--rounds 3] [--update]``

Input: the 12,284 tweets of the SemEval-2017 test set, ``--copies`` times (distinct ids), as a v2
JSONL recording whose every post carries ``lang: en`` and the tag ``#pulse`` (one topic matches
every post, so every post is scored and stored: the figure is scoring + storing, not matching).
Each configuration backfills it into a fresh SQLite store, in interleaved rounds:

- one process, ``--threads 1`` and ``--threads 2`` (the Scorer's own threads, no Ray);
- Ray (a local cluster on this machine started once, ``num_cpus = cores``): 1 actor and 2 actors,
  ``threads = 1`` each (actor start-up, ~1-2 s, included: it is part of every real run).

Store writes: ``Store.write_batch`` of pre-scored batches of 512 (posts, scores, matches, rollups,
offset) into a fresh SQLite file and into a fresh PostgreSQL database on a local server
(``stream.pglocal``, default settings, fsync on), one writer, then two concurrent writers (PostgreSQL).
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from stream.backfill import backfill, connect_ray, plan
from stream.formats import semeval_test_file
from stream.post import Post
from stream.replay import ReplaySource
from stream.store import Store
from stream.tracker import Topic

from .report import append_benchmarks

TOPIC = Topic.parse("Pulse", "#pulse")


def _recording(data: str, copies: int, out: Path) -> int:
    posts = [p for _, p in ReplaySource(semeval_test_file(data)).items() if isinstance(p, Post)]
    t0 = dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)
    n = 0
    with open(out, "w", encoding="utf-8") as f:
        for c in range(copies):
            for p in posts:
                f.write(json.dumps({"id": str(n + 1), "text": p.text + " #pulse", "lang": "en", "created_at": (t0 + dt.timedelta(seconds=n)).strftime("%Y-%m-%dT%H:%M:%SZ")}) + "\n")
                n += 1
    return n


def _backfill_rate(rec: Path, model: Path, tmp: Path, tag: str, ray_address: str | None, actors: int, threads: int, n: int) -> float:
    db = str(tmp / f"{tag}.sqlite")
    Store(db).save_topic(TOPIC)
    shards = plan([rec], shard_bytes=max(1 << 16, rec.stat().st_size // 32))
    t = time.perf_counter()
    d = backfill(shards, db, model, ray_address=ray_address, actors=actors, threads=threads, progress=False)
    secs = time.perf_counter() - t
    assert d["stored"] == n and d["items"] == n, d
    for suffix in ("", "-wal", "-shm"):
        Path(db + suffix).unlink(missing_ok=True)
    return n / secs


def _write_rate(location: str, n: int, batch: int = 512, writers: int = 1) -> float:
    store = Store(location)
    store.save_topic(TOPIC)
    rng = np.random.default_rng(0)
    t0 = dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)
    per = n // writers

    def work(w: int) -> None:
        st = Store(location)
        for s in range(0, per, batch):
            posts = [Post(f"x:{w}-{i}", t0 + dt.timedelta(seconds=i), f"a post about #pulse number {i}", f"u{i % 1000}", "en") for i in range(s, min(per, s + batch))]
            p = rng.dirichlet([1, 1, 1], len(posts)).astype(np.float32)
            st.write_batch(posts, p.argmax(1), p, [["Pulse"]] * len(posts), "bench", source_key=f"bench-{w}", offset=s + len(posts))

    t = time.perf_counter()
    ths = [threading.Thread(target=work, args=(w,)) for w in range(writers)]
    [x.start() for x in ths]
    [x.join() for x in ths]
    secs = time.perf_counter() - t
    assert Store(location).count_posts() == per * writers
    return per * writers / secs


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.cluster_bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", default=os.environ.get("SPARSEPULSE_DATA", str(Path(__file__).resolve().parents[2] / "shared" / "data")))
    ap.add_argument("--copies", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--write-posts", type=int, default=100_000)
    ap.add_argument("--update", action="store_true")
    args = ap.parse_args(argv)
    model = Path(args.model)
    tmp = Path(tempfile.mkdtemp(prefix="cluster-bench-"))
    rec = tmp / "rec.jsonl"
    n = _recording(args.data, args.copies, rec)
    print(f"{n:,} posts, {rec.stat().st_size / 1e6:.1f} MB", file=sys.stderr)
    ray = connect_ray("local", num_cpus=os.cpu_count())
    configs = [("one process, 1 thread", None, 0, 1), ("one process, 2 threads", None, 0, 2), ("Ray, 1 actor (1 thread)", "local", 1, 1), ("Ray, 2 actors (1 thread each)", "local", 2, 1)]
    rates: dict[str, list[float]] = {c[0]: [] for c in configs}
    for r in range(args.rounds):
        for i, (name, addr, actors, threads) in enumerate(configs):
            rates[name].append(_backfill_rate(rec, model, tmp, f"r{r}-{i}", addr, actors, threads, n))
            print(f"round {r + 1}: {name}: {rates[name][-1]:,.0f} posts/s", file=sys.stderr)
    ray.shutdown()

    from stream.pglocal import LocalPostgres

    writes: dict[str, list[float]] = {"SQLite, 1 writer": [], "PostgreSQL, 1 writer": [], "PostgreSQL, 2 writers": []}
    with LocalPostgres() as pg:  # its own directory in /tmp (the server user must reach it)
        import psycopg

        for r in range(2):
            writes["SQLite, 1 writer"].append(_write_rate(str(tmp / f"w{r}.sqlite"), args.write_posts))
            for name, k in (("PostgreSQL, 1 writer", 1), ("PostgreSQL, 2 writers", 2)):
                dbname = f"w{r}_{k}"
                with psycopg.connect(pg.url, autocommit=True) as c:
                    c.execute(f'CREATE DATABASE "{dbname}"')
                writes[name].append(_write_rate(pg.url.replace(f"/{pg.db}?", f"/{dbname}?"), args.write_posts, writers=k))
            print(f"round {r + 1}: " + ", ".join(f"{k} {v[-1]:,.0f}" for k, v in writes.items()), file=sys.stderr)

    med = {k: statistics.median(v) for k, v in rates.items()}
    one = med["Ray, 1 actor (1 thread)"]
    lines = [f"{n:,} posts (the SemEval-2017 test tweets x {args.copies}, each tagged for one topic so every post is scored and stored), model {model.name}, {args.rounds} interleaved rounds, median; fresh SQLite store per run, shards of 1/32 of the file.", "",
             "| configuration | posts/s (median) | rounds | vs Ray 1 actor |", "| --- | --- | --- | --- |"]
    for name, v in rates.items():
        lines.append(f"| {name} | {med[name]:,.0f} | {' / '.join(f'{x:,.0f}' for x in v)} | {med[name] / one:.2f}x |")
    wmed = {k: statistics.median(v) for k, v in writes.items()}
    lines += ["", f"Store write throughput (`Store.write_batch`, batches of 512 pre-scored posts, {args.write_posts:,} posts into a fresh store, 2 rounds, median):", "",
              "| store | posts/s | rounds |", "| --- | --- | --- |"]
    for k, v in writes.items():
        lines.append(f"| {k} | {wmed[k]:,.0f} | {' / '.join(f'{x:,.0f}' for x in v)} |")
    node = med["Ray, 2 actors (1 thread each)"]
    ceiling = max(wmed["PostgreSQL, 1 writer"], wmed["PostgreSQL, 2 writers"])
    lines += ["", f"Projection (a node = this 2-core machine at the measured Ray 2-actor rate, {node:,.0f} posts/s; the shared store = this PostgreSQL at its measured write ceiling, {ceiling:,.0f} posts/s; network and a remote server not measured):", "",
              "| machines | scoring capacity posts/s | store-bound? | projected posts/s | 100M-tweet backfill |", "| --- | --- | --- | --- | --- |"]
    for m in (1, 2, 4, 8, 16, 32, 64):
        cap = m * node
        got = min(cap, ceiling)
        lines.append(f"| {m} | {cap:,.0f} | {'yes' if cap > ceiling else 'no'} | {got:,.0f} | {1e8 / got / 3600:.1f} h |")
    body = "\n".join(lines)
    print(body)
    if args.update:
        append_benchmarks("Scale-out: Ray and PostgreSQL", f"python -m benchmarks.cluster_bench --model {args.model} --copies {args.copies} --rounds {args.rounds} --update", body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
