"""The store (contract 2) on SQLite (WAL; the default) or PostgreSQL (``stream.backend``): posts, scores, topic matches, topics, source offsets, skip counts.

The pipeline writes one transaction per micro-batch, including the source offset, so a crash
(even ``kill -9``) and a restart store every post exactly once. Inserts are idempotent (posts are
keyed by their source-scoped id). Aggregates come from SQL over the store.
"""
from __future__ import annotations

import contextlib
import json
import math
import threading
import time
from pathlib import Path
from typing import Iterator, Sequence

from . import rollups
from .backend import open_backend
from .post import Post
from .rollups import FOREIGN_SQL as _FOREIGN_SQL
from .tracker import Topic

__all__ = ["Store", "SCHEMA_VERSION", "StoreError"]

SCHEMA_VERSION = 7
#: a rejected record is kept as JSON cut to this many characters
REJECT_RECORD_CHARS = 4096

_MIGRATIONS: dict[int, str] = {
    1: """
    CREATE TABLE posts (
        id TEXT PRIMARY KEY,
        source TEXT NOT NULL,
        created_ms INTEGER NOT NULL,
        text TEXT NOT NULL,
        author TEXT,
        lang TEXT,
        ingested_ms INTEGER NOT NULL
    );
    CREATE TABLE scores (
        post_id TEXT PRIMARY KEY REFERENCES posts(id) ON DELETE CASCADE,
        model TEXT NOT NULL,
        label INTEGER NOT NULL,
        p_neg REAL NOT NULL, p_neu REAL NOT NULL, p_pos REAL NOT NULL,
        polarity REAL NOT NULL
    );
    CREATE TABLE matches (
        topic TEXT NOT NULL,
        post_id TEXT NOT NULL REFERENCES posts(id) ON DELETE CASCADE,
        created_ms INTEGER NOT NULL,
        PRIMARY KEY (topic, post_id)
    );
    CREATE INDEX matches_topic_time ON matches(topic, created_ms);
    CREATE INDEX posts_time ON posts(created_ms);
    CREATE TABLE topics (
        name TEXT PRIMARY KEY,
        terms TEXT NOT NULL,
        exclusions TEXT NOT NULL,
        updated_ms INTEGER NOT NULL
    );
    CREATE TABLE offsets (
        source_key TEXT PRIMARY KEY,
        offset INTEGER NOT NULL,
        cursor TEXT,
        updated_ms INTEGER NOT NULL
    );
    CREATE TABLE skips (
        source_key TEXT NOT NULL,
        reason TEXT NOT NULL,
        count INTEGER NOT NULL,
        PRIMARY KEY (source_key, reason)
    );
    """,
    2: """
    ALTER TABLE posts ADD COLUMN claimed_ms INTEGER;
    CREATE TABLE rejects (
        source_key TEXT NOT NULL,
        item_offset INTEGER NOT NULL,
        post_id TEXT NOT NULL,
        reason TEXT NOT NULL,
        record TEXT NOT NULL,
        rejected_ms INTEGER NOT NULL,
        PRIMARY KEY (source_key, item_offset, post_id)
    );
    """,
    3: """
    ALTER TABLE posts ADD COLUMN quoted_text TEXT;
    ALTER TABLE posts ADD COLUMN is_retweet INTEGER NOT NULL DEFAULT 0;
    """,
    4: """
    ALTER TABLE offsets DROP COLUMN cursor;
    """,
    # the rollup levels: one CREATE TABLE and one fill statement each, from stream.rollups
    5: rollups.table_sql("rollups", "minute") + ";\n" + rollups.fill_minutes_sql() + """;
    CREATE TABLE events (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        kind TEXT NOT NULL,
        wall_ms INTEGER NOT NULL,
        post_ms INTEGER,
        end_post_ms INTEGER,
        detail TEXT NOT NULL
    );
    """,
    6: rollups.table_sql("rollups_hour", "hour") + ";\n" + rollups.fill_from_minutes_sql("rollups_hour", "hour", 60) + """;
    INSERT OR REPLACE INTO meta(key, value) SELECT 'posts', COUNT(*) FROM posts;
    """,
    7: rollups.table_sql("rollups_quarter", "quarter") + ";\n" + rollups.fill_from_minutes_sql("rollups_quarter", "quarter", 15) + ";",
}


class StoreError(RuntimeError):
    """The database is unusable (newer schema, corrupt file)."""


def reject_record(post: Post) -> str:
    """A post as the JSON kept in ``rejects.record`` (ASCII, so any text survives), cut to size."""
    rec = {"id": post.id, "created_ms": post.created_ms, "author": post.author, "lang": post.lang, "source": post.source, "text": post.text[:REJECT_RECORD_CHARS]}
    return json.dumps(rec, ensure_ascii=True)[:REJECT_RECORD_CHARS]


#: a rejected post: (item offset in its source, the post, the reason)
Reject = tuple[int, Post, str]


def _now_ms() -> int:
    return int(time.time() * 1000)


class Store:
    """One SQLite database. Safe to use from several threads (one connection per thread)."""

    def __init__(self, location: str | Path, *, readonly: bool = False):
        """``location``: an SQLite file path (the default engine) or a ``postgresql://`` URL."""
        self.backend = open_backend(location)
        self.path = getattr(self.backend, "path", None)  # the SQLite file (None for PostgreSQL)
        self.location = self.backend.location  # for messages: a URL's password redacted
        self.readonly = readonly
        self._local = threading.local()
        if not readonly:
            self._migrate()

    # ------------------------------------------------------------------ connections
    @property
    def con(self):
        c = getattr(self._local, "con", None)
        if c is None:
            try:
                c = self._local.con = self.backend.connect(self.readonly)
            except self.backend.errors() as e:
                raise StoreError(f"{self.location}: cannot open database: {e}") from None
        return c

    def close(self) -> None:
        c = getattr(self._local, "con", None)
        if c is not None:
            c.close()
            self._local.con = None

    @contextlib.contextmanager
    def transaction(self) -> Iterator:
        c = self.con
        self.backend.begin_write(c)
        try:
            yield c
        except BaseException:
            c.execute("ROLLBACK")
            raise
        else:
            c.execute("COMMIT")

    def _migrate(self) -> None:
        try:
            with self.transaction() as c:
                c.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
                row = c.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
                version = int(row[0]) if row else 0
                if version > SCHEMA_VERSION:
                    raise StoreError(f"{self.location}: schema version {version} is newer than this program ({SCHEMA_VERSION})")
                for v in range(version + 1, SCHEMA_VERSION + 1):
                    for stmt in _MIGRATIONS[v].split(";"):
                        if stmt.strip():
                            c.execute(stmt)
                    c.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('schema_version', ?)", (str(v),))
        except self.backend.errors() as e:
            raise StoreError(f"{self.location}: not a usable SparsePulse database: {e}") from None

    def schema_version(self) -> int:
        row = self.con.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        return int(row[0]) if row else 0

    # ------------------------------------------------------------------ writes
    def write_batch(
        self,
        posts: Sequence[Post],
        labels: Sequence[int],
        probs: Sequence[Sequence[float]],
        topics: Sequence[Sequence[str]],
        model: str,
        *,
        source_key: str | None = None,
        offset: int | None = None,
        skips: dict[str, int] | None = None,
        rejects: Sequence[Reject] = (),
    ) -> int:
        """Store a scored micro-batch, its topic matches, the source offset, skip counts and rejected
        posts in one transaction. Returns the number of posts that were new."""
        if not (len(posts) == len(labels) == len(probs) == len(topics)):
            raise ValueError(f"write_batch: {len(posts)} posts, {len(labels)} labels, {len(probs)} probabilities, {len(topics)} topic lists")
        now = _now_ms()
        with self.transaction() as c:
            ids = [p.id for p in posts]
            seen = set()
            for i in range(0, len(ids), 500):  # which posts are already stored (re-delivered): they change nothing
                chunk = ids[i : i + 500]
                seen.update(r[0] for r in c.execute(f"SELECT id FROM posts WHERE id IN ({','.join('?' * len(chunk))})", chunk))
            new = c.executemany(
                "INSERT OR IGNORE INTO posts(id, source, created_ms, text, author, lang, ingested_ms, claimed_ms, quoted_text, is_retweet) VALUES (?,?,?,?,?,?,?,?,?,?)",
                [(p.id, p.source, p.created_ms, p.text, p.author, p.lang, now, p.claimed_ms, p.quoted_text, int(p.is_retweet)) for p in posts],
            ).rowcount
            c.execute("UPDATE meta SET value = CAST(value AS INTEGER) + ? WHERE key = 'posts'", (new,))
            rollups.add(c, [(p, int(l), pr, ts) for p, l, pr, ts in zip(posts, labels, probs, topics) if p.id not in seen])
            c.executemany(
                "INSERT OR IGNORE INTO scores(post_id, model, label, p_neg, p_neu, p_pos, polarity) VALUES (?,?,?,?,?,?,?)",
                [(p.id, model, int(l), float(pr[0]), float(pr[1]), float(pr[2]), float(pr[2]) - float(pr[0])) for p, l, pr in zip(posts, labels, probs)],
            )
            c.executemany(
                "INSERT OR IGNORE INTO matches(topic, post_id, created_ms) VALUES (?,?,?)",
                [(t, p.id, p.created_ms) for p, ts in zip(posts, topics) for t in ts],
            )
            if source_key is not None and offset is not None:
                self._set_offset(c, source_key, offset, now)
            if source_key is not None and skips:
                self._add_skips(c, source_key, skips)
            if source_key is not None and rejects:
                self._add_rejects(c, source_key, rejects, now)
        return new

    @staticmethod
    def _add_rejects(c, key: str, rejects: Sequence[Reject], now: int) -> None:
        c.executemany(
            "INSERT OR IGNORE INTO rejects(source_key, item_offset, post_id, reason, record, rejected_ms) VALUES (?,?,?,?,?,?)",
            [(key, int(off), p.id, reason[:500], reject_record(p), now) for off, p, reason in rejects],
        )

    def rebuild_rollups(self) -> None:
        """Recompute every rollup from the posts (after retention deleted some)."""
        with self.transaction() as c:
            rollups.rebuild(c)
            c.execute("INSERT OR REPLACE INTO meta(key, value) SELECT 'posts', COUNT(*) FROM posts")

    def add_event(self, kind: str, detail: str, post_ms: int | None = None, end_post_ms: int | None = None) -> None:
        """A marker for the charts: a model switch, a skipped idle span of a replay."""
        with self.transaction() as c:
            c.execute("INSERT INTO events(kind, wall_ms, post_ms, end_post_ms, detail) VALUES (?,?,?,?,?)", (kind, _now_ms(), post_ms, end_post_ms, detail))

    def events(self, start_ms: int | None = None, end_ms: int | None = None) -> list[dict]:
        q, args = "SELECT kind, wall_ms, post_ms, end_post_ms, detail FROM events", []
        if start_ms is not None and end_ms is not None:
            q += " WHERE post_ms IS NULL OR (post_ms < ? AND COALESCE(end_post_ms, post_ms) >= ?)"
            args = [int(end_ms), int(start_ms)]
        rows = self.con.execute(q + " ORDER BY id", args).fetchall()
        return [dict(zip(("kind", "wall_ms", "post_ms", "end_post_ms", "detail"), r)) for r in rows]

    @staticmethod
    def _set_offset(c, key: str, offset: int, now: int) -> None:
        c.execute(
            "INSERT INTO offsets(source_key, offset, updated_ms) VALUES (?,?,?) "
            "ON CONFLICT(source_key) DO UPDATE SET offset=excluded.offset, updated_ms=excluded.updated_ms",
            (key, int(offset), now),
        )

    @staticmethod
    def _add_skips(c, key: str, skips: dict[str, int]) -> None:
        c.executemany(
            "INSERT INTO skips(source_key, reason, count) VALUES (?,?,?) ON CONFLICT(source_key, reason) DO UPDATE SET count = skips.count + excluded.count",
            [(key, r, int(n)) for r, n in skips.items() if n],
        )

    def commit_offset(self, source_key: str, offset: int, skips: dict[str, int] | None = None, rejects: Sequence[Reject] = ()) -> None:
        """Advance a source's offset without posts (a stretch of unmatched or skipped items, or a
        batch whose failing posts were quarantined in ``rejects``)."""
        now = _now_ms()
        with self.transaction() as c:
            self._set_offset(c, source_key, offset, now)
            if skips:
                self._add_skips(c, source_key, skips)
            if rejects:
                self._add_rejects(c, source_key, rejects, now)

    def is_transient(self, exc: BaseException) -> bool:
        """An error of the database itself (locked, full, I/O, missing table, lost server): retrying
        the same records later may succeed, so the pipeline stops instead of rejecting them."""
        return isinstance(exc, (*self.backend.transient_errors(), StoreError))

    # ------------------------------------------------------------------ topics
    def save_topic(self, topic: Topic) -> None:
        with self.transaction() as c:
            c.execute(
                "INSERT INTO topics(name, terms, exclusions, updated_ms) VALUES (?,?,?,?) "
                "ON CONFLICT(name) DO UPDATE SET terms=excluded.terms, exclusions=excluded.exclusions, updated_ms=excluded.updated_ms",
                (topic.name, json.dumps(list(topic.terms)), json.dumps(list(topic.exclusions)), _now_ms()),
            )

    def delete_topic(self, name: str) -> bool:
        with self.transaction() as c:
            n = c.execute("DELETE FROM topics WHERE name=?", (name,)).rowcount
        return n > 0

    def topics(self) -> list[Topic]:
        rows = self.con.execute("SELECT name, terms, exclusions FROM topics ORDER BY name").fetchall()
        return [Topic(n, tuple(json.loads(t)), tuple(json.loads(e))) for n, t, e in rows]

    def topics_version(self) -> int:
        """Changes whenever topics are added, edited or removed (cheap polling by the pipeline)."""
        row = self.con.execute("SELECT COUNT(*), COALESCE(MAX(updated_ms), 0), COALESCE(SUM(LENGTH(terms) + LENGTH(exclusions)), 0) FROM topics").fetchone()
        return hash(tuple(row))

    # ------------------------------------------------------------------ reads
    def offset(self, source_key: str) -> int:
        """How far the source got: the offset of its last committed item (0 before the first)."""
        row = self.con.execute("SELECT offset FROM offsets WHERE source_key=?", (source_key,)).fetchone()
        return int(row[0]) if row else 0

    def offsets_total(self, source_keys: list[str]) -> int:
        """The sum of several sources' offsets in one query (a backfill's progress over its shards)."""
        if not source_keys:
            return 0
        marks = ",".join("?" * len(source_keys))
        row = self.con.execute(f"SELECT COALESCE(SUM(offset), 0) FROM offsets WHERE source_key IN ({marks})", list(source_keys)).fetchone()
        return int(row[0])

    def skip_counts(self, source_key: str | None = None) -> dict[str, int]:
        q = "SELECT reason, SUM(count) FROM skips" + (" WHERE source_key=?" if source_key else "") + " GROUP BY reason"
        return {r: int(n) for r, n in self.con.execute(q, (source_key,) if source_key else ()).fetchall()}

    def reject_counts(self, source_key: str | None = None) -> dict[str, int]:
        """Rejected posts by reason (the reason's first line, cut at the first colon)."""
        q = "SELECT reason FROM rejects" + (" WHERE source_key=?" if source_key else "")
        out: dict[str, int] = {}
        for (r,) in self.con.execute(q, (source_key,) if source_key else ()).fetchall():
            k = r.split(":", 1)[0]
            out[k] = out.get(k, 0) + 1
        return out

    def rejects(self, limit: int = 100) -> list[dict]:
        rows = self.con.execute("SELECT source_key, item_offset, post_id, reason, record, rejected_ms FROM rejects ORDER BY rejected_ms DESC LIMIT ?", (int(limit),)).fetchall()
        keys = ("source_key", "item_offset", "post_id", "reason", "record", "rejected_ms")
        return [dict(zip(keys, r)) for r in rows]

    def count_posts(self) -> int:
        """Stored posts (a counter kept in the batches' transactions: no scan of a large table)."""
        row = self.con.execute("SELECT value FROM meta WHERE key = 'posts'").fetchone()
        return int(row[0]) if row else int(self.con.execute("SELECT COUNT(*) FROM posts").fetchone()[0])

    def time_range(self, topics: Sequence[str] | None = None) -> tuple[int, int] | None:
        """First and last creation time of the topics' posts (one index lookup per end and topic)."""
        # MIN and MAX in separate statements: SQLite answers a lone MIN or MAX from the index's end,
        # but both in one SELECT scan the whole range (115 ms per rerun with 1M posts)
        def ends(table: str, where: str = "", args: tuple = ()) -> tuple:
            lo = self.con.execute(f"SELECT MIN(created_ms) FROM {table} {where}", args).fetchone()[0]
            hi = self.con.execute(f"SELECT MAX(created_ms) FROM {table} {where}", args).fetchone()[0]
            return lo, hi

        if not topics:
            lo, hi = ends("posts")
            return None if lo is None else (int(lo), int(hi))
        found = [e for e in (ends("matches", "WHERE topic = ?", (t,)) for t in topics) if e[0] is not None]
        return (min(int(e[0]) for e in found), max(int(e[1]) for e in found)) if found else None

    def aggregates(self, topics: Sequence[str], bucket_ms: int, start_ms: int | None = None, end_ms: int | None = None, *, retweets: bool = False, foreign: bool = False) -> list[dict]:
        """Per topic and time bucket (a whole number of minutes), from the rollups (``stream.rollups``):

        ``volume`` every matched post; ``retweets`` and ``foreign`` (known language, not English) counts;
        the opinion figures -- ``n`` posts, ``negative`` / ``neutral`` / ``positive`` counts, mean
        ``polarity`` and its standard error ``polarity_se`` -- over the posts that count as opinions:
        by default neither retweets (``retweets=True`` includes them) nor other languages
        (``foreign=True``). Buckets without any post are absent (the caller shows them as gaps).
        """
        return rollups.aggregates(self.con, topics, bucket_ms, start_ms, end_ms, retweets=retweets, foreign=foreign)

    def totals(self, topics: Sequence[str], start_ms: int | None = None, end_ms: int | None = None) -> dict:
        """Matched posts, retweets, other-language posts and opinions in [start_ms, end_ms) (summed
        over the topics: a post matching two topics counts twice), for the counts the dashboard shows."""
        return rollups.totals(self.con, topics, start_ms, end_ms)

    #: "positive" / "negative" order the latest this many posts of the window by polarity
    RANKED_POOL = 5000

    def posts(self, topics: Sequence[str], start_ms: int | None = None, end_ms: int | None = None, order: str = "recent", limit: int = 50,
              *, labels: Sequence[int] | None = None, search: str | None = None, retweets: bool = True, foreign: bool = True, model: str | None = None) -> list[dict]:
        """Posts of the topics in a window, newest first (``order="recent"``), or the most positive /
        negative among the latest ``RANKED_POOL`` of them; optionally only some ``labels`` (0 negative,
        1 neutral, 2 positive), texts containing ``search`` (case-insensitive), without retweets or
        other-language posts, or scored by one ``model``. Each topic is read newest-first along its
        (topic, time) index and the read stops at the limit: no scan of a large store."""
        if order not in ("recent", "positive", "negative"):
            raise ValueError(f"unknown order {order!r}")
        if not topics:
            return []
        cond, args = ["m.topic = ?"], []
        if start_ms is not None:
            cond.append("m.created_ms >= ?")
            args.append(int(start_ms))
        if end_ms is not None:
            cond.append("m.created_ms < ?")
            args.append(int(end_ms))
        if labels is not None:
            cond.append(f"s.label IN ({','.join('?' * len(labels))})" if labels else "1 = 0")
            args += [int(x) for x in labels]
        if search:
            cond.append("instr(lower(p.text), ?) > 0")  # strpos in PostgreSQL (stream.backend)
            args.append(search.lower())
        if not retweets:
            cond.append("p.is_retweet = 0")
        if not foreign:
            cond.append("NOT " + _FOREIGN_SQL)
        if model is not None:
            cond.append("s.model = ?")
            args.append(model)
        n = int(limit) if order == "recent" else max(int(limit), self.RANKED_POOL)
        q = f"""
            SELECT p.id, p.created_ms, p.text, p.author, p.lang, p.is_retweet, p.quoted_text, s.model, s.label, s.p_neg, s.p_neu, s.p_pos, s.polarity
            FROM matches m JOIN posts p ON p.id = m.post_id JOIN scores s ON s.post_id = m.post_id
            WHERE {' AND '.join(cond)} ORDER BY m.created_ms DESC LIMIT ?"""
        found: dict[str, tuple] = {}
        for t in topics:
            for r in self.con.execute(q, [t, *args, n]):
                found.setdefault(r[0], r)
        rows = sorted(found.values(), key=lambda r: -r[1])[:n]
        if order != "recent":
            rows = sorted(rows, key=lambda r: (-r[12] if order == "positive" else r[12], -r[1]))
        rows = rows[: int(limit)]
        tags: dict[str, list[str]] = {}
        ids = [r[0] for r in rows]
        for i in range(0, len(ids), 500):
            chunk = ids[i : i + 500]
            for pid, topic in self.con.execute(f"SELECT post_id, topic FROM matches WHERE post_id IN ({','.join('?' * len(chunk))}) AND topic IN ({','.join('?' * len(topics))})", [*chunk, *topics]):
                tags.setdefault(pid, []).append(topic)
        keys = ("id", "created_ms", "text", "author", "lang", "is_retweet", "quoted_text", "model", "label", "p_neg", "p_neu", "p_pos", "polarity", "topics")
        return [dict(zip(keys, (*r, ",".join(sorted(tags.get(r[0], [])))))) for r in rows]

    # ------------------------------------------------------------------ maintenance
    def retain(self, keep_days: float) -> int:
        """Delete posts older than ``keep_days`` before the newest post (never later than now + 1 day,
        so a post with an implausible future time cannot wipe the store), then VACUUM. Returns the
        number of deleted posts. ``keep_days`` must be a finite number > 0."""
        if isinstance(keep_days, bool) or not isinstance(keep_days, (int, float)) or not math.isfinite(keep_days) or keep_days <= 0:
            raise ValueError(f"keep_days must be a finite number of days > 0, got {keep_days!r}")
        keep_days = min(float(keep_days), 1e6)  # beyond ~2,700 years every post is kept
        row = self.con.execute("SELECT MAX(created_ms) FROM posts").fetchone()
        if row[0] is None:
            return 0
        newest = min(int(row[0]), _now_ms() + 86_400_000)
        cutoff = int(newest - keep_days * 86_400_000)
        with self.transaction() as c:
            n = c.execute("DELETE FROM posts WHERE created_ms < ?", (cutoff,)).rowcount
        if n:
            self.rebuild_rollups()
        self.backend.vacuum(self.con)
        return n
