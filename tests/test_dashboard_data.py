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


def test_every_rollup_level_agrees_and_an_old_store_gets_the_quarter_hours(tmp_path):
    """15-minute buckets come from the quarter-hour level; the same buckets summed from the minutes
    (a range start that is not on a quarter hour forces that) and from a store migrated from schema 6
    (no quarter-hour table) are identical."""
    import sqlite3

    from stream import rollups

    db = tmp_path / "db.sqlite"
    store = Store(db)
    rng = np.random.default_rng(3)
    posts = [Post(f"x:{i}", T0 + dt.timedelta(seconds=int(s)), "apple", lang=("es" if i % 9 == 0 else "en"), is_retweet=i % 7 == 0)
             for i, s in enumerate(rng.uniform(0, 3 * 86400, 3000))]
    labels = list(rng.integers(0, 3, len(posts)))
    for i in range(0, len(posts), 250):
        _write(store, posts[i : i + 250], labels[i : i + 250])
    q = 900_000
    start = int(T0.timestamp() * 1000)
    quarter = store.aggregates(["apple"], q, start, start + 3 * 86_400_000, retweets=True)
    minutes = store.aggregates(["apple"], q, start - 60_000, start + 3 * 86_400_000, retweets=True)
    def same(a, b):  # counts exactly, float sums up to their order
        def eq(u, v):
            return u == pytest.approx(v, rel=1e-12) if isinstance(u, float) else u == v

        return len(a) == len(b) and all(x.keys() == y.keys() and all(eq(x[k], y[k]) for k in x) for x, y in zip(a, b))

    assert len(quarter) > 250 and same(quarter, minutes)
    assert sum(r["volume"] for r in quarter) == 3000
    store.close()
    with sqlite3.connect(db) as con:  # back to schema 6: no quarter-hour level yet
        con.execute("DROP TABLE rollups_quarter")
        con.execute("UPDATE meta SET value = '6' WHERE key = 'schema_version'")
    migrated = Store(db)
    assert migrated.schema_version() >= 7
    assert same(migrated.aggregates(["apple"], q, start, start + 3 * 86_400_000, retweets=True), quarter)
    assert {t for t, _, _ in rollups.LEVELS} <= {r[0] for r in migrated.con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


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


def _shifts_by_the_book(rows, smooth, window, z, min_volume=5, min_std=0.02):
    """The detector's definition as a plain loop (the oracle for the vectorised one)."""
    import math

    out = []
    for topic in sorted({r["topic"] for r in rows}):
        series = sorted((r for r in rows if r["topic"] == topic and r["polarity"] is not None), key=lambda r: r["bucket_ms"])
        raw = [r["polarity"] for r in series]
        pol = [sum(raw[max(0, i + 1 - smooth) : i + 1]) / min(i + 1, smooth) for i in range(len(raw))]
        last = 0
        for i in range(window, len(series)):
            prev = pol[i - window : i]
            mu = sum(prev) / window
            sd = max(math.sqrt(sum((x - mu) ** 2 for x in prev) / (window - 1)), min_std)
            score = (pol[i] - mu) / sd
            sign = 1 if score > 0 else -1
            if abs(score) >= z and series[i]["n"] >= min_volume:
                if sign != last:
                    out.append((topic, series[i]["bucket_ms"], pytest.approx(score)))
                last = sign
            else:
                last = 0
    return sorted(out, key=lambda a: a[1])


def test_shift_detector_matches_its_definition():
    rng = np.random.default_rng(7)
    rows = []
    for t in ("a", "b", "c"):
        level = 0.0
        for i in range(600):
            if rng.random() < 0.02:
                level = rng.uniform(-0.8, 0.8)  # a shift
            n = int(rng.integers(0, 30))
            pol = None if rng.random() < 0.05 else float(np.clip(level + rng.normal(0, 0.1), -1, 1))
            rows.append({"topic": t, "bucket_ms": i * H, "volume": n, "n": n, "polarity": pol})
    for smooth, window, z in ((1, 12, 3.0), (3, 12, 3.0), (5, 24, 2.0), (1, 2, 1.5)):
        got = [(a.topic, a.bucket_ms, a.z) for a in detect_shifts(rows, smooth=smooth, window=window, z=z)]
        want = _shifts_by_the_book(rows, smooth, window, z)
        assert len(want) > 3 and sorted(got, key=lambda a: (a[1], a[0])) == sorted(want, key=lambda a: (a[1], a[0]))


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


def test_skip_bands_merge_neighbours_and_label_without_overlap():
    """Adjacent skipped spans of a replay are one grey band (the dashboard printed "skippedskipped" over two
    that touched); labels on the widest bands first, then wherever one does not run into another; spans outside the range dropped,
    spans across its edges clipped; every span's detail kept for the tooltip."""
    from stream.charts import SKIP_LABEL_GAP, events_layers, skip_bands

    lo, hi = 0, 1_000_000
    sk = lambda a, b, d: {"kind": "skip", "post_ms": a, "end_post_ms": b, "detail": d}  # noqa: E731
    events = [sk(300_000, 400_000, "b"), sk(100_000, 200_000, "a"), sk(200_500, 250_000, "a2"),  # a, a2 touch
              sk(415_000, 430_000, "c"), sk(-50_000, 10_000, "edge"), sk(2_000_000, 3_000_000, "out"),
              {"kind": "model_switch", "post_ms": 5, "end_post_ms": None, "detail": "m"}]
    bands = skip_bands(events, lo, hi)
    assert [(b["start"], b["end"]) for b in bands] == [(0, 10_000), (100_000, 250_000), (300_000, 400_000), (415_000, 430_000)]
    assert "a" in bands[1]["what"] and "a2" in bands[1]["what"] and bands[1]["what"].startswith("2 skipped spans")
    labelled = [b["start"] for b in bands if b["label"]]
    # widest first: 100,000-250,000, then 300,000-400,000 (200,000 away); 415,000 and 0 start too close to a label
    assert labelled == [100_000, 300_000]
    assert all(b - a >= SKIP_LABEL_GAP * (hi - lo) for a, b in zip(labelled, labelled[1:]))
    rect, text, _rule = events_layers(events, lo, hi, ["a", "b"])
    assert len(rect["data"]["values"]) == 4 and len(text["data"]["values"]) == 2


def test_skip_bands_take_hostile_events():
    """Events as a damaged or hand-edited store may hold them: no end, an end before the start, year 9999,
    a detail that is not text, zero-width range -- bands clipped to the range, never inverted, no crash."""
    from stream.charts import events_layers, skip_bands

    y9999 = 253_402_300_799_000
    events = [{"kind": "skip", "post_ms": 500, "end_post_ms": None, "detail": "no end"},
              {"kind": "skip", "post_ms": 900, "end_post_ms": 100, "detail": "reversed"},
              {"kind": "skip", "post_ms": 700, "end_post_ms": y9999, "detail": 42},
              {"kind": "skip", "post_ms": 705, "end_post_ms": 800, "detail": None},  # merges with the one above
              {"kind": "skip", "post_ms": None, "end_post_ms": 5, "detail": "no start"}]
    bands = skip_bands(events, 0, 1000)
    assert all(0 <= b["start"] <= b["end"] <= 1000 for b in bands)
    assert (700, 1000) in [(b["start"], b["end"]) for b in bands]
    assert skip_bands(events, 5, 5) is not None
    events_layers(events, 0, 1000, ["a", "b"])


class _FakeTime:
    """A clock for the Pacer that advances only when it sleeps (a 15-minute replay in milliseconds)."""

    def __init__(self):
        self.t = 1000.0

    def monotonic(self):
        return self.t

    def sleep(self, d):
        self.t += max(0.0, d)


def test_pacer_max_rate_spreads_a_burst_and_slows_the_clock(monkeypatch):
    import stream.replay as replay

    fake = _FakeTime()
    monkeypatch.setattr(replay, "time", fake)
    p = Pacer(speed=1440, max_rate=100)
    t0 = 1_000_000.0
    clocks = []
    for i in range(101):  # a burst: 101 posts within one second of post time
        p.wait(t0 + i / 101)
        clocks.append(p.clock())
    assert fake.t - 1000.0 == pytest.approx(1.0, abs=0.02)  # 100 gaps of 10 ms, not 0.7 ms
    assert clocks == sorted(clocks) and clocks[-1] == pytest.approx(t0 + 100 / 101, abs=1e-6)
    burst_end = fake.t
    p.wait(t0 + 1800)  # half an hour later: 1.25 s at 1440x, counted from the end of the burst
    assert fake.t - burst_end == pytest.approx(1800 / 1440, abs=0.05)
    p.wait(t0 + 1700)  # out of order: released at once (rate permitting), the clock does not go back
    assert p.clock() >= t0 + 1800 - 1e-6


def test_pacer_max_rate_alone_and_bad_values(monkeypatch):
    import stream.replay as replay

    fake = _FakeTime()
    monkeypatch.setattr(replay, "time", fake)
    p = Pacer(max_rate=50)
    for i in range(51):
        p.wait(2_000_000.0 - i)  # timestamps do not matter without a speed, the clock never goes back
    assert fake.t - 1000.0 == pytest.approx(1.0, abs=0.02) and p.clock() == 2_000_000.0
    for bad in ({"speed": -1}, {"max_idle": float("nan")}, {"max_rate": -0.5}, {"max_rate": float("nan")}):
        with pytest.raises(ValueError):
            Pacer(**bad)


def test_the_demo_replay_keeps_posts_coming_for_ten_minutes(monkeypatch):
    """The default replay (the SemEval-2017 test file, bursty, with a 7-day hole) at the demo's
    pacing: posts keep arriving for well over 8 minutes (the newcomer's screenshots), no minute
    without new posts, and no burst faster than the cap."""
    import app_ui as dashboard
    import stream.replay as replay

    f = dashboard.default_replay_file()
    if f is None:
        pytest.fail("the SemEval-2017 test file is missing: ../shared/data/semeval2017-task4a must sit beside the repo")
    args = dashboard.demo_replay_args(f)
    opt = {k: float(args[args.index(f"--{k.replace('_', '-')}") + 1]) for k in ("speed", "max_idle", "max_rate")}
    fake = _FakeTime()
    monkeypatch.setattr(replay, "time", fake)
    src = replay.ReplaySource(f, **opt)
    released = []
    for _, item in src.items():  # items() waits for each post as the worker's pipeline does
        if isinstance(item, Post):
            released.append(fake.t - 1000.0)
    wall = np.array(released)
    assert len(wall) > 12_000
    assert wall[-1] > 10 * 60  # still replaying after 10 minutes
    per_minute = np.bincount((wall // 60).astype(int))
    assert per_minute.min() > 0, per_minute  # no silent minute
    assert per_minute.max() <= 60 * opt["max_rate"] + 1
    assert np.diff(wall).max() <= opt["max_idle"] + 1e-6  # never waits longer than the cap


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
