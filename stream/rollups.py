"""Per-topic time rollups: what every dashboard rerun reads instead of the posts.

Three levels, each a table keyed by (topic, time unit, retweet?, other language?) holding the
post count, the count per class and the sums of polarity and polarity²: minutes, quarter hours and
hours. ``add`` updates all three in the transaction that stores the posts (new posts only, so a
re-delivered post changes nothing); ``aggregates`` answers a bucket size from the coarsest level that
divides it (15-minute buckets over 30 days read 43,000 quarter-hour rows, not 200,000 minutes).
"""
from __future__ import annotations

from typing import Sequence

__all__ = ["LEVELS", "FOREIGN_SQL", "is_foreign", "add", "rebuild", "aggregates", "totals", "polarity_se"]

#: (table, time column, minutes per unit), finest first
LEVELS = (("rollups", "minute", 1), ("rollups_quarter", "quarter", 15), ("rollups_hour", "hour", 60))

#: a post counts as another language when its language is known and is not English ("und":
#: undetermined, as X marks it, counts as unknown)
FOREIGN_SQL = "(p.lang IS NOT NULL AND p.lang NOT IN ('en', 'und'))"

_SUMS = "n, n_neg, n_neu, n_pos, sum_pol, sum_pol2"
#: 0/1 as an integer (PostgreSQL does not sum or store booleans as numbers)
_FOREIGN_INT = f"CASE WHEN {FOREIGN_SQL} THEN 1 ELSE 0 END"


def _count_label(k: int) -> str:
    return f"SUM(CASE WHEN s.label = {k} THEN 1 ELSE 0 END)"


def is_foreign(lang: str | None) -> bool:
    return lang is not None and lang not in ("en", "und")


def table_sql(table: str, unit: str) -> str:
    """CREATE TABLE of one level (the schema migrations use it)."""
    return f"""CREATE TABLE {table} (
        topic TEXT NOT NULL, {unit} INTEGER NOT NULL, rt INTEGER NOT NULL, foreign_lang INTEGER NOT NULL,
        n INTEGER NOT NULL, n_neg INTEGER NOT NULL, n_neu INTEGER NOT NULL, n_pos INTEGER NOT NULL,
        sum_pol REAL NOT NULL, sum_pol2 REAL NOT NULL,
        PRIMARY KEY (topic, {unit}, rt, foreign_lang))"""


def fill_minutes_sql() -> str:
    """INSERT of the minute level computed from the stored posts, scores and matches."""
    return (f"INSERT INTO rollups SELECT m.topic, m.created_ms / 60000, p.is_retweet, {_FOREIGN_INT}, COUNT(*), {_count_label(0)}, {_count_label(1)}, "
            f"{_count_label(2)}, SUM(s.polarity), SUM(s.polarity * s.polarity) FROM matches m JOIN posts p ON p.id = m.post_id "
            f"JOIN scores s ON s.post_id = m.post_id GROUP BY m.topic, m.created_ms / 60000, p.is_retweet, {_FOREIGN_INT}")


def fill_from_minutes_sql(table: str, unit: str, minutes: int) -> str:
    """INSERT of a coarser level summed from the minute rollups."""
    return (f"INSERT INTO {table} SELECT topic, minute / {minutes}, rt, foreign_lang, SUM(n), SUM(n_neg), SUM(n_neu), SUM(n_pos), "
            f"SUM(sum_pol), SUM(sum_pol2) FROM rollups GROUP BY topic, minute / {minutes}, rt, foreign_lang")


def polarity_se(n: int, s1: float, s2: float) -> float | None:
    """Standard error of a bucket's mean polarity, with one pseudo-observation of variance 1 (the
    polarity range is [-1, 1]) so that a bucket of one or two posts is shown as uncertain as it is,
    not as a zero-width band."""
    if not n:
        return None
    var = (max(s2 - s1 * s1 / n, 0.0) + 1.0) / n
    return (var / n) ** 0.5


def add(c, rows) -> None:
    """Add ``(post, label, probabilities, topics)`` of newly stored posts to every level."""
    acc: dict[tuple, list] = {}
    for p, label, pr, ts in rows:
        pol = float(pr[2]) - float(pr[0])
        for t in dict.fromkeys(ts):
            a = acc.setdefault((t, p.created_ms // 60000, int(p.is_retweet), int(is_foreign(p.lang))), [0, 0, 0, 0, 0.0, 0.0])
            a[0] += 1
            a[1 + label] += 1
            a[4] += pol
            a[5] += pol * pol
    for table, unit, minutes in LEVELS:
        level: dict[tuple, list] = acc if minutes == 1 else {}
        if minutes != 1:
            for (t, minute, rt, fo), v in acc.items():
                s = level.setdefault((t, minute // minutes, rt, fo), [0, 0, 0, 0, 0.0, 0.0])
                for i, x in enumerate(v):
                    s[i] += x
        c.executemany(
            f"INSERT INTO {table}(topic, {unit}, rt, foreign_lang, {_SUMS}) VALUES (?,?,?,?,?,?,?,?,?,?) "
            f"ON CONFLICT(topic, {unit}, rt, foreign_lang) DO UPDATE SET " + ", ".join(f"{k} = {table}.{k} + excluded.{k}" for k in _SUMS.split(", ")),
            [(*k, *v) for k, v in level.items()],
        )


def rebuild(c) -> None:
    """Recompute every level from the posts (after retention deleted some)."""
    for table, _, _ in LEVELS:
        c.execute(f"DELETE FROM {table}")
    c.execute(fill_minutes_sql())
    for table, unit, minutes in LEVELS[1:]:
        c.execute(fill_from_minutes_sql(table, unit, minutes))


def _where(topics: Sequence[str], unit: str, lo: int | None, hi: int | None) -> tuple[str, list]:
    where = [f"topic IN ({','.join('?' * len(topics))})"]
    args: list = [*topics]
    if lo is not None:
        where.append(f"{unit} >= ?")
        args.append(lo)
    if hi is not None:
        where.append(f"{unit} < ?")
        args.append(hi)
    return " AND ".join(where), args


def aggregates(con, topics: Sequence[str], bucket_ms: int, start_ms: int | None = None, end_ms: int | None = None, *, retweets: bool = False, foreign: bool = False) -> list[dict]:
    """Per topic and time bucket (a whole number of minutes); see ``Store.aggregates``."""
    if bucket_ms <= 0 or bucket_ms % 60000:
        raise ValueError("bucket_ms must be a positive whole number of minutes")
    if not topics:
        return []

    def fits(minutes: int) -> bool:
        unit_ms = minutes * 60000
        return bucket_ms % unit_ms == 0 and (start_ms is None or start_ms % unit_ms == 0) and (end_ms is None or end_ms % unit_ms == 0)

    table, unit, minutes = next(level for level in reversed(LEVELS) if fits(level[2]))
    unit_ms = minutes * 60000
    bm = bucket_ms // unit_ms
    where, args = _where(topics, unit, None if start_ms is None else int(start_ms) // unit_ms, None if end_ms is None else -(-int(end_ms) // unit_ms))
    opinion = "(rt = 0 OR ? = 1) AND (foreign_lang = 0 OR ? = 1)"
    q = f"""
        SELECT topic, ({unit} / ?) * ? AS bucket, SUM(n), SUM(n * rt), SUM(n * foreign_lang),
               SUM(CASE WHEN {opinion} THEN n ELSE 0 END), SUM(CASE WHEN {opinion} THEN n_neg ELSE 0 END),
               SUM(CASE WHEN {opinion} THEN n_neu ELSE 0 END), SUM(CASE WHEN {opinion} THEN n_pos ELSE 0 END),
               SUM(CASE WHEN {opinion} THEN sum_pol ELSE 0 END), SUM(CASE WHEN {opinion} THEN sum_pol2 ELSE 0 END)
        FROM {table} WHERE {where}
        GROUP BY topic, bucket ORDER BY topic, bucket"""
    flags = [int(retweets), int(foreign)]
    rows = con.execute(q, [bm, bm, *flags * 6, *args]).fetchall()
    out = []
    for t, b, vol, n_rt, n_fo, n, n0, n1, n2, sp, sp2 in rows:  # PostgreSQL sums integers as numeric
        n, sp, sp2 = int(n), float(sp), float(sp2)
        out.append({
            "topic": t, "bucket_ms": int(b) * unit_ms, "volume": int(vol), "retweets": int(n_rt), "foreign": int(n_fo),
            "n": n, "negative": int(n0), "neutral": int(n1), "positive": int(n2),
            "polarity": sp / n if n else None, "polarity_se": polarity_se(n, sp, sp2),
        })
    return out


def totals(con, topics: Sequence[str], start_ms: int | None = None, end_ms: int | None = None) -> dict:
    """Matched posts, retweets, other-language posts and opinions in [start_ms, end_ms); see
    ``Store.totals``. Whole hours come from the hourly level, the partial hours at the edges from the
    minutes."""
    out = {"volume": 0, "retweets": 0, "foreign": 0, "n": 0}
    if not topics:
        return out
    lo_m = None if start_ms is None else int(start_ms) // 60000
    hi_m = None if end_ms is None else -(-int(end_ms) // 60000)
    lo_h = None if lo_m is None else -(-lo_m // 60)  # first whole hour
    hi_h = None if hi_m is None else hi_m // 60  # end of the last whole hour
    if lo_h is not None and hi_h is not None and lo_h >= hi_h:  # no whole hour inside: minutes only
        parts = [("rollups", "minute", lo_m, hi_m)]
    else:
        parts = [("rollups_hour", "hour", lo_h, hi_h)]
        if lo_m is not None:
            parts.append(("rollups", "minute", lo_m, lo_h * 60))
        if hi_m is not None:
            parts.append(("rollups", "minute", hi_h * 60, hi_m))
    for table, unit, a, b in parts:
        if a is not None and b is not None and a >= b:
            continue
        where, args = _where(topics, unit, a, b)
        row = con.execute(f"SELECT COALESCE(SUM(n), 0), COALESCE(SUM(n * rt), 0), COALESCE(SUM(n * foreign_lang), 0), COALESCE(SUM(CASE WHEN rt = 0 AND foreign_lang = 0 THEN n ELSE 0 END), 0) FROM {table} WHERE {where}", args).fetchone()
        for k, v in zip(out, row):
            out[k] += int(v)
    return out
