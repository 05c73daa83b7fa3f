"""Recorded tweet formats: detection and parsing into Posts (or Skips with a reason).

Supported (``FORMATS``):
    twarc2          twarc2 raw JSONL: search pages (``data`` list + ``includes`` + ``meta``) and stream
                    lines (``data`` object + ``matching_rules``); authors from ``includes.users``
    twarc2-flat     twarc2 flattened JSONL (one tweet per line, expansions inline: ``author``)
    v2              X API v2 tweet objects, one per line (``id``, ``text``, ``created_at`` ISO 8601)
    v1              X API v1.1 JSON lines (``id_str``, ``created_at`` "Wed Oct 10 20:19:24 +0000 2018");
                    ``delete`` / ``limit`` / other control messages are skipped
    csv             CSV with a header; columns recognised by name or mapped explicitly
    semeval         SemEval TSV ``id<TAB>label<TAB>text``; time from the snowflake id
"""
from __future__ import annotations

import csv
import datetime as dt
import io
import json
from typing import Any, Iterator

from .post import Post, Skip
from .validate import make_post

__all__ = ["FORMATS", "UnknownFormat", "detect_format", "parse_json_line", "CsvParser", "parse_semeval_line", "CSV_ALIASES"]

FORMATS = ("twarc2", "twarc2-flat", "v2", "v1", "csv", "semeval")
_SEMEVAL_LABELS = {"positive", "negative", "neutral"}

#: recognised CSV headers (lower-cased) for each Post field
CSV_ALIASES = {
    "id": ("tweet_id", "id", "id_str", "status_id", "tweetid"),
    "text": ("text", "full_text", "tweet", "content", "body", "tweet_text"),
    "time": ("created_at", "tweet_created", "date", "timestamp", "time", "datetime", "created"),
    "author": ("username", "screen_name", "user_screen_name", "author", "user", "name", "user_name"),
    "lang": ("lang", "language"),
}


class UnknownFormat(ValueError):
    """The file's format could not be recognised (or an unknown format was requested)."""


def _v2_text(t: dict) -> Any:
    nt = t.get("note_tweet")
    if isinstance(nt, dict) and isinstance(nt.get("text"), str):
        return nt["text"]
    return t.get("text")


def _v2_tweet(t: Any, users: dict[str, str], observed: dt.datetime | None = None) -> Post | Skip:
    if not isinstance(t, dict):
        return Skip("malformed_record")
    author = None
    a = t.get("author")
    if isinstance(a, dict):
        author = a.get("username")
    elif t.get("author_id") is not None:
        aid = t["author_id"]
        author = users.get(str(aid), aid) if isinstance(aid, (str, int)) else None
    return make_post(t.get("id"), _v2_text(t), t.get("created_at"), author, t.get("lang"), observed=observed)


def _v1_tweet(t: dict) -> Post | Skip:
    text = None
    ext = t.get("extended_tweet")
    if isinstance(ext, dict):
        text = ext.get("full_text")
    if text is None:
        text = t.get("full_text", t.get("text"))
    user = t.get("user") if isinstance(t.get("user"), dict) else {}
    return make_post(t.get("id_str", t.get("id")), text, t.get("created_at"), user.get("screen_name"), t.get("lang"))


def detect_json_kind(obj: Any) -> str | None:
    if not isinstance(obj, dict):
        return None
    data = obj.get("data")
    if isinstance(data, list) and ("meta" in obj or "includes" in obj):
        return "twarc2"
    if isinstance(data, dict):
        return "twarc2"
    if "id_str" in obj or "user" in obj and isinstance(obj.get("user"), dict) or "delete" in obj or "limit" in obj:
        return "v1"
    if "__twarc" in obj or isinstance(obj.get("author"), dict):
        return "twarc2-flat"
    if "id" in obj and ("text" in obj or "note_tweet" in obj):
        return "v2"
    return None


def parse_json_line(line: str, fmt: str, observed: dt.datetime | None = None) -> list[Post | Skip]:
    """One JSONL line -> the posts it holds (a twarc2 search page holds many). ``observed``: the
    time a live source received the line (see stream.validate)."""
    try:
        obj = json.loads(line)
    except (json.JSONDecodeError, RecursionError):
        return [Skip("malformed_json")]
    if not isinstance(obj, dict):
        return [Skip("malformed_record")]
    if fmt == "twarc2":
        data = obj.get("data")
        users = {}
        inc = obj.get("includes")
        if isinstance(inc, dict) and isinstance(inc.get("users"), list):
            users = {str(u.get("id")): u.get("username") for u in inc["users"] if isinstance(u, dict) and isinstance(u.get("id"), (str, int))}
        if isinstance(data, list):
            return [_v2_tweet(t, users, observed) for t in data] or [Skip("empty_page")]
        if isinstance(data, dict):
            return [_v2_tweet(data, users, observed)]
        if "errors" in obj:
            return [Skip("api_error")]
        return [Skip("malformed_record")]
    if fmt in ("twarc2-flat", "v2"):
        return [_v2_tweet(obj, {})]
    if fmt == "v1":
        if "delete" in obj or "limit" in obj or "warning" in obj or "disconnect" in obj or "scrub_geo" in obj:
            return [Skip("control_message")]
        return [_v1_tweet(obj)]
    raise UnknownFormat(f"not a JSON format: {fmt}")


def parse_semeval_line(line: str) -> Post | Skip:
    parts = line.rstrip("\r\n").split("\t")
    if len(parts) < 3:
        return Skip("too_few_fields")
    tid = parts[0].strip()
    if not tid.isdigit():
        return Skip("missing_id")
    text = " ".join(p.strip() for p in parts[2:] if p.strip())
    if text.startswith('"') and text.endswith('"') and len(text) >= 2:
        text = text[1:-1].replace('""', '"')
    return make_post(tid, text, None)


class CsvParser:
    """CSV rows -> Posts, with header recognition (``CSV_ALIASES``) or an explicit mapping.

    ``mapping``: {"id": column, "text": column, "time": column, "author": column, "lang": column};
    ``id`` and ``text`` are required (time falls back to the snowflake id).
    """

    def __init__(self, header: list[str], mapping: dict[str, str] | None = None, source: str = "x"):
        self.header = [h.strip() for h in header]
        lower = {h.lower(): i for i, h in enumerate(self.header)}
        self.cols: dict[str, int] = {}
        for field, names in CSV_ALIASES.items():
            if mapping and field in mapping:
                col = mapping[field]
                if col not in self.header:
                    raise UnknownFormat(f"CSV mapping {field}={col!r}: no such column in {self.header}")
                self.cols[field] = self.header.index(col)
                continue
            for n in names:
                if n in lower:
                    self.cols[field] = lower[n]
                    break
        if "id" not in self.cols or "text" not in self.cols:
            raise UnknownFormat(f"CSV header {self.header}: no id and text columns recognised; map them (--csv-map id=COL,text=COL)")
        self.source = source

    def parse(self, row: list[str]) -> Post | Skip:
        if len(row) != len(self.header):
            return Skip("wrong_field_count")
        get = lambda f: row[self.cols[f]] if f in self.cols else None  # noqa: E731
        return make_post(get("id"), get("text"), get("time"), get("author"), get("lang"), self.source)

    @staticmethod
    def rows(text_lines: Iterator[str]) -> Iterator[list[str]]:
        return csv.reader(text_lines)


def detect_format(first_lines: list[str]) -> str:
    """Guess the format from the first non-empty lines of a file."""
    lines = [l for l in first_lines if l.strip()]
    if not lines:
        raise UnknownFormat("the file is empty")
    head = lines[0].lstrip("\ufeff")
    if head.lstrip().startswith("{"):
        for l in lines:
            try:
                kind = detect_json_kind(json.loads(l))
            except json.JSONDecodeError:
                continue
            if kind:
                return kind
        raise UnknownFormat("JSON lines, but not a known tweet format (twarc2, twarc2 flattened, v2, v1.1)")
    parts = head.split("\t")
    if len(parts) >= 3 and parts[0].strip().isdigit() and parts[1].strip().lower() in _SEMEVAL_LABELS:
        return "semeval"
    try:
        header = next(csv.reader(io.StringIO(head)))
    except csv.Error:
        header = []
    if len(header) >= 2:
        lower = {h.strip().lower() for h in header}
        if any(n in lower for n in CSV_ALIASES["text"]):
            return "csv"
    raise UnknownFormat("unrecognised format: expected twarc2 / v2 / v1.1 JSON lines, CSV with a header, or SemEval TSV")
