"""Replay of recorded files: format auto-detection, gzip, resume by item offset, pacing, pause."""
from __future__ import annotations

import collections
import csv
import gzip
import hashlib
import os
import re
import threading
import time
import zlib
from pathlib import Path
from typing import IO, Iterator

from .formats import FORMATS, CsvParser, UnknownFormat, detect_format, parse_json_line, parse_semeval_line
from .post import Post, Skip

__all__ = ["ReplaySource", "Pacer", "read_lines", "csv_records", "MAX_LINE_BYTES"]

_GZIP_MAGIC = b"\x1f\x8b"
_DETECT_LINES = 20
_BLOCK = 1 << 20
#: a line longer than this (bytes) is skipped as ``line_too_long`` while it is read: never held whole
MAX_LINE_BYTES = 8 << 20
#: an unterminated CSV quote is given up (``bad_quote``, one row) after this many lines or characters
CSV_LOOKAHEAD_LINES = 100
CSV_LOOKAHEAD_CHARS = 1 << 16
# whole blank lines after a line end: skipped in one regex step (a file of blank lines is cheap)
_BLANK_LINES = re.compile(rb"(?:[ \t\r]*\n)*")


class _Marker(str):
    """A reading event that is not a line (too long, damaged tail): becomes a Skip of that reason."""


LINE_TOO_LONG = _Marker("line_too_long")
DAMAGED_FILE = _Marker("damaged_file")


def _open_binary(path: Path) -> IO[bytes]:
    f = open(path, "rb")
    magic = f.read(2)
    f.seek(0)
    if magic == _GZIP_MAGIC:
        return gzip.GzipFile(fileobj=f)  # type: ignore[return-value]
    return f


def is_compressed(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(2) == _GZIP_MAGIC


def line_boundaries(path: Path, every: int) -> list[int]:
    """Byte offsets that split an uncompressed file into ranges of about ``every`` bytes, each
    starting on a line start: ``[0, b1, ..., size]`` (a backfill's shards)."""
    if every <= 0:
        raise ValueError("every must be positive")
    size = path.stat().st_size
    out = [0]
    with open(path, "rb") as f:
        while out[-1] + every < size:
            pos = out[-1] + every
            f.seek(pos)
            while True:  # on to the end of the line the cut falls in
                block = f.read(_BLOCK)
                nl = block.find(b"\n")
                if nl >= 0:
                    pos += nl + 1
                    break
                if not block:
                    pos = size
                    break
                pos += len(block)
            if pos >= size:
                break
            out.append(pos)
    out.append(size)
    return out


def read_lines(f: IO[bytes], max_line: int = MAX_LINE_BYTES) -> Iterator[bytes | _Marker]:
    """Non-blank lines of a binary stream, without their line ends; memory stays under
    ``max_line`` + one block whatever the input. A longer line yields ``LINE_TOO_LONG`` once and is
    discarded as it streams past; a damaged compressed tail yields ``DAMAGED_FILE`` and ends."""
    buf = b""
    skipping = False  # inside a too-long line: discard up to its newline
    while True:
        try:
            block = f.read1(_BLOCK)
        except (EOFError, OSError, zlib.error):  # gzip.BadGzipFile is an OSError
            yield DAMAGED_FILE
            return
        if not block:
            break
        buf = buf + block if buf else block
        pos = 0
        while True:
            nl = buf.find(b"\n", pos)
            if nl < 0:
                break
            if skipping:
                skipping = False
            elif nl - pos > max_line:
                yield LINE_TOO_LONG
            else:
                line = buf[pos:nl].rstrip(b"\r")
                if line.strip():
                    yield line
            pos = _BLANK_LINES.match(buf, nl + 1).end()
        buf = buf[pos:]
        if len(buf) > max_line:
            if not skipping:
                yield LINE_TOO_LONG
            skipping, buf = True, b""
    if buf.strip() and not skipping:
        yield buf.rstrip(b"\r")


def _decoded(raw: Iterator[bytes | _Marker]) -> Iterator[str | _Marker | None]:
    """UTF-8 lines; None for a line that is not valid UTF-8 (``bad_utf8``); markers pass through."""
    for line in raw:
        if isinstance(line, _Marker):
            yield line
            continue
        try:
            yield line.decode("utf-8")
        except UnicodeDecodeError:
            yield None


def _in_quote_after(line: str, in_quote: bool) -> bool:
    """Whether a CSV (excel dialect) line ends inside a quoted field, given the state it starts in."""
    if not in_quote and '"' not in line:
        return False
    i, n, at_start = 0, len(line), not in_quote
    while i < n:
        if in_quote:
            j = line.find('"', i)
            if j < 0:
                return True
            if j + 1 < n and line[j + 1] == '"':
                i = j + 2
                continue
            in_quote, at_start, i = False, False, j + 1
        elif at_start and line[i] == '"':
            in_quote, at_start, i = True, False, i + 1
        else:
            j = line.find(",", i)
            if j < 0:
                return False
            i, at_start = j + 1, True
    return in_quote


def csv_records(lines: Iterator[str | _Marker | None]) -> Iterator[str | Skip]:
    """Group physical lines into CSV records (quoted fields may span lines), with bounded lookahead:
    a quote still open after ``CSV_LOOKAHEAD_LINES`` lines or ``CSV_LOOKAHEAD_CHARS`` characters costs
    its first line (``bad_quote``) and reading restarts on the next line. One bad row never swallows
    the rows after it."""
    it = iter(lines)
    back: collections.deque = collections.deque()
    pending: list[str] = []
    size = 0
    while True:
        if back:
            line = back.popleft()
        else:
            line = next(it, _EOF)
            if line is _EOF:
                break
        if line is None or isinstance(line, _Marker):
            if pending:  # a broken line inside an open quote: the record cannot be trusted
                yield Skip("bad_quote")
                back.extendleft(reversed(pending[1:]))
                pending, size = [], 0
            yield Skip("bad_utf8" if line is None else str(line))
            continue
        pending.append(line)
        size += len(line)
        if not _in_quote_after(line, len(pending) > 1):
            yield "\n".join(pending)
            pending, size = [], 0
        elif len(pending) > CSV_LOOKAHEAD_LINES or size > CSV_LOOKAHEAD_CHARS:
            yield Skip("bad_quote")
            back.extendleft(reversed(pending[1:]))
            pending, size = [], 0
    if pending:
        yield Skip("bad_quote")
        rest = pending[1:]
        yield from csv_records(iter(rest))


_EOF = object()


class Pacer:
    """Real time × ``speed`` following the posts' own timestamps (``speed`` 0 = as fast as possible);
    ``pause()`` / ``resume()`` from any thread.

    ``max_idle`` (seconds, 0 = off) caps the wall time spent waiting for one post: a recorded stream
    with a gap of days (the SemEval file jumps 9 days) is not replayed as minutes of silence; the
    skipped span of post time is kept in ``skipped`` (and shown on the dashboard's charts).
    ``max_rate`` (posts per second, 0 = off) spreads a burst out: no two posts closer than
    ``1 / max_rate`` seconds of wall time; the replay clock slows down through the burst (it never
    runs ahead of the posts already released). With both caps a bursty recording plays at a steady,
    watchable pace (the demo: a day per minute, gaps of at most 5 s, at most 15 posts/s).
    ``clock()`` is the replay's current post time; ``next_due`` the post time being waited for.
    """

    def __init__(self, speed: float = 0.0, max_idle: float = 0.0, max_rate: float = 0.0):
        if not (speed >= 0 and max_idle >= 0 and max_rate >= 0):  # NaN fails too
            raise ValueError("speed, max_idle and max_rate must be >= 0")
        self.speed = speed
        self.max_idle = max_idle
        self.max_rate = max_rate
        self._last_emit: float | None = None  # wall time the last post was released
        self.wait_started: float | None = None  # wall time the wait for ``next_due`` began
        self._run = threading.Event()
        self._run.set()
        self._t0_post: float | None = None
        self._t0_wall = 0.0
        self._paused_at: float | None = None
        self.skipped: list[tuple[float, float]] = []  # (from, to) post times, seconds
        self.next_due: float | None = None
        self._last_post: float | None = None

    def pause(self) -> None:
        if self._run.is_set():
            self._paused_at = time.monotonic()
            self._run.clear()

    def resume(self) -> None:
        if not self._run.is_set():
            if self._paused_at is not None:
                self._t0_wall += time.monotonic() - self._paused_at  # the pause does not count
            self._paused_at = None
            self._run.set()

    @property
    def paused(self) -> bool:
        return not self._run.is_set()

    def clock(self) -> float | None:
        """The replay's post-time clock (seconds): where the replay stands, also while it waits."""
        if self._t0_post is None or self.speed <= 0:
            return self._last_post
        now = self._paused_at if self._paused_at is not None else time.monotonic()
        t = self._t0_post + (now - self._t0_wall) * self.speed
        if self.next_due is None:
            return t
        return min(t, self.next_due if self._last_post is None else max(self.next_due, self._last_post))

    def wait(self, post_ts: float, stop: threading.Event | None = None) -> None:
        """Block until the post is due (and while paused)."""
        while not self._run.wait(0.1):
            if stop is not None and stop.is_set():
                return
        if self.speed <= 0 and self.max_rate <= 0:
            self._last_post = post_ts if self._last_post is None else max(post_ts, self._last_post)
            return
        now = time.monotonic()
        if self._t0_post is None:
            self._t0_post, self._t0_wall = post_ts, now
            self._last_post, self._last_emit = post_ts, now
            return
        if self.speed > 0:
            due = self._t0_wall + max(0.0, post_ts - self._t0_post) / self.speed
            delay = due - now
            if self.max_idle > 0 and delay > self.max_idle:
                jump = delay - self.max_idle  # wall seconds not waited
                start = self.clock() or post_ts
                self._t0_wall -= jump
                self.skipped.append((start + self.max_idle * self.speed, post_ts))
                due -= jump
        else:
            due = now
        throttled = False
        if self.max_rate > 0 and self._last_emit is not None and due < self._last_emit + 1.0 / self.max_rate:
            due, throttled = self._last_emit + 1.0 / self.max_rate, True
        self.next_due, self.wait_started = post_ts, time.monotonic()
        try:
            while True:
                delay = due - time.monotonic()
                if delay <= 0 or (stop is not None and stop.is_set()):
                    return
                time.sleep(min(delay, 0.1))
                while not self._run.wait(0.1):
                    if stop is not None and stop.is_set():
                        return
        finally:
            self.next_due = self.wait_started = None
            hi = post_ts if self._last_post is None else max(post_ts, self._last_post)
            self._last_post, self._last_emit = hi, time.monotonic()
            if throttled and self.speed > 0:  # the burst held the clock back: go on from here
                self._t0_post, self._t0_wall = hi, self._last_emit


class _ByteRange:
    """``read1`` over bytes [start, end) of an uncompressed file (a backfill shard)."""

    def __init__(self, f: IO[bytes], start: int, end: int):
        self.f, self.left = f, end - start
        f.seek(start)

    def read1(self, n: int = -1) -> bytes:
        if self.left <= 0:
            return b""
        b = self.f.read1(min(n if n > 0 else self.left, self.left))
        self.left -= len(b)
        return b

    def __enter__(self) -> "_ByteRange":
        return self

    def __exit__(self, *exc) -> None:
        self.f.close()


class ReplaySource:
    """Items of a recorded file, each ``(offset, Post | Skip)``; ``offset`` counts items from 1.

    ``start_after`` resumes after that many items (the offset the store committed).
    The source key identifies the file by path and a hash of its first 64 kB, so a different
    file at the same path does not inherit the old offset.

    ``byte_range=(start, end)``: only the lines in bytes [start, end) of an uncompressed file in a
    line-per-item format (a backfill shard; ``start`` and ``end`` on line starts); the range is part
    of the key, so every shard keeps its own offset.
    """

    def __init__(self, path: str | os.PathLike, fmt: str | None = None, csv_map: dict[str, str] | None = None, speed: float = 0.0, max_idle: float = 0.0, max_rate: float = 0.0,
                 byte_range: tuple[int, int] | None = None):
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"{self.path}: no such file")
        if fmt is not None and fmt not in FORMATS:
            raise UnknownFormat(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
        self.fmt = fmt or self._detect()
        self.byte_range = byte_range
        if byte_range is not None:
            if self.fmt not in self._LINE_PER_ITEM or is_compressed(self.path):
                raise ValueError(f"{self.path}: a byte range needs an uncompressed file with one item per line (format {self.fmt})")
            if not 0 <= byte_range[0] <= byte_range[1]:
                raise ValueError(f"bad byte range {byte_range}")
        self.csv_map = csv_map
        self.pacer = Pacer(speed, max_idle, max_rate)
        with _open_binary(self.path) as f:
            try:
                head = f.read(65536)
            except (EOFError, OSError):
                head = b""
        self.key = f"file:{self.path.resolve()}:{hashlib.sha1(head).hexdigest()[:12]}"
        self.name = self.path.name
        if byte_range is not None:
            self.key += f"#bytes={byte_range[0]}-{byte_range[1]}"
            self.name += f" [{byte_range[0]:,}-{byte_range[1]:,})"

    def _detect(self) -> str:
        lines = []
        with _open_binary(self.path) as f:
            for line in _decoded(read_lines(f)):
                if isinstance(line, str) and not isinstance(line, _Marker):
                    lines.append(line)
                if len(lines) >= _DETECT_LINES:
                    break
        return detect_format(lines)

    #: formats whose every non-blank line is exactly one item (so a resume can skip lines unparsed)
    _LINE_PER_ITEM = ("twarc2-flat", "v2", "v1", "semeval")

    def _items(self, skip: int = 0) -> Iterator[Post | Skip | None]:
        """The file's items in order; with ``skip``, the first ``skip`` items may come as None
        without being parsed (line-per-item formats: a resume does not re-parse what it skips)."""
        with (_ByteRange(open(self.path, "rb"), *self.byte_range) if self.byte_range else _open_binary(self.path)) as f:
            raw = read_lines(f)
            if self.fmt in self._LINE_PER_ITEM:
                for _ in range(skip):
                    if next(raw, None) is None:
                        return
                    yield None
            lines = _decoded(raw)
            if self.fmt == "csv":
                yield from self._csv_items(lines)
                return
            for line in lines:
                if line is None:
                    yield Skip("bad_utf8")
                elif isinstance(line, _Marker):
                    yield Skip(str(line))
                elif self.fmt == "semeval":
                    yield parse_semeval_line(line)
                else:
                    yield from parse_json_line(line, self.fmt)

    def _csv_items(self, lines) -> Iterator[Post | Skip]:
        parser = None
        for rec in csv_records(lines):
            if isinstance(rec, Skip):
                yield rec
                continue
            try:
                row = next(csv.reader([rec]))
            except csv.Error as e:  # one record only: reading goes on with the next
                yield Skip("field_too_long" if "field limit" in str(e) else "malformed_csv")
                continue
            except StopIteration:
                continue
            if parser is None:  # the header: the first record
                if row:
                    row[0] = row[0].lstrip("\ufeff")
                parser = CsvParser(row, self.csv_map)
                continue
            yield parser.parse(row)

    def items(self, start_after: int = 0, stop: threading.Event | None = None) -> Iterator[tuple[int, Post | Skip]]:
        for offset, item in enumerate(self._items(skip=start_after), start=1):
            if stop is not None and stop.is_set():
                return
            if offset <= start_after:
                continue
            if isinstance(item, Post):
                self.pacer.wait(item.created_at.timestamp(), stop)
            yield offset, item
