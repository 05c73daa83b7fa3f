"""Store + pipeline: idempotent re-replay, crash-safe offsets (kill -9 with a real subprocess), aggregates."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from stream.pipeline import Pipeline
from stream.replay import ReplaySource
from stream.store import SCHEMA_VERSION, Store, StoreError
from stream.tracker import Topic, Tracker

REPO = Path(__file__).resolve().parents[1]


class KeywordScorer:
    """Deterministic test scorer: 'good' -> positive, 'bad' -> negative, else neutral."""

    def __init__(self):
        self.calls = 0

    def score(self, texts):
        self.calls += 1
        probs = np.full((len(texts), 3), 0.1, np.float32)
        for i, t in enumerate(texts):
            probs[i, 2 if "good" in t else 0 if "bad" in t else 1] = 0.8
        return probs.argmax(1), probs


def _v2_file(path, n, start=0, dirty_every=0):
    with open(path, "w", encoding="utf-8") as f:
        for i in range(start, start + n):
            if dirty_every and i % dirty_every == 0:
                f.write('{"id": broken\n')
                continue
            word = ["good", "bad", "meh"][i % 3]
            topic = "apple" if i % 2 else "banana"
            f.write(json.dumps({"id": str(1000 + i), "text": f"{topic} is {word} #{i}", "created_at": f"2022-01-01T00:{i // 60 % 60:02d}:{i % 60:02d}Z"}) + "\n")
    return path


def _store_with_topics(path):
    s = Store(path)
    s.save_topic(Topic.parse("apple", "apple"))
    s.save_topic(Topic.parse("banana", "banana"))
    return s


def test_a_stopped_run_is_told_apart_from_one_that_reached_the_end(tmp_path, db):
    """A run stopped before its source ended (SIGTERM, the dashboard's Stop) reports stopped; one that read its
    source to the end reports finished only (the dashboard said "finished" for a replay stopped half-way)."""
    f = _v2_file(tmp_path / "a.jsonl", 300)
    whole = Pipeline(ReplaySource(f), KeywordScorer(), _store_with_topics(db), model_name="kw", batch_size=16).run()
    assert whole.finished and not whole.stopped and whole.items == 300
    assert whole.as_dict()["stopped"] is False
    pipe = Pipeline(ReplaySource(f), KeywordScorer(), _store_with_topics(tmp_path / "b.db"), model_name="kw", batch_size=16, max_batch_size=16)
    pipe.on_batch = lambda st: pipe.stop.set() if st.batches >= 2 else None
    part = pipe.run()
    assert part.finished and part.stopped and 0 < part.items < 300 and part.as_dict()["stopped"] is True


def test_replay_is_idempotent_and_counts(tmp_path, db):
    f = _v2_file(tmp_path / "a.jsonl", 300, dirty_every=50)
    store = _store_with_topics(db)
    st = Pipeline(ReplaySource(f), KeywordScorer(), store, model_name="kw", batch_size=16).run()
    assert st.stored == 294 and st.skipped == {"malformed_json": 6} and st.items == 300
    assert store.count_posts() == 294
    assert store.skip_counts() == {"malformed_json": 6}
    # a second run resumes at the end: nothing new, nothing counted twice
    st2 = Pipeline(ReplaySource(f), KeywordScorer(), store, model_name="kw").run()
    assert st2.items == 0 and store.count_posts() == 294 and store.skip_counts() == {"malformed_json": 6}
    # the same posts from another file (re-delivery) are stored once
    g = _v2_file(tmp_path / "b.jsonl", 300, dirty_every=50)
    g.write_text(g.read_text() + "\n")  # different bytes -> different source key
    st3 = Pipeline(ReplaySource(g), KeywordScorer(), store, model_name="kw").run()
    assert st3.matched == 294 and st3.stored == 0 and store.count_posts() == 294


def test_aggregates_and_posts_queries(tmp_path, db):
    f = _v2_file(tmp_path / "a.jsonl", 120)
    store = _store_with_topics(db)
    Pipeline(ReplaySource(f), KeywordScorer(), store, model_name="kw").run()
    agg = store.aggregates(["apple", "banana"], bucket_ms=60_000)
    assert {a["topic"] for a in agg} == {"apple", "banana"}
    assert sum(a["volume"] for a in agg) == 120
    a0 = [a for a in agg if a["topic"] == "apple"][0]
    assert a0["negative"] + a0["neutral"] + a0["positive"] == a0["volume"] == 30
    assert a0["polarity"] == pytest.approx((a0["positive"] - a0["negative"]) * 0.7 / a0["volume"], abs=1e-6)
    top = store.posts(["apple"], order="positive", limit=3)
    assert all("good" in p["text"] for p in top) and len(top) == 3
    assert store.time_range(["apple"])[0] >= 1640995200000


def test_topic_edits_reach_a_running_pipeline(tmp_path, db):
    f = _v2_file(tmp_path / "a.jsonl", 200)
    store = _store_with_topics(db)
    store.delete_topic("banana")
    src = ReplaySource(f, speed=400)  # 200 s of posts in ~0.5 s
    pipe = Pipeline(src, KeywordScorer(), store, model_name="kw", topic_poll_s=0.05, max_wait_s=0.02, batch_size=4)
    import threading

    th = threading.Thread(target=pipe.run)
    th.start()
    time.sleep(0.2)
    store2 = Store(db)
    store2.save_topic(Topic.parse("banana", "banana"))
    th.join(timeout=30)
    assert not th.is_alive()
    agg = {a["topic"] for a in store.aggregates(["apple", "banana"], 3_600_000)}
    assert agg == {"apple", "banana"}
    n_banana = sum(a["volume"] for a in store.aggregates(["banana"], 3_600_000))
    assert 0 < n_banana < 100  # only posts after the edit


def test_schema_versioning(tmp_path):
    s = Store(tmp_path / "db.sqlite")
    assert s.schema_version() == SCHEMA_VERSION
    s.con.execute("UPDATE meta SET value='99' WHERE key='schema_version'")
    with pytest.raises(StoreError, match="newer"):
        Store(tmp_path / "db.sqlite")
    (tmp_path / "junk.sqlite").write_bytes(b"not a database at all" * 100)
    with pytest.raises(StoreError):
        Store(tmp_path / "junk.sqlite")


def test_retention(tmp_path, db):
    f = _v2_file(tmp_path / "a.jsonl", 120)
    store = _store_with_topics(db)
    Pipeline(ReplaySource(f), KeywordScorer(), store, model_name="kw").run()
    n = store.retain(keep_days=30 / 86400)  # keep the last 30 s
    assert n > 0 and store.count_posts() == 120 - n
    assert store.con.execute("SELECT COUNT(*) FROM scores").fetchone()[0] == store.count_posts()


def test_kill_9_and_restart_store_every_post_once(tmp_path, synthetic_model_dir, db):
    """kill -9 of the writer mid-replay (SQLite file, or a PostgreSQL writer mid-batch), then a restart."""
    n = 3000
    f = _v2_file(tmp_path / "big.jsonl", n, dirty_every=97)
    _store_with_topics(db).close()
    cmd = [sys.executable, "-m", "stream", "--db", str(db), "replay", str(f), "--model", str(synthetic_model_dir), "--quiet", "--batch-size", "8", "--max-batch-size", "8", "--threads", "1"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    kills = 0
    for _ in range(3):  # kill it mid-replay a few times
        p = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline = time.time() + 60
        while time.time() < deadline:
            time.sleep(0.02)  # a whole replay can take under half a second on a fast CPU: poll often enough to catch it mid-way
            try:
                c = Store(db, readonly=True).count_posts()
            except Exception:
                c = 0
            if c > 0 and c < n * 0.9 and p.poll() is None:
                os.kill(p.pid, signal.SIGKILL)
                kills += 1
                break
            if p.poll() is not None:
                break
        p.wait()
    out = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert kills >= 1
    store = Store(db)
    bad = len(range(0, n, 97))
    assert store.count_posts() == n - bad
    ids = [r[0] for r in store.con.execute("SELECT id FROM posts")]
    assert len(ids) == len(set(ids)) == n - bad
    assert store.con.execute("SELECT COUNT(*) FROM scores").fetchone()[0] == n - bad
    assert store.skip_counts() == {"malformed_json": bad}  # skips counted once despite the kills
    assert store.offset(ReplaySource(f).key) == n


def test_a_version_1_store_migrates_in_place(tmp_path):
    """A store written by an earlier release (schema 1) opens: posts, offsets and skips kept, the new
    columns and the rejects table added, the never-written offsets.cursor column dropped."""
    import sqlite3

    from stream.store import _MIGRATIONS

    db = tmp_path / "old.sqlite"
    with sqlite3.connect(db) as con:
        con.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        con.executescript(_MIGRATIONS[1])
        con.execute("INSERT INTO meta VALUES ('schema_version', '1')")
        con.execute("INSERT INTO posts VALUES ('x:1', 'x', 1600000000000, 'apple old', NULL, 'en', 1600000000000)")
        con.execute("INSERT INTO offsets VALUES ('file:a', 7, NULL, 1600000000000)")
        con.execute("INSERT INTO skips VALUES ('file:a', 'bad_time', 2)")
    s = Store(db)
    assert s.schema_version() == SCHEMA_VERSION
    assert s.count_posts() == 1 and s.offset("file:a") == 7 and s.skip_counts() == {"bad_time": 2}
    cols = {r[1] for r in s.con.execute("PRAGMA table_info(posts)")}
    assert {"claimed_ms", "quoted_text", "is_retweet"} <= cols
    assert "cursor" not in {r[1] for r in s.con.execute("PRAGMA table_info(offsets)")}
    assert s.rejects() == []
