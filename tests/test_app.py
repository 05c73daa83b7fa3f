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


def test_filled_store_renders_and_escapes_posts(env):
    _fill(env / "db.sqlite")
    at = _run()
    assert at.title[0].value == "SparsePulse"
    at.segmented_control(key="view_tab").set_value("Posts")
    at = _run(at)
    frames = [df.value for df in at.dataframe]
    feed = next(f for f in frames if {"id", "text", "sentiment"} <= set(f.columns))  # the latest-posts feed
    texts = set(feed["text"])
    assert {"Trump", "Obama"}.isdisjoint({t.name for t in Store(env / "db.sqlite").topics()})  # no defaults added to a configured store
    for h in HOSTILE:
        assert h in texts  # shown verbatim in a dataframe cell (no Markdown/HTML rendering)
    rendered = " ".join(m.value for m in at.markdown)
    assert "<script>" not in rendered and "javascript:" not in rendered


def test_topic_edits_persist(env):
    _fill(env / "db.sqlite")
    at = _run()
    at.sidebar.text_input(key="new_topic_name").input("cherry")
    at.sidebar.text_input(key="new_topic_terms").input('cherry, "cherry pie", -sour')
    at.sidebar.button[[b.label for b in at.sidebar.button].index("Add topic")].click()
    at = _run(at)
    t = {x.name: x for x in Store(env / "db.sqlite").topics()}
    assert t["cherry"].terms == ("cherry", '"cherry pie"') and t["cherry"].exclusions == ("sour",)
    at.button(key="rm_banana").click()
    _run(at)
    assert "banana" not in {x.name for x in Store(env / "db.sqlite").topics()}


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
    import app_ui

    rows = [{"id": "x:1460323737035677698", "created_ms": 1479900000000, "text": "t", "author": None, "lang": "en", "is_retweet": 0, "quoted_text": None, "model": "m", "label": 2, "p_neg": 0.1, "p_neu": 0.1, "p_pos": 0.8, "polarity": 0.7, "topics": "a"},
            {"id": "bsky:at://did:plc:abc/app.bsky.feed.post/3k", "created_ms": 1479900060000, "text": "u", "author": None, "lang": None, "is_retweet": 0, "quoted_text": None, "model": "m", "label": 0, "p_neg": 0.8, "p_neu": 0.1, "p_pos": 0.1, "polarity": -0.7, "topics": "a"}]
    df = app_ui._posts_table(rows)
    assert list(df["time"]) == ["2016-11-23 11:20", "2016-11-23 11:21"]  # human times, not "...:02.740000+00:00"
    assert "author" not in df.columns  # no column of "None"
    assert list(df["link"]) == ["https://x.com/i/web/status/1460323737035677698", "https://bsky.app/profile/did:plc:abc/post/3k"]
    rows[0]["author"] = "alice"
    assert "author" in app_ui._posts_table(rows).columns


def test_reads_go_through_one_read_only_store(env):
    import app_ui

    _fill(env / "db.sqlite")
    a, b = app_ui.ro_store(str(env / "db.sqlite")), app_ui.ro_store(str(env / "db.sqlite"))
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
