"""The data behind the dashboard: rollups (exactly once, retweets and languages apart), gaps,
uncertainty, headline windows, closed-bucket alerts, the replay's idle cap and clock, and switching
the model of a running worker without re-timing the replay."""
import datetime as dt
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from stream.alerts import bucket_grid, detect_shifts, fill_gaps, headline
from stream.post import Post
from stream.replay import Pacer
from stream.store import Store
from stream.tracker import Topic

REPO = Path(__file__).resolve().parents[1]
UTC = dt.timezone.utc
T0 = dt.datetime(2016, 11, 20, tzinfo=UTC)
H = 3_600_000


def _probs(label):
    p = np.full(3, 0.1, np.float32)
    p[label] = 0.8
    return p


def _write(store, posts, labels, topic="apple"):
    store.write_batch(posts, labels, [_probs(l) for l in labels], [[topic]] * len(posts), "m")


def test_rollups_count_each_post_once_and_keep_retweets_and_languages_apart(tmp_path):
    store = Store(tmp_path / "db.sqlite")
    posts = [
        Post("x:1", T0, "apple good", lang="en"),
        Post("x:2", T0 + dt.timedelta(minutes=5), "apple bad"),  # unknown language: an opinion
        Post("x:3", T0 + dt.timedelta(minutes=7), "RT @a: apple good", is_retweet=True),
        Post("x:4", T0 + dt.timedelta(minutes=8), "manzana buena", lang="es"),
        Post("x:5", T0 + dt.timedelta(minutes=9), "apple und", lang="und"),  # X's undetermined: unknown
    ]
    _write(store, posts, [2, 0, 2, 2, 1])
    _write(store, posts, [2, 0, 2, 2, 1])  # re-delivered: nothing changes
    [r] = store.aggregates(["apple"], H)
    assert (r["volume"], r["retweets"], r["foreign"], r["n"]) == (5, 1, 1, 3)
    assert (r["negative"], r["neutral"], r["positive"]) == (1, 1, 1)
    assert r["polarity"] == pytest.approx(((0.8 - 0.1) + (0.1 - 0.8) + 0.0) / 3)
    [all_in] = store.aggregates(["apple"], H, retweets=True, foreign=True)
    assert all_in["n"] == 5 and all_in["positive"] == 3
    assert store.totals(["apple"]) == {"volume": 5, "retweets": 1, "foreign": 1, "n": 3}
    # the rollups agree with a recount from the raw tables after a rebuild (retention does one)
    before = store.aggregates(["apple"], 900_000, retweets=True)
    store.rebuild_rollups()
    assert store.aggregates(["apple"], 900_000, retweets=True) == before


def test_gaps_bands_and_headline():
    grid = bucket_grid(0, 6 * H, H)
    rows = [
        {"topic": "a", "bucket_ms": 0, "volume": 10, "retweets": 0, "foreign": 0, "n": 10, "negative": 0, "neutral": 0, "positive": 10, "polarity": 0.5, "polarity_se": 0.05},
        {"topic": "a", "bucket_ms": 4 * H, "volume": 2, "retweets": 0, "foreign": 0, "n": 2, "negative": 2, "neutral": 0, "positive": 0, "polarity": -0.5, "polarity_se": 0.5},
        {"topic": "b", "bucket_ms": 5 * H, "volume": 6, "retweets": 0, "foreign": 0, "n": 6, "negative": 0, "neutral": 6, "positive": 0, "polarity": 0.0, "polarity_se": 0.1},
    ]
    s = fill_gaps(rows, ["a", "b"], grid)
    assert [r["polarity"] for r in s["a"]] == [0.5, None, None, None, -0.5, None]  # empty buckets are gaps
    assert [r["bucket_ms"] for r in s["b"]] == grid  # the same axis for every topic
    h = {x["topic"]: x for x in headline(s, 3)}
    assert h["a"]["net"] == -0.5 and h["a"]["previous"] == 0.5 and h["a"]["change"] == -1.0
    assert h["a"]["share_of_voice"] == pytest.approx(2 / 8) and h["b"]["share_of_voice"] == pytest.approx(6 / 8)


def test_small_buckets_get_wide_bands(tmp_path):
    store = Store(tmp_path / "db.sqlite")
    _write(store, [Post("x:1", T0, "a"), Post("x:2", T0 + dt.timedelta(minutes=1), "b")], [2, 2])
    _write(store, [Post(f"x:{i}", T0 + dt.timedelta(hours=2, minutes=i % 50), "c") for i in range(10, 410)], [2] * 400)
    small, big = store.aggregates(["apple"], H)
    assert small["polarity"] == big["polarity"]  # the same mean ...
    assert small["polarity_se"] > 10 * big["polarity_se"]  # ... but two posts are far less certain
    assert 1.96 * small["polarity_se"] > 0.5


def test_alerts_skip_the_bucket_still_filling():
    rows = [{"topic": "a", "bucket_ms": i * H, "volume": 20, "n": 20, "polarity": 0.0} for i in range(20)]
    rows[-1] = {**rows[-1], "polarity": -0.9}  # the open bucket swings
    assert detect_shifts(rows, smooth=1, window=12, z=3)  # counted if treated as closed
    assert detect_shifts(rows, smooth=1, window=12, z=3, closed_before_ms=19 * H) == []


def test_pacer_caps_idle_time_and_records_the_skipped_span():
    p = Pacer(speed=1440, max_idle=0.3)
    p.wait(1_000_000.0)
    t = time.monotonic()
    p.wait(1_000_000.0 + 9 * 86400)  # nine days later: six minutes of silence at 1440x
    assert time.monotonic() - t < 1.5
    [(a, b)] = p.skipped
    assert b == 1_000_000.0 + 9 * 86400 and 1_000_000.0 <= a < b
    assert p.clock() == pytest.approx(b, abs=1440)


def test_model_switch_keeps_the_replay_clock(tmp_path, synthetic_model_dir):
    """A running worker swaps models between batches when the dashboard asks: no restart (same pid),
    the replay clock goes on, the store marks the switch, later posts carry the new model's name."""
    import shutil

    from stream.worker import Worker

    other = tmp_path / "other-model"
    shutil.copytree(synthetic_model_dir, other)
    f = tmp_path / "s.jsonl"
    t = int(T0.timestamp())
    f.write_text("".join(json.dumps({"id": str(100 + i), "text": f"apple {i}", "created_at": t + 60 * i}) + "\n" for i in range(400)))
    db = tmp_path / "db.sqlite"
    Store(db).save_topic(Topic.parse("apple", "apple"))
    w = Worker(db)
    pid = w.start(["replay", str(f), "--speed", "600"], model=str(synthetic_model_dir), threads=1)
    try:
        deadline = time.time() + 60
        while time.time() < deadline and not ((w.status() or {}).get("stored", 0) > 5):
            time.sleep(0.3)
        clock_before = w.status()["clock_ms"]
        w.switch_model(other)
        deadline = time.time() + 30
        while time.time() < deadline and (w.status() or {}).get("model") != "other-model":
            time.sleep(0.3)
        st = w.status()
        assert st["model"] == "other-model" and w.running and w._pid() == pid
        assert st["clock_ms"] >= clock_before
        time.sleep(2.5)
    finally:
        w.stop()
    store = Store(db)
    [ev] = [e for e in store.events() if e["kind"] == "model_switch"]
    assert "other-model" in ev["detail"] and ev["post_ms"] >= clock_before - 60_000
    models = {r[0] for r in store.con.execute("SELECT DISTINCT model FROM scores")}
    assert models == {synthetic_model_dir.name, "other-model"}


def test_hourly_and_minute_rollups_agree(tmp_path):
    """Whole-hour buckets read the hourly rollups, others the minute ones; totals over any window
    (whole hours inside, minutes at the edges) equal a count of the posts themselves."""
    store = Store(tmp_path / "db.sqlite")
    rng = np.random.default_rng(1)
    minutes = np.sort(rng.integers(0, 6 * 60, 500))
    posts = [Post(f"x:{i}", T0 + dt.timedelta(minutes=int(m), seconds=int(rng.integers(0, 60))), "apple", lang=("fr" if i % 9 == 0 else None), is_retweet=(i % 7 == 0)) for i, m in enumerate(minutes)]
    _write(store, posts, [int(x) for x in rng.integers(0, 3, len(posts))])
    t0 = int(T0.timestamp() * 1000)
    hourly = store.aggregates(["apple"], H, t0, t0 + 6 * H)
    by_minutes = store.aggregates(["apple"], H, t0 + 60_000 - 60_000, t0 + 6 * H + 60_000 - 60_000)  # hour-aligned: hourly table
    fifteen = store.aggregates(["apple"], 900_000, t0, t0 + 6 * H)
    assert hourly == by_minutes
    assert sum(r["volume"] for r in hourly) == sum(r["volume"] for r in fifteen) == 500
    for lo, hi in [(t0 + 7 * 60_000, t0 + 5 * H + 13 * 60_000), (t0 + 10 * 60_000, t0 + 40 * 60_000), (None, None), (t0 + H, None)]:
        ids_in = [p for p in posts if (lo is None or p.created_ms >= lo // 60000 * 60000) and (hi is None or p.created_ms < -(-hi // 60000) * 60000)]
        tot = store.totals(["apple"], lo, hi)
        assert tot["volume"] == len(ids_in), (lo, hi)
        assert tot["retweets"] == sum(p.is_retweet for p in ids_in) and tot["foreign"] == sum(p.lang == "fr" for p in ids_in)
    assert store.count_posts() == 500
