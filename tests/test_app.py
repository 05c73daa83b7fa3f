"""Dashboard with streamlit.testing.v1.AppTest: empty store (onboarding), filled store, topic edits,
export content, and post texts shown without Markdown/HTML interpretation."""
import datetime as dt
import io
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from stream.post import Post
from stream.store import Store
from stream.tracker import Topic

HOSTILE = ["<script>alert(1)</script> apple", "[click](javascript:alert(1)) apple", "![x](http://tracker/img.png) apple"]


@pytest.fixture
def env(tmp_path, monkeypatch):
    monkeypatch.setenv("SPARSEPULSE_DB", str(tmp_path / "db.sqlite"))
    monkeypatch.setenv("SPARSEPULSE_DATA", str(tmp_path / "no-data"))  # no default replay file
    return tmp_path


@pytest.fixture
def env_db(db, tmp_path, monkeypatch):
    """The dashboard on each store engine (SQLite file, PostgreSQL database)."""
    monkeypatch.setenv("SPARSEPULSE_DB", db)
    monkeypatch.setenv("SPARSEPULSE_DATA", str(tmp_path / "no-data"))
    return db


def _fill(db, n=60):
    store = Store(db)
    store.save_topic(Topic.parse("apple", "apple"))
    store.save_topic(Topic.parse("banana", "banana"))
    t0 = dt.datetime(2016, 11, 20, tzinfo=dt.timezone.utc)
    posts, labels, probs, topics = [], [], [], []
    for i in range(n):
        text = HOSTILE[i - (n - len(HOSTILE))] if i >= n - len(HOSTILE) else f"{'apple' if i % 2 else 'banana'} post {i}"
        posts.append(Post(f"x:{i}", t0 + dt.timedelta(minutes=20 * i), text, "someone"))
        k = i % 3
        pr = np.full(3, 0.1, np.float32)
        pr[k] = 0.8
        labels.append(k)
        probs.append(pr)
        topics.append(["apple"] if "apple" in text else ["banana"])
    store.write_batch(posts, labels, probs, topics, "test-model")
    return store


def _run(at=None):
    at = at or AppTest.from_file(str(Path(__file__).resolve().parents[1] / "app.py"), default_timeout=60)
    at.run()
    assert not at.exception, at.exception
    return at


def test_onboarding_on_empty_store(env):
    at = _run()
    text = " ".join(m.value for m in at.markdown)
    assert "No data yet" in text
    assert {e.label for e in at.sidebar.text_input} >= {"File path", "New topic name"}


def test_filled_store_renders_and_escapes_posts(env_db):
    _fill(env_db)
    at = _run()
    assert at.title[0].value == "SparsePulse"
    at.segmented_control(key="view_tab").set_value("Posts")
    at = _run(at)
    frames = [df.value for df in at.dataframe]
    feed = next(f for f in frames if {"id", "text", "sentiment"} <= set(f.columns))  # the latest-posts feed
    texts = set(feed["text"])
    assert {"Trump", "Obama"}.isdisjoint({t.name for t in Store(env_db).topics()})  # no defaults added to a configured store
    for h in HOSTILE:
        assert h in texts  # shown verbatim in a dataframe cell (no Markdown/HTML rendering)
    rendered = " ".join(m.value for m in at.markdown)
    assert "<script>" not in rendered and "javascript:" not in rendered


def test_topic_edits_persist(env_db):
    _fill(env_db)
    at = _run()
    at.sidebar.text_input(key="new_topic_name").input("cherry")
    at.sidebar.text_input(key="new_topic_terms").input('cherry, "cherry pie", -sour')
    at.sidebar.button[[b.label for b in at.sidebar.button].index("Add topic")].click()
    at = _run(at)
    t = {x.name: x for x in Store(env_db).topics()}
    assert t["cherry"].terms == ("cherry", '"cherry pie"') and t["cherry"].exclusions == ("sour",)
    at.button(key="rm_banana").click()
    _run(at)
    assert "banana" not in {x.name for x in Store(env_db).topics()}


def test_export_contains_what_the_view_shows(env, monkeypatch):
    """The bytes the Posts (CSV) button serves: the button registers a deferred callable (nothing is
    built on a live rerun); calling it -- what a click does -- gives every post of the shown topics in
    the shown window, formulas neutralised."""
    from streamlit.runtime.media_file_manager import MediaFileManager
    from streamlit.runtime.memory_media_file_storage import MemoryMediaFileStorage

    built, deferred = {}, {}
    real_load, real_defer = MemoryMediaFileStorage.load_and_get_id, MediaFileManager.add_deferred

    def load(self, path_or_data, mimetype, kind, filename=None):
        built[filename] = path_or_data
        return real_load(self, path_or_data, mimetype, kind, filename)

    def defer(self, data_callable, mimetype, coordinates, file_name=None, **kw):
        deferred[file_name] = data_callable
        return real_defer(self, data_callable, mimetype, coordinates, file_name=file_name, **kw)

    monkeypatch.setattr(MemoryMediaFileStorage, "load_and_get_id", load)
    monkeypatch.setattr(MediaFileManager, "add_deferred", defer)
    store = _fill(env / "db.sqlite")
    store.write_batch([Post("x:formula", dt.datetime(2016, 11, 21, tzinfo=dt.timezone.utc), '=HYPERLINK("http://evil","apple")')], [1], [[0.1, 0.8, 0.1]], [["apple"]], "test-model")
    at = _run()
    at.segmented_control(key="view_tab").set_value("Export")
    _run(at)
    assert not [f for f in built if f and f.startswith("sparsepulse_")]  # nothing built before a click
    assert {"sparsepulse_posts.csv", "sparsepulse_aggregates.csv", "sparsepulse_posts.parquet"} <= set(deferred)
    exported = pd.read_csv(io.BytesIO(deferred["sparsepulse_posts.csv"]()))
    shown = store.posts(["apple", "banana"], order="recent", limit=100_000)
    assert len(exported) == len(shown) == 61
    assert set(exported["id"]) == {p["id"] for p in shown}
    assert set(exported["text"]) == {("'" + p["text"]) if p["text"].startswith("=") else p["text"] for p in shown}


# ------------------------------------------------------------------ dashboard issue findings
def test_file_watcher_is_off():
    import tomllib

    cfg = tomllib.loads((Path(__file__).resolve().parents[1] / ".streamlit" / "config.toml").read_text())
    assert cfg["server"]["fileWatcherType"] == "none" and cfg["server"]["runOnSave"] is False


def test_a_new_session_shows_the_running_model(env, monkeypatch, tmp_path):
    """The model list of a fresh browser session defaults to the model the worker runs, not the first."""
    import json as _json
    import shutil

    import stream.worker
    from stream.worker import status_path

    models = tmp_path / "models"
    for name in ("aaa-int8", "zzz-int8"):
        (models / name).mkdir(parents=True)
        (models / name / "model.safetensors").write_bytes(b"x")
    monkeypatch.setenv("SPARSEPULSE_MODELS", str(models))
    _fill(env / "db.sqlite")
    status_path(env / "db.sqlite").write_text(_json.dumps({"model": "zzz-int8", "model_path": str(models / "zzz-int8"), "state": "running"}))
    monkeypatch.setattr(stream.worker.Worker, "running", property(lambda self: True))
    monkeypatch.setattr(stream.worker.Worker, "switch_model", lambda self, m: pytest.fail("no switch was asked for"))
    at = _run()
    assert Path(at.sidebar.selectbox(key="model").value).name == "zzz-int8"


def test_posts_table_is_readable():
    from stream import charts

    rows = [{"id": "x:1460323737035677698", "created_ms": 1479900000000, "text": "t", "author": None, "lang": "en", "is_retweet": 0, "quoted_text": None, "model": "m", "label": 2, "p_neg": 0.1, "p_neu": 0.1, "p_pos": 0.8, "polarity": 0.7, "topics": "a"},
            {"id": "bsky:at://did:plc:abc/app.bsky.feed.post/3k", "created_ms": 1479900060000, "text": "u", "author": None, "lang": None, "is_retweet": 0, "quoted_text": None, "model": "m", "label": 0, "p_neg": 0.8, "p_neu": 0.1, "p_pos": 0.1, "polarity": -0.7, "topics": "a"}]
    df = charts.posts_table(rows)
    assert list(df["time"]) == ["2016-11-23 11:20", "2016-11-23 11:21"]  # human times, not "...:02.740000+00:00"
    assert "author" not in df.columns  # no column of "None"
    assert list(df["link"]) == ["https://x.com/i/web/status/1460323737035677698", "https://bsky.app/profile/did:plc:abc/post/3k"]
    rows[0]["author"] = "alice"
    assert "author" in charts.posts_table(rows).columns


def test_reads_go_through_one_read_only_store(env):
    import app_ui as dashboard

    _fill(env / "db.sqlite")
    a, b = dashboard.ro_store(str(env / "db.sqlite")), dashboard.ro_store(str(env / "db.sqlite"))
    assert a is b and a.readonly  # cached per server, opened read-only
    with pytest.raises(Exception):
        a.save_topic(Topic.parse("nope", "nope"))


def test_every_topic_keeps_its_place_in_the_per_topic_view(env):
    """A topic without posts yet still gets its (empty) charts, so charts do not jump between columns."""
    store = _fill(env / "db.sqlite")
    store.save_topic(Topic.parse("cherry", "cherry"))  # no posts
    at = _run()
    at.segmented_control(key="view_tab").set_value("Per topic")
    at = _run(at)
    charts = at.get("vega_lite_chart")
    assert len(charts) == 3 * 3  # polarity, shares, volume for apple, banana and cherry


def test_a_dead_worker_is_reported_with_its_log(env, tmp_path, synthetic_model_dir):
    """A worker that dies (a broken model file, kill -9) is said to have stopped unexpectedly, with the
    end of its log; one that finishes or is stopped is not."""
    import json as _json
    import os
    import signal
    import time

    from stream.worker import Worker

    db = env / "db.sqlite"
    _fill(db)
    f = tmp_path / "s.jsonl"
    t = int(dt.datetime(2016, 11, 21, tzinfo=dt.timezone.utc).timestamp())
    f.write_text("".join(_json.dumps({"id": str(10_000 + i), "text": f"apple {i}", "created_at": t + i}) + "\n" for i in range(300)))
    w = Worker(db)

    def wait_gone(deadline=60):
        end = time.time() + deadline
        while time.time() < end and w.running:
            time.sleep(0.2)
        assert not w.running

    broken = tmp_path / "broken-int8"
    broken.mkdir()
    (broken / "model.safetensors").write_bytes(b"\x00" * 64)
    w.start(["replay", str(f)], model=str(broken), threads=1)
    wait_gone()
    log = w.died()
    assert log and "broken-int8" in log, log  # the model error, not a blank "stopped"
    at = _run()
    assert any("stopped unexpectedly" in e.value for e in at.error), [e.value for e in at.error]
    assert any("broken-int8" in c.value for c in at.code)

    w.start(["replay", str(f), "--max-rate", "20"], model=str(synthetic_model_dir), threads=1)
    end = time.time() + 60
    while time.time() < end and not ((w.status() or {}).get("stored", 0) > 0):
        time.sleep(0.2)
    assert w.died() is None  # running
    os.kill(w._pid(), signal.SIGKILL)
    wait_gone()
    assert w.died() is not None  # killed: no final status

    w.start(["replay", str(f)], model=str(synthetic_model_dir), threads=1)
    wait_gone()
    assert w.status()["finished"] and w.died() is None
    at = _run()
    assert not any("stopped unexpectedly" in e.value for e in at.error)


def test_chart_frame_smooths_over_values_and_keeps_gaps():
    import math

    from stream import charts

    pols = [0.5, None, -0.5, 0.1, None, None, 0.9, -1.0]
    rows = [{"topic": "a", "bucket_ms": i * 3_600_000, "volume": 0 if p is None else 4, "retweets": 0, "foreign": 0, "n": 0 if p is None else 4,
             "negative": 0 if p is None else 1, "neutral": 0 if p is None else 1, "positive": 0 if p is None else 2,
             "polarity": p, "polarity_se": None if p is None else 0.3} for i, p in enumerate(pols)]
    df = charts.frame({"a": rows, "b": [dict(r, topic="b") for r in rows]}, 2)
    assert len(df) == 16 and list(df["topic"]) == ["a"] * 8 + ["b"] * 8
    a = df[df.topic == "a"]
    want = [0.5, None, 0.0, -0.2, None, None, 0.5, -0.05]  # mean of the last two buckets that have a value
    for got, w in zip(a["smoothed"], want):
        assert (w is None and math.isnan(got)) or got == pytest.approx(w)
    assert a["polarity"].isna().tolist() == [p is None for p in pols]  # gaps stay gaps
    assert a["lo"].min() >= -1.0 and a["hi"].max() <= 1.0 and a["lo"].iloc[-1] == -1.0
    assert a["share_positive"].iloc[0] == 0.5 and math.isnan(a["share_positive"].iloc[1])
    assert str(a["time"].iloc[1]) == "1970-01-01 01:00:00+00:00"
