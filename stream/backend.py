"""The two database engines behind ``stream.store.Store``: SQLite (the embedded default, a file) and
PostgreSQL (a shared store for several machines and dashboards, ``postgresql://...``).

The store's SQL is written once, in SQLite's dialect restricted to what both engines accept once a
few spellings are rewritten here (``translate``): ``?`` parameters, ``INSERT OR IGNORE`` /
``INSERT OR REPLACE``, ``instr``, 64-bit ``INTEGER`` and double-precision ``REAL`` columns,
``AUTOINCREMENT`` keys and the ``offset`` column (a reserved word in PostgreSQL). Everything else
(``ON CONFLICT ... DO UPDATE``, ``CASE``, integer division, ``COALESCE``) is common SQL.

Writes are serialised per store in both engines: SQLite's ``BEGIN IMMEDIATE`` takes the write lock,
PostgreSQL takes a transaction-scoped advisory lock, so a batch's "which posts are new" read and its
inserts see the same state (exactly-once counting with several writers).
"""
from __future__ import annotations

import functools
import re
import sqlite3
from pathlib import Path
from typing import Any, Sequence
from urllib.parse import urlsplit, urlunsplit

__all__ = ["is_url", "redact", "split_password", "open_backend", "Backend", "translate"]

_URL = re.compile(r"^postgres(ql)?://", re.I)
#: the advisory lock id every writer of a PostgreSQL store takes ("SPul")
_PG_LOCK = 0x5350756C


def is_url(location: str | Path) -> bool:
    """A PostgreSQL URL (``postgresql://`` or ``postgres://``), as opposed to an SQLite file path."""
    return bool(_URL.match(str(location)))


def _with_password(url: str, password: str | None) -> str:
    u = urlsplit(url)
    host = u.netloc.rpartition("@")[2]
    user = (u.username or "") + (f":{password}" if password is not None else "")
    return urlunsplit((u.scheme, f"{user}@{host}" if user else host, u.path, u.query, u.fragment))


def split_password(location: str | Path) -> tuple[str, str | None]:
    """``(location without its password, the password)``: a worker process gets the first on its
    command line and the password in ``PGPASSWORD`` (libpq reads it), so ``ps`` never shows it."""
    s = str(location)
    if not is_url(s) or urlsplit(s).password is None:
        return s, None
    return _with_password(s, None), urlsplit(s).password


def redact(location: str | Path) -> str:
    """``location`` for messages and logs: a URL's password replaced by ``***``."""
    s = str(location)
    return _with_password(s, "***") if is_url(s) and urlsplit(s).password is not None else s


# ---------------------------------------------------------------------------------------- dialect
_OR_IGNORE = re.compile(r"^\s*INSERT OR IGNORE INTO", re.I)
_OR_REPLACE = re.compile(r"^\s*INSERT OR REPLACE INTO\s+(\w+)\s*\(\s*(\w+)\s*,\s*([\w\s,]+)\)", re.I)
_REWRITES = [
    (re.compile(r"\bINTEGER PRIMARY KEY AUTOINCREMENT\b"), "BIGSERIAL PRIMARY KEY"),
    (re.compile(r"\bINTEGER\b"), "BIGINT"),
    (re.compile(r"\bREAL\b"), "DOUBLE PRECISION"),
    (re.compile(r"\binstr\("), "strpos("),
    (re.compile(r"(?<![\w.\"])offset\b"), '"offset"'),
    (re.compile(r"excluded\.offset\b"), 'excluded."offset"'),
]


@functools.lru_cache(maxsize=1024)
def translate(q: str, params: bool = True) -> str:
    """One statement of the store's SQL as PostgreSQL runs it (``params``: it is run with
    parameters, so ``?`` become ``%s`` and a literal ``%`` is doubled)."""
    for pat, rep in _REWRITES:
        q = pat.sub(rep, q)
    m = _OR_REPLACE.match(q)
    if m:  # INSERT OR REPLACE INTO t(key, a, b) ... -> upsert on the first column
        table, key, rest = m.group(1), m.group(2), [c.strip() for c in m.group(3).split(",")]
        sets = ", ".join(f"{c} = EXCLUDED.{c}" for c in rest)
        q = f"INSERT INTO {table}({key}, {', '.join(rest)})" + q[m.end():] + f" ON CONFLICT ({key}) DO UPDATE SET {sets}"
    elif _OR_IGNORE.match(q):
        q = _OR_IGNORE.sub("INSERT INTO", q) + " ON CONFLICT DO NOTHING"
    return q.replace("%", "%%").replace("?", "%s") if params else q


class Backend:
    """What the store needs of an engine: connections, the write-transaction opening, which errors
    are the database's own (worth a retry, never a reason to quarantine posts)."""

    name = ""
    location = ""

    def connect(self, readonly: bool) -> Any:
        raise NotImplementedError

    def begin_write(self, con: Any) -> None:
        raise NotImplementedError

    def transient_errors(self) -> tuple[type[BaseException], ...]:
        raise NotImplementedError

    def errors(self) -> tuple[type[BaseException], ...]:
        raise NotImplementedError

    def vacuum(self, con: Any) -> None:
        con.execute("VACUUM")


class SqliteBackend(Backend):
    name = "sqlite"

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.location = str(self.path)

    def connect(self, readonly: bool) -> sqlite3.Connection:
        if readonly:
            con = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=30, isolation_level=None)
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            con = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            con.execute("PRAGMA journal_mode=WAL")
            con.execute("PRAGMA synchronous=NORMAL")
        con.execute("PRAGMA foreign_keys=ON")
        con.execute("PRAGMA busy_timeout=30000")
        return con

    def begin_write(self, con: sqlite3.Connection) -> None:
        con.execute("BEGIN IMMEDIATE")

    def transient_errors(self) -> tuple[type[BaseException], ...]:
        return (sqlite3.OperationalError,)

    def errors(self) -> tuple[type[BaseException], ...]:
        return (sqlite3.Error,)


class _PgConnection:
    """A psycopg connection that speaks the store's SQL (``translate``), in autocommit mode with
    explicit BEGIN / COMMIT like the SQLite connection."""

    def __init__(self, raw: Any):
        self.raw = raw

    def execute(self, q: str, args: Sequence[Any] = ()) -> Any:
        return self.raw.execute(translate(q, bool(args)), tuple(args) if args else None)

    def executemany(self, q: str, rows: Sequence[Sequence[Any]]) -> Any:
        """Row by row on one prepared statement, pipelined by psycopg (one multi-row INSERT per
        chunk measured slower: 11-12k posts/s against 17.5k, BENCHMARKS.md "Scale-out")."""
        cur = self.raw.cursor()
        rows = list(rows)
        if rows:
            cur.executemany(translate(q), rows)
        return cur

    def close(self) -> None:
        self.raw.close()


class PostgresBackend(Backend):
    name = "postgresql"

    def __init__(self, url: str):
        try:
            import psycopg
        except ImportError:
            raise RuntimeError("a PostgreSQL store needs psycopg: pip install 'sparsepulse[cluster]'") from None
        self._psycopg = psycopg
        self.url = url
        self.location = redact(url)

    def connect(self, readonly: bool) -> _PgConnection:
        opts = "-c default_transaction_read_only=on" if readonly else None
        raw = self._psycopg.connect(self.url, autocommit=True, connect_timeout=30, **({"options": opts} if opts else {}))
        return _PgConnection(raw)

    def begin_write(self, con: _PgConnection) -> None:
        con.raw.execute("BEGIN")
        con.raw.execute("SELECT pg_advisory_xact_lock(%s)", (_PG_LOCK,))

    def transient_errors(self) -> tuple[type[BaseException], ...]:
        p = self._psycopg
        return (p.OperationalError, p.errors.SerializationFailure, p.errors.DeadlockDetected, p.errors.UndefinedTable, p.errors.AdminShutdown)

    def errors(self) -> tuple[type[BaseException], ...]:
        return (self._psycopg.Error,)


def open_backend(location: str | Path) -> Backend:
    """SQLite for a path, PostgreSQL for a ``postgresql://`` URL."""
    return PostgresBackend(str(location)) if is_url(location) else SqliteBackend(location)
