"""The store on PostgreSQL beside SQLite: one SQL text, translated (stream.backend); hostile
locations; the worker process with a password that never reaches a command line."""
import datetime as dt
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from stream.backend import is_url, redact, split_password, translate
from stream.post import Post
from stream.store import SCHEMA_VERSION, Store, StoreError
from stream.tracker import Topic

REPO = Path(__file__).resolve().parents[1]


def test_translate_rewrites_only_the_dialect():
    assert translate("SELECT offset FROM offsets WHERE source_key=?") == 'SELECT "offset" FROM offsets WHERE source_key=%s'
    assert translate("INSERT OR IGNORE INTO posts(id) VALUES (?)") == "INSERT INTO posts(id) VALUES (%s) ON CONFLICT DO NOTHING"
    q = translate("INSERT OR REPLACE INTO meta(key, value) VALUES ('schema_version', ?)")
    assert q == "INSERT INTO meta(key, value) VALUES ('schema_version', %s) ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value"
    assert "BIGINT" in translate("CREATE TABLE t (a INTEGER NOT NULL, b REAL)") and "DOUBLE PRECISION" in translate("CREATE TABLE t (b REAL)")
    assert translate("CREATE TABLE e (id INTEGER PRIMARY KEY AUTOINCREMENT)") == "CREATE TABLE e (id BIGSERIAL PRIMARY KEY)"
    assert translate("SELECT item_offset FROM rejects") == "SELECT item_offset FROM rejects"  # not a bare `offset`
    assert translate("SELECT 1 WHERE instr(lower(t), ?) > 0") == "SELECT 1 WHERE strpos(lower(t), %s) > 0"
    assert translate("SELECT 'a%b'", params=False) == "SELECT 'a%b'" and translate("SELECT 'a%b' WHERE x = ?") == "SELECT 'a%%b' WHERE x = %s"


def test_locations_and_passwords():
    assert is_url("postgresql://u@h/db") and is_url("postgres://h/db") and is_url("POSTGRESQL://h/db")
    assert not is_url("data/sparsepulse.db") and not is_url("/tmp/postgresql://x")
    u = "postgresql://alice:s3cr%40t@db.example:5433/pulse?sslmode=require"
    assert redact(u) == "postgresql://alice:***@db.example:5433/pulse?sslmode=require"
    bare, pw = split_password(u)
    assert bare == "postgresql://alice@db.example:5433/pulse?sslmode=require" and pw == "s3cr%40t"
    assert split_password("data/x.db") == ("data/x.db", None)


def test_unreachable_server_is_a_clear_error_without_the_password(tmp_path):
    url = f"postgresql://sparsepulse:topsecret@/nodb?host={tmp_path}/nowhere&connect_timeout=2"
    with pytest.raises(StoreError) as e:
        Store(url)
    assert "cannot open" in str(e.value) or "not a usable" in str(e.value)
    assert "topsecret" not in str(e.value) and "***" in str(e.value)
    r = subprocess.run([sys.executable, "-m", "stream", "--db", url, "topics", "list"], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "error:" in r.stderr and "Traceback" not in r.stderr and "topsecret" not in r.stderr


def test_postgresql_schema_guard_and_read_only(pg_server):
    from tests.conftest import new_pg_database

    db = new_pg_database(pg_server)
    s = Store(db)
    assert s.schema_version() == SCHEMA_VERSION
    ro = Store(db, readonly=True)
    with pytest.raises(Exception, match="read-only"):
        ro.save_topic(Topic.parse("apple", "apple"))
    s.con.execute("UPDATE meta SET value='99' WHERE key='schema_version'")
    with pytest.raises(StoreError, match="newer"):
        Store(db)


def test_two_writers_on_postgresql_count_each_post_once(pg_server):
    """Two processes' worth of writers (threads with their own connections) write overlapping
    batches concurrently: the advisory write lock makes "which are new" and the insert one step."""
    import threading

    from tests.conftest import new_pg_database

    db = new_pg_database(pg_server)
    t0 = dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)
    posts = [Post(f"x:{i}", t0 + dt.timedelta(seconds=i), f"apple {i}") for i in range(2000)]
    news = []

    def writer(seed):
        st = Store(db)
        n = 0
        for k in range(0, 2000, 50):
            lo = (k + seed * 25) % 2000
            batch = posts[lo:lo + 50]
            n += st.write_batch(batch, [1] * len(batch), [[0.2, 0.6, 0.2]] * len(batch), [["apple"]] * len(batch), "m")
        news.append(n)

    Store(db).save_topic(Topic.parse("apple", "apple"))
    ths = [threading.Thread(target=writer, args=(s,)) for s in range(3)]
    [t.start() for t in ths]
    [t.join() for t in ths]
    s = Store(db)
    assert sum(news) == 2000 == s.count_posts()
    assert s.totals(["apple"])["volume"] == 2000


def test_worker_on_postgresql_keeps_the_password_off_the_command_line(pg_server, tmp_path, synthetic_model_dir):
    from stream.worker import Worker
    from tests.conftest import new_pg_database

    db = new_pg_database(pg_server).replace("postgresql://sparsepulse@", "postgresql://sparsepulse:hunter2@")  # trust auth: any password works
    s = Store(db)
    s.save_topic(Topic.parse("apple", "apple"))
    f = tmp_path / "r.jsonl"
    f.write_text("".join(f'{{"id": "{i}", "text": "apple {i}", "created_at": "2022-01-01T00:00:{i % 60:02d}Z"}}\n' for i in range(200)))
    w = Worker(db)
    pid = w.start(["replay", str(f)], model=str(synthetic_model_dir), threads=1)
    deadline = time.time() + 10
    while not (cmdline := Path(f"/proc/{pid}/cmdline").read_bytes()) and time.time() < deadline:
        time.sleep(0.01)  # empty until the kernel has set up the new exec
    assert b"hunter2" not in cmdline and b"postgresql://sparsepulse@" in cmdline
    assert b"PGPASSWORD=hunter2" in Path(f"/proc/{pid}/environ").read_bytes()
    assert w.running
    deadline = time.time() + 60
    while w.running and time.time() < deadline:
        time.sleep(0.2)
    assert s.count_posts() == 200
    assert "hunter2" not in w.last_run_log()
    assert not str(w.log_path).startswith(str(tmp_path)) and "hunter2" not in str(w.log_path)
    for leftover in Path(w.log_path).parent.glob(Path(str(w.log_path)).name.split(".worker")[0] + ".worker*"):
        os.unlink(leftover)


def test_offsets_total_is_one_query_on_both_engines(db):
    """A backfill's progress: the sum of its shards' offsets (unknown keys count 0), in one statement."""
    s = Store(db)
    assert s.offsets_total([]) == 0 and s.offsets_total(["file:none"]) == 0
    for key, off in (("file:a#0", 5), ("file:a#1", 7), ("file:b", 100)):
        s.write_batch([], [], [], [], "m", source_key=key, offset=off)
    assert s.offsets_total(["file:a#0", "file:a#1", "file:missing"]) == 12
    assert s.offsets_total(["file:a#0", "file:a#1", "file:b"]) == sum(s.offset(k) for k in ("file:a#0", "file:a#1", "file:b")) == 112
    s.close()
