"""Replay of recorded files: format auto-detection, gzip, resume by item offset, pacing, pause."""
from __future__ import annotations

import gzip
import hashlib
import io
import os
import threading
import time
from pathlib import Path
from typing import IO, Iterator

from .formats import FORMATS, CsvParser, UnknownFormat, detect_format, parse_json_line, parse_semeval_line
from .post import Post, Skip

__all__ = ["ReplaySource", "Pacer", "open_text_lines"]

_GZIP_MAGIC = b"\x1f\x8b"
_DETECT_LINES = 20


def _open_binary(path: Path) -> IO[bytes]:
    f = open(path, "rb")
    magic = f.read(2)
    f.seek(0)
    if magic == _GZIP_MAGIC:
        return gzip.GzipFile(fileobj=f)  # type: ignore[return-value]
    return f


def open_text_lines(path: Path) -> Iterator[str]:
    """Lines decoded as UTF-8 with ``surrogateescape``: undecodable bytes survive as lone
    surrogates, so the line can be skipped as ``bad_utf8`` instead of failing the file."""
    with _open_binary(path) as f:
        try:
            for raw in f:
                yield raw.decode("utf-8", "surrogateescape")
        except (EOFError, OSError, gzip.BadGzipFile):
            yield "\udcff<truncated gzip stream>"  # a damaged gzip tail: one bad line, counted


def _has_bad_bytes(s: str) -> bool:
    return any("\udc80" <= ch <= "\udcff" for ch in s)


class Pacer:
    """Real time × ``speed`` following the posts' own timestamps (``speed`` 0 = as fast as possible);
    ``pause()`` / ``resume()`` from any thread."""

    def __init__(self, speed: float = 0.0):
        if speed < 0:
            raise ValueError("speed must be >= 0")
        self.speed = speed
        self._run = threading.Event()
        self._run.set()
        self._t0_post: float | None = None
        self._t0_wall = 0.0
        self._paused_at: float | None = None

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

    def wait(self, post_ts: float, stop: threading.Event | None = None) -> None:
        """Block until the post is due (and while paused)."""
        while not self._run.wait(0.1):
            if stop is not None and stop.is_set():
                return
        if self.speed <= 0:
            return
        if self._t0_post is None:
            self._t0_post, self._t0_wall = post_ts, time.monotonic()
            return
        due = self._t0_wall + max(0.0, post_ts - self._t0_post) / self.speed
        while True:
            delay = due - time.monotonic()
            if delay <= 0 or (stop is not None and stop.is_set()):
                return
            time.sleep(min(delay, 0.1))
            while not self._run.wait(0.1):
                if stop is not None and stop.is_set():
                    return


class ReplaySource:
    """Items of a recorded file, each ``(offset, Post | Skip)``; ``offset`` counts items from 1.

    ``start_after`` resumes after that many items (the offset the store committed).
    The source key identifies the file by path and a hash of its first 64 kB, so a different
    file at the same path does not inherit the old offset.
    """

    def __init__(self, path: str | os.PathLike, fmt: str | None = None, csv_map: dict[str, str] | None = None, speed: float = 0.0):
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"{self.path}: no such file")
        if fmt is not None and fmt not in FORMATS:
            raise UnknownFormat(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
        self.fmt = fmt or self._detect()
        self.csv_map = csv_map
        self.pacer = Pacer(speed)
        with _open_binary(self.path) as f:
            try:
                head = f.read(65536)
            except (EOFError, OSError):
                head = b""
        self.key = f"file:{self.path.resolve()}:{hashlib.sha1(head).hexdigest()[:12]}"
        self.name = self.path.name

    def _detect(self) -> str:
        lines = []
        for line in open_text_lines(self.path):
            if line.strip():
                lines.append(line)
            if len(lines) >= _DETECT_LINES:
                break
        return detect_format(lines)

    def _items(self) -> Iterator[Post | Skip]:
        lines = open_text_lines(self.path)
        if self.fmt == "csv":
            header_line = next((l for l in lines if l.strip()), None)
            if header_line is None:
                return
            import csv

            parser = CsvParser(next(csv.reader([header_line.lstrip("\ufeff")])), self.csv_map)
            try:
                for row in csv.reader(lines):
                    if not row:
                        continue
                    if any(_has_bad_bytes(c) for c in row):
                        yield Skip("bad_utf8")
                    else:
                        yield parser.parse(row)
            except csv.Error:
                yield Skip("malformed_csv")
            return
        for line in lines:
            if not line.strip():
                continue
            if _has_bad_bytes(line):
                yield Skip("bad_utf8")
            elif self.fmt == "semeval":
                yield parse_semeval_line(line)
            else:
                yield from parse_json_line(line, self.fmt)

    def items(self, start_after: int = 0, stop: threading.Event | None = None) -> Iterator[tuple[int, Post | Skip]]:
        for offset, item in enumerate(self._items(), start=1):
            if stop is not None and stop.is_set():
                return
            if offset <= start_after:
                continue
            if isinstance(item, Post):
                self.pacer.wait(item.created_at.timestamp(), stop)
            yield offset, item
