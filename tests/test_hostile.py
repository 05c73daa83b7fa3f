"""Hostile streams: the findings of the hostile-streams issue, one test (or more) each.

1 far-future times, 2 lone surrogates, 3 CSV rows, 7 lifecycle, 8 retention, 9 export escaping,
10 memory/time bounds, 12 the X token, 13 ids, and the quarantine. (4-6: tests/test_format.py and
tests/test_native_sanitizers.py; 11: tests/test_tracker.py and tests/test_live_sources.py.)
"""
import datetime as dt
import gzip
import json
import os
import signal
import subprocess
import sys
import threading
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from stream.bluesky import parse_jetstream
from stream.formats import parse_json_line
from stream.pipeline import Pipeline
from stream.post import Post, Skip
from stream.replay import ReplaySource, read_lines
from stream.store import Store
from stream.tracker import Topic, Tracker
from stream.validate import EARLIEST, make_post

REPO = Path(__file__).resolve().parents[1]
UTC = dt.timezone.utc
NOW = dt.datetime.now(UTC)


class KeywordScorer:
    def score(self, texts):
        probs = np.full((len(texts), 3), 0.1, np.float32)
        for i, t in enumerate(texts):
            probs[i, 2 if "good" in t else 0 if "bad" in t else 1] = 0.8
        return probs.argmax(1), probs


class PoisonScorer(KeywordScorer):
    """Raises for any batch holding a text with POISON in it (a record the scorer cannot take)."""

    def score(self, texts):
        if any("POISON" in t for t in texts):
            raise ValueError("cannot score this record")
        return super().score(texts)


def _items(path, **kw):
    return [x for _, x in ReplaySource(path, **kw).items()]


def _v2(i, text=None, created="2022-01-01T00:00:00Z", **extra):
    return json.dumps({"id": str(1000 + i), "text": text or f"apple post {i}", "created_at": created, **extra})


def _run(path, store, scorer=None, **kw):
    return Pipeline(ReplaySource(path), scorer or KeywordScorer(), store, model_name="kw", tracker=Tracker([Topic.parse("apple", "apple")]), **kw).run()


# ------------------------------------------------------------------ 1. implausible times
@pytest.mark.parametrize("created", ["9999-12-31T23:59:59Z", "2300-01-01T00:00:00Z", "1600-01-01T00:00:00Z", "0001-01-01T00:00:00Z", "2006-03-20T23:59:59Z", 1e20, -5])
def test_recorded_posts_outside_the_plausible_window_are_skipped(tmp_path, created):
    p = tmp_path / "t.jsonl"
    p.write_text(_v2(1) + "\n" + json.dumps({"id": "2", "text": "apple", "created_at": created}) + "\n")
    items = _items(p)
    assert isinstance(items[0], Post) and items[1] == Skip("bad_time")


def test_window_edges():
    assert isinstance(make_post("1", "t", "2006-03-21T00:00:00Z"), Post)
    tomorrow = (NOW + dt.timedelta(hours=23)).isoformat()
    assert isinstance(make_post("1", "t", tomorrow), Post)
    assert make_post("1", "t", (NOW + dt.timedelta(days=2)).isoformat()) == Skip("bad_time")
    assert make_post("9223372036854775807", "t", None) == Skip("bad_time")  # its snowflake time is in 2080
    assert make_post("99999999999999999999999", "t", None) == Skip("missing_time")  # not a snowflake


@pytest.mark.parametrize("year", [9999, 2300, 1600, 1])
def test_jetstream_claimed_time_is_replaced_by_the_server_time(year):
    t_us = int(NOW.timestamp() * 1e6)
    msg = {"did": "did:plc:abc", "time_us": t_us, "kind": "commit", "commit": {"operation": "create", "collection": "app.bsky.feed.post", "rkey": "3k", "record": {"text": "hello", "createdAt": f"{year:04d}-06-01T00:00:00Z"}}}
    _, post = parse_jetstream(json.dumps(msg))
    assert isinstance(post, Post)
    assert abs(post.created_at.timestamp() - t_us / 1e6) < 1e-3
    assert post.claimed_ms is not None and dt.datetime.fromtimestamp(post.claimed_ms / 1000, UTC).year == max(year, 1970) or year < 1970


def test_jetstream_implausible_server_time_never_becomes_the_cursor():
    msg = {"did": "did:plc:abc", "time_us": 2**62, "kind": "commit", "commit": {"operation": "create", "collection": "app.bsky.feed.post", "rkey": "3k", "record": {"text": "hello", "createdAt": "9999-01-01T00:00:00Z"}}}
    t_us, post = parse_jetstream(json.dumps(msg))
    assert t_us is None and post == Skip("bad_time")


def test_x_delivery_time_stands_in_for_a_bad_claim():
    line = json.dumps({"data": {"id": "5", "text": "hi", "created_at": "9999-12-31T23:59:59Z"}})
    [post] = parse_json_line(line, "twarc2", observed=NOW)
    assert post.created_at == NOW and post.claimed_ms is not None


def test_far_future_post_cannot_make_retention_wipe_the_store(tmp_path):
    """A store written before the validation boundary may hold a year-9999 post: retention keeps
    measuring from at most now + 1 day, so the 12 real posts survive (it deleted 12 of 13)."""
    store = Store(tmp_path / "db.sqlite")
    t0 = NOW - dt.timedelta(days=3)
    posts = [Post(f"x:{i}", t0 + dt.timedelta(hours=i), "apple", None) for i in range(12)]
    posts.append(Post("x:far", dt.datetime(9999, 12, 31, tzinfo=UTC), "apple", None))
    store.write_batch(posts, [1] * 13, [[0.1, 0.8, 0.1]] * 13, [["apple"]] * 13, "m")
    assert store.retain(30) == 0 and store.count_posts() == 13


def test_dashboard_renders_a_store_with_a_far_future_post(tmp_path, monkeypatch):
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("SPARSEPULSE_DB", str(tmp_path / "db.sqlite"))
    monkeypatch.setenv("SPARSEPULSE_DATA", str(tmp_path / "no-data"))
    store = Store(tmp_path / "db.sqlite")
    store.save_topic(Topic.parse("apple", "apple"))
    posts = [Post("x:1", NOW - dt.timedelta(days=1), "apple good"), Post("x:2", dt.datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC), "apple bad")]
    store.write_batch(posts, [2, 0], [[0.1, 0.1, 0.8], [0.8, 0.1, 0.1]], [["apple"], ["apple"]], "m")
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=60)
    at.run()
    assert not at.exception, at.exception


# ------------------------------------------------------------------ 2. lone surrogates
def test_lone_surrogate_is_replaced_and_ingestion_goes_on(tmp_path):
    p = tmp_path / "s.jsonl"
    lines = [_v2(i) for i in range(5)]
    lines[2] = json.dumps({"id": "1002", "text": "apple \ud800 broken", "created_at": "2022-01-01T00:00:00Z"})  # \ud800 escaped: valid JSON
    assert "\\ud800" in lines[2]
    p.write_text("\n".join(lines) + "\n")
    store = Store(tmp_path / "db.sqlite")
    st = _run(p, store)
    assert st.error is None and st.stored == 5 and st.rejected == 0
    texts = [r["text"] for r in store.posts(["apple"], limit=10)]
    assert "apple \ufffd broken" in texts


def test_x_and_bluesky_parsers_clean_surrogates_too():
    [post] = parse_json_line(json.dumps({"data": {"id": "7", "text": "x \udfff y", "created_at": "2022-01-01T00:00:00Z", "author_id": "u\ud800"}}), "twarc2")
    assert post.text == "x \ufffd y" and post.author == "u\ufffd"
    msg = {"did": "did:plc:abc", "time_us": int(NOW.timestamp() * 1e6), "kind": "commit", "commit": {"operation": "create", "collection": "app.bsky.feed.post", "rkey": "3k", "record": {"text": "a\ud83db\x00c", "createdAt": "2024-01-01T00:00:00Z"}}}
    _, post = parse_jetstream(json.dumps(msg))
    assert post.text == "a\ufffdb\ufffdc"


# ------------------------------------------------------------------ 3. CSV row-level recovery
def _csv(path, rows_before, bad_row, rows_after):
    lines = ["tweet_id,text,tweet_created"]
    lines += [f"{100 + i},apple row {i},2022-01-01 00:00:00 +0000" for i in range(rows_before)]
    lines.append(bad_row)
    lines += [f"{5000 + i},apple after {i},2022-01-01 00:00:00 +0000" for i in range(rows_after)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_oversized_csv_field_costs_one_row(tmp_path):
    p = _csv(tmp_path / "big.csv", 10, f'4000,"{"x" * 200_000}",2022-01-01 00:00:00 +0000', 1000)
    items = _items(p)
    posts = [x for x in items if isinstance(x, Post)]
    assert len(posts) == 1010
    assert [x for x in items if isinstance(x, Skip)] == [Skip("field_too_long")]


def test_unterminated_quote_costs_one_row(tmp_path):
    p = _csv(tmp_path / "q.csv", 10, '4000,"this quote never closes,2022-01-01 00:00:00 +0000', 1000)
    items = _items(p)
    assert sum(isinstance(x, Post) for x in items) == 1010
    assert [x for x in items if isinstance(x, Skip)] == [Skip("bad_quote")]


def test_unterminated_quote_at_the_end_and_multiline_fields(tmp_path):
    p = tmp_path / "m.csv"
    p.write_text('id,text\n1,"two\nlines"\n2,"three\nlines\nhere"\n3,fine\n4,"open to the end\n5,next\n', encoding="utf-8")
    items = _items(p)
    assert [x.text for x in items if isinstance(x, Post)] == ["two\nlines", "three\nlines\nhere", "fine", "next"]
    assert [x for x in items if isinstance(x, Skip)] == [Skip("bad_quote")]


def test_csv_with_bad_utf8_row_and_stray_quotes(tmp_path):
    p = tmp_path / "u.csv"
    p.write_bytes(b'id,text\n1,it"s fine\n2,bad \xff byte\n3,"ok ""quoted"""\n')
    items = _items(p)
    assert [x.text for x in items if isinstance(x, Post)] == ['it"s fine', 'ok "quoted"']
    assert [x for x in items if isinstance(x, Skip)] == [Skip("bad_utf8")]


# ------------------------------------------------------------------ 10. bounded memory and cheap blank lines
def test_a_huge_line_is_skipped_without_being_held(tmp_path):
    p = tmp_path / "huge.jsonl.gz"
    with gzip.open(p, "wb") as f:
        f.write((_v2(1) + "\n").encode())
        f.write(b'{"id": "2", "text": "' + b"a" * (40 << 20) + b'"}\n')
        f.write((_v2(3) + "\n").encode())
    tracemalloc.start()
    with gzip.open(p, "rb") as f:
        out = list(read_lines(f, max_line=1 << 20))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert [o if isinstance(o, bytes) else str(o) for o in out][1] == "line_too_long" and len(out) == 3
    assert peak < 8 << 20, peak  # the 40 MB line was never held (it used to be: 1.36 GB for 300 MB)
    assert [type(x).__name__ for x in _items(p)] == ["Post", "Skip", "Post"]  # the real cap (8 MiB) in ReplaySource


def test_blank_lines_and_damaged_gzip(tmp_path):
    p = tmp_path / "blank.gz"
    p.write_bytes(gzip.compress((_v2(1) + "\n" + "\n" * 3_000_000 + "  \r\n" * 1000 + _v2(2) + "\n").encode()))
    assert [x.id for x in _items(p)] == ["x:1001", "x:1002"]
    q = tmp_path / "cut.gz"
    q.write_bytes(gzip.compress(("\n".join(_v2(i) for i in range(2000)) + "\n").encode())[:-2000])
    items = _items(q)
    assert items[-1] == Skip("damaged_file") and all(isinstance(x, Post) for x in items[:-1])


def test_scorer_caps_characters_before_tokenising(synthetic_model_dir):
    from runtime import Scorer
    from runtime.scorer import CHARS_PER_TOKEN_CAP

    s = Scorer(synthetic_model_dir, threads=1)
    seen = []

    class Spy:  # records what reaches the tokenizer
        def __init__(self, tok):
            self.tok = tok

        def encode_batch(self, texts, **kw):
            seen.extend(len(t) for t in texts)
            return self.tok.encode_batch(texts, **kw)

    s._tok = Spy(s._tok)
    labels, probs = s.score(["東" * 3_000_000, "short text"])
    assert max(seen) <= s.max_len * CHARS_PER_TOKEN_CAP and probs.shape == (2, 3)
    assert s.stats()["truncated"] == 1


# ------------------------------------------------------------------ 13. ids
@pytest.mark.parametrize("pid", [{"x": 1}, True, False, 1.5, [1], "", "   ", "x" * 600])
def test_ids_only_from_strings_and_integers(pid):
    assert make_post(pid, "text", "2022-01-01T00:00:00Z") in (Skip("bad_id"), Skip("missing_id"))


def test_integer_ids_and_v1_numeric_id():
    assert make_post(12345, "t", "2022-01-01T00:00:00Z").id == "x:12345"
    [p] = parse_json_line(json.dumps({"id": True, "text": "t", "created_at": "2022-01-01T00:00:00Z"}), "v2")
    assert p == Skip("bad_id")
    [p] = parse_json_line(json.dumps({"id": 42, "user": {"screen_name": {"evil": 1}}, "text": "t", "created_at": "Wed Oct 10 20:19:24 +0000 2018"}), "v1")
    assert p.id == "x:42" and p.author is None


# ------------------------------------------------------------------ quarantine
@pytest.mark.parametrize("position", [0, 7, 15, 16, 63])
def test_a_poison_record_costs_exactly_that_record(tmp_path, position):
    p = tmp_path / "p.jsonl"
    p.write_text("\n".join(_v2(i, text=f"apple POISON {i}" if i == position else None) for i in range(64)) + "\n")
    store = Store(tmp_path / "db.sqlite")
    st = _run(p, store, PoisonScorer(), batch_size=16)
    assert st.error is None and st.stored == 63 and st.rejected == 1
    [rej] = store.rejects()
    assert rej["item_offset"] == position + 1 and rej["post_id"] == f"x:{1000 + position}" and rej["reason"].startswith("ValueError")
    assert json.loads(rej["record"])["text"] == f"apple POISON {position}"
    assert store.offset(ReplaySource(p).key) == 64
    st2 = _run(p, store, PoisonScorer(), batch_size=16)  # a restart: nothing new, nothing twice
    assert st2.items == 0 and store.count_posts() == 63 and len(store.rejects()) == 1


class FailingStore(Store):
    """Raises inside write_batch for one post id (a record the database refuses)."""

    def write_batch(self, posts, *a, **kw):
        if any(p.id == "x:1003" for p in posts):
            raise ValueError("refused by the database")
        return super().write_batch(posts, *a, **kw)


def test_a_record_the_store_refuses_is_quarantined(tmp_path):
    p = tmp_path / "p.jsonl"
    p.write_text("\n".join(_v2(i) for i in range(10)) + "\n")
    store = FailingStore(tmp_path / "db.sqlite")
    st = _run(p, store)
    assert (st.stored, st.rejected, st.error) == (9, 1, None)
    assert store.reject_counts() == {"ValueError": 1}


class LockedStore(Store):
    def write_batch(self, *a, **kw):
        import sqlite3

        raise sqlite3.OperationalError("database is locked")


def test_a_database_failure_stops_the_run_without_losing_records(tmp_path):
    """Not a record's fault: the run ends with an error and the offset where it stood."""
    p = tmp_path / "p.jsonl"
    p.write_text("\n".join(_v2(i) for i in range(10)) + "\n")
    store = LockedStore(tmp_path / "db.sqlite")
    st = _run(p, store)
    assert st.error and "locked" in st.error and st.finished and st.rejected == 0
    assert store.offset(ReplaySource(p).key) == 0 and not store.rejects()


# ------------------------------------------------------------------ 7. lifecycle
class SlowSource:
    key, name = "slow", "slow"

    def items(self, start_after=0, stop=None):
        for i in range(100_000):
            yield i + 1, Post(f"x:{i}", dt.datetime(2022, 1, 1, tzinfo=UTC), "apple", None)


class ExplodingScorer:
    def score(self, texts):
        raise MemoryError("out of memory")


def test_pipeline_ends_and_its_producer_too_when_scoring_fails(tmp_path):
    store = Store(tmp_path / "db.sqlite")
    pipe = Pipeline(SlowSource(), ExplodingScorer(), store, model_name="m", tracker=Tracker([Topic.parse("apple", "apple")]), queue_size=4)
    done = threading.Event()
    result = {}
    threading.Thread(target=lambda: (result.setdefault("st", pipe.run()), done.set()), daemon=True).start()
    assert done.wait(30), "Pipeline.run hung"
    st = result["st"]
    assert st.finished and "MemoryError" in st.error
    deadline = time.time() + 10
    while time.time() < deadline and any(t.name == "source" and t.is_alive() for t in threading.enumerate()):
        time.sleep(0.05)
    assert not any(t.name == "source" and t.is_alive() for t in threading.enumerate())


def test_worker_does_not_trust_a_reused_pid(tmp_path):
    from stream.worker import Worker, _pid_path

    db = tmp_path / "db.sqlite"
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        _pid_path(db).write_text(str(other.pid))  # a stale pid file now naming an unrelated process
        w = Worker(db)
        assert not w.running
        w.stop()
        assert other.poll() is None  # not killed
    finally:
        other.kill()
        other.wait()


def test_worker_start_leaves_no_log_handle_open_and_keeps_the_token_out_of_our_environment(tmp_path, monkeypatch):
    from stream.worker import Worker

    monkeypatch.delenv("X_BEARER_TOKEN", raising=False)
    db = tmp_path / "db.sqlite"
    w = Worker(db)
    before = set(os.listdir("/proc/self/fd"))
    pid = w.start(["x", "--quiet"], env={"X_BEARER_TOKEN": "secret-token-123"})
    try:
        after = set(os.listdir("/proc/self/fd"))
        leaked = [os.readlink(f"/proc/self/fd/{fd}") for fd in after - before if os.path.exists(f"/proc/self/fd/{fd}")]
        assert not [l for l in leaked if l.endswith(".worker.log")], leaked
        assert "X_BEARER_TOKEN" not in os.environ
        deadline = time.time() + 10
        while not (raw := Path(f"/proc/{pid}/environ").read_bytes()) and time.time() < deadline:
            time.sleep(0.01)  # empty until the kernel has set up the new exec
        env = raw.split(b"\0")
        assert b"X_BEARER_TOKEN=secret-token-123" in env
    finally:
        w.stop()


def test_dashboard_keeps_the_x_token_out_of_the_server_environment(tmp_path, monkeypatch):
    from streamlit.testing.v1 import AppTest

    import stream.worker

    monkeypatch.setenv("SPARSEPULSE_DB", str(tmp_path / "db.sqlite"))
    monkeypatch.setenv("SPARSEPULSE_DATA", str(tmp_path / "no-data"))
    monkeypatch.delenv("X_BEARER_TOKEN", raising=False)
    started = []
    monkeypatch.setattr(stream.worker.Worker, "start", lambda self, args, **kw: started.append((args, kw)) or 0)
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=60)
    at.run()
    at.sidebar.radio(key="source_kind").set_value("X (live)")
    at.run()
    at.sidebar.text_input(key="x_token").input("secret-token-123")
    at.run()
    at.sidebar.button(key="start").click()
    at.run()
    assert not at.exception, at.exception
    assert started and started[-1][0] == ["x"] and started[-1][1]["env"] == {"X_BEARER_TOKEN": "secret-token-123"}
    assert "X_BEARER_TOKEN" not in os.environ


# ------------------------------------------------------------------ 8. retention arguments
@pytest.mark.parametrize("days", ["-1", "0", "inf", "nan", "-inf", "abc"])
def test_retain_refuses_nonsense_days(tmp_path, days):
    from stream.cli import main

    db = tmp_path / "db.sqlite"
    store = Store(db)
    store.write_batch([Post("x:1", NOW - dt.timedelta(days=1), "apple")], [1], [[0.1, 0.8, 0.1]], [["apple"]], "m")
    with pytest.raises(SystemExit) as e:
        main(["--db", str(db), "retain", "--days", days])
    assert e.value.code == 2 and store.count_posts() == 1
    with pytest.raises(ValueError):
        store.retain(float(days) if days != "abc" else days)


# ------------------------------------------------------------------ 9. export escaping
def test_csv_export_neutralises_formulas():
    import pandas as pd

    from stream import charts

    df = pd.DataFrame({"text": ['=HYPERLINK("http://evil","click")', "+1 cmd", "-2+3", "@SUM(A1)", "\tx", "plain"], "polarity": [-0.5, 0.1, 0.2, 0.3, 0.4, 0.5]})
    out = charts.csv_bytes(df).decode()
    assert "'=HYPERLINK" in out and "'+1 cmd" in out and "'-2+3" in out and "'@SUM" in out and "plain" in out
    assert "\n=HYPERLINK" not in out and ",-0.5" in out  # numbers untouched


# ------------------------------------------------------------------ exit codes and the summary
def test_cli_run_ends_with_a_summary_and_an_error_exit_code(tmp_path, synthetic_model_dir):
    p = tmp_path / "p.jsonl"
    p.write_text("\n".join(_v2(i) for i in range(20)) + "\n")
    db = tmp_path / "db.sqlite"
    Store(db)
    r = subprocess.run([sys.executable, "-m", "stream", "--db", str(db), "replay", str(p), "--topic", "apple=apple", "--model", str(synthetic_model_dir), "--quiet"], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert r.returncode == 0 and "stored new 20" in r.stdout and "rejected 0" in r.stdout, r.stdout + r.stderr
    import sqlite3

    with sqlite3.connect(db) as con:  # a damaged database: the run must end with its summary and exit 1
        con.execute("DROP TABLE scores")
    q = tmp_path / "q.jsonl"
    q.write_text("\n".join(_v2(i + 100) for i in range(5)) + "\n")
    r = subprocess.run([sys.executable, "-m", "stream", "--db", str(db), "replay", str(q), "--model", str(synthetic_model_dir), "--quiet"], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert "items 5" in r.stdout and "no such table" in r.stderr and r.returncode == 1, (r.returncode, r.stdout, r.stderr)
