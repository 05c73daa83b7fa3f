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
import re
from typing import Any, Iterator

from .post import Post, Skip
from .validate import make_post

__all__ = ["FORMATS", "UnknownFormat", "detect_format", "parse_json_line", "CsvParser", "parse_semeval_line", "CSV_ALIASES", "NOT_TWEETS", "SEMEVAL_TEST_FILE", "semeval_test_file"]

FORMATS = ("twarc2", "twarc2-flat", "v2", "v1", "csv", "semeval")
#: the SemEval-2017 4A test file under the data root (the demo replay, the benchmarks' tweets);
#: compression/data.py reads the same file for training-side evaluation (a test keeps the two equal)
SEMEVAL_TEST_FILE = "semeval2017-task4a/test/SemEval2017-task4-test.subtask-A.english.txt"


def semeval_test_file(data_root: str | None = None):
    """The SemEval-2017 test file: under ``data_root``, else ``$SPARSEPULSE_DATA``, else ../shared/data
    beside the repository. The path is returned whether or not the file exists."""
    import os
    from pathlib import Path

    root = data_root or os.environ.get("SPARSEPULSE_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data"
    return Path(root) / SEMEVAL_TEST_FILE
_SEMEVAL_LABELS = {"positive", "negative", "neutral"}

#: recognised CSV headers (lower-cased) for each Post field
CSV_ALIASES = {
    "id": ("tweet_id", "id", "id_str", "status_id", "tweetid"),
    "text": ("text", "full_text", "tweet", "content", "body", "tweet_text"),
    "time": ("created_at", "tweet_created", "date", "timestamp", "time", "datetime", "created"),
    "author": ("username", "author.username", "screen_name", "user_screen_name", "user.screen_name", "author", "user", "name", "user_name"),
    "lang": ("lang", "language"),
}


_TWARC_CSV_CHARS = {"\\n": "\n", "\\t": "\t", "\\r": "\r"}
_TWARC_CSV_ESCAPES = re.compile(r"\\[ntr]")


class UnknownFormat(ValueError):
    """The file's format could not be recognised (or an unknown format was requested)."""


def _v2_text(t: dict) -> Any:
    nt = t.get("note_tweet")
    if isinstance(nt, dict) and isinstance(nt.get("text"), str):
        return nt["text"]
    return t.get("text")


def _v2_author(t: dict, users: dict[str, str]) -> Any:
    a = t.get("author")
    if isinstance(a, dict):
        return a.get("username")
    aid = t.get("author_id")
    if isinstance(aid, (str, int)) and not isinstance(aid, bool):
        return users.get(str(aid), aid)
    return None


def _v2_references(t: dict, included: dict[str, dict]) -> tuple[dict | None, dict | None, bool]:
    """(retweeted original, quoted tweet, is a retweet) of a v2 tweet. The referenced tweets come
    inline (twarc2 flattened: ``referenced_tweets[]`` carry their text) or from the page's
    ``includes.tweets`` by id (twarc2 raw, X's filtered stream with the referenced_tweets.id
    expansion); a reference whose tweet is in neither stays None."""
    rt = qt = None
    is_rt = False
    refs = t.get("referenced_tweets")
    if not isinstance(refs, list):
        return None, None, False
    for r in refs:
        if not isinstance(r, dict):
            continue
        inline = r if (isinstance(r.get("text"), str) or isinstance(r.get("note_tweet"), dict)) else None
        obj = inline or (included.get(str(r.get("id"))) if isinstance(r.get("id"), (str, int)) else None)
        if r.get("type") == "retweeted":
            is_rt, rt = True, obj
        elif r.get("type") == "quoted":
            qt = obj
    return rt, qt, is_rt


def _retweet_text(own: Any, original_text: Any, original_author: Any) -> Any:
    """X truncates a retweet's own text ("RT @a: … …"); the original's full text replaces it,
    in the same shape."""
    if not isinstance(original_text, str):
        return own
    return f"RT @{original_author}: {original_text}" if isinstance(original_author, str) and original_author else original_text


def _v2_tweet(t: Any, users: dict[str, str], observed: dt.datetime | None = None, included: dict[str, dict] | None = None) -> Post | Skip:
    if not isinstance(t, dict):
        return Skip("malformed_record")
    rt, qt, is_rt = _v2_references(t, included or {})
    text = _v2_text(t)
    if is_rt and rt is not None:
        text = _retweet_text(text, _v2_text(rt), _v2_author(rt, users))
    quoted = _v2_text(qt) if qt is not None else None
    return make_post(t.get("id"), text, t.get("created_at"), _v2_author(t, users), t.get("lang"), observed=observed, quoted_text=quoted, is_retweet=is_rt)


def _v1_text(t: dict) -> Any:
    ext = t.get("extended_tweet")
    if isinstance(ext, dict) and isinstance(ext.get("full_text"), str):
        return ext["full_text"]
    return t.get("full_text", t.get("text"))


def _v1_user(t: dict) -> Any:
    user = t.get("user")
    return user.get("screen_name") if isinstance(user, dict) else None


def _v1_tweet(t: dict) -> Post | Skip:
    text = _v1_text(t)
    rs, qs = t.get("retweeted_status"), t.get("quoted_status")
    is_rt = isinstance(rs, dict)
    if is_rt:
        text = _retweet_text(text, _v1_text(rs), _v1_user(rs))
    quoted = _v1_text(qs) if isinstance(qs, dict) else None
    return make_post(t.get("id_str", t.get("id")), text, t.get("created_at"), _v1_user(t), t.get("lang"), quoted_text=quoted, is_retweet=is_rt)


#: twarc2 outputs that hold no tweets, and what they are (refused with a clear message)
NOT_TWEETS = {
    "counts": "a twarc2 counts file (tweet counts per time bucket)",
    "users": "a twarc2 users file (user profiles)",
    "lists": "a twarc2 lists file (list metadata)",
    "compliance": "an X compliance file (deleted / protected ids)",
    "empty": "empty JSON objects",
}


def _non_tweet_kind(obj: dict) -> str | None:
    """The kind of a twarc2 output line that holds no tweets, or None."""
    if not obj:
        return "empty"
    data = obj.get("data")
    items = data if isinstance(data, list) else ([data] if isinstance(data, dict) else [obj])
    items = [x for x in items if isinstance(x, dict)]
    if not items or any("text" in x or "note_tweet" in x for x in items):
        return None
    x = items[0]
    if "tweet_count" in x:
        return "counts"
    if "username" in x:
        return "users"
    if "name" in x and ({"owner_id", "follower_count", "member_count", "private"} & set(x)):
        return "lists"
    if "action" in x and ({"redacted_at", "reason"} & set(x)):
        return "compliance"
    return None


def detect_json_kind(obj: Any) -> str | None:
    if not isinstance(obj, dict):
        return None
    if _non_tweet_kind(obj):
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
        users: dict[str, str] = {}
        included: dict[str, dict] = {}
        inc = obj.get("includes")
        if isinstance(inc, dict) and isinstance(inc.get("users"), list):
            users = {str(u.get("id")): u.get("username") for u in inc["users"] if isinstance(u, dict) and isinstance(u.get("id"), (str, int))}
        if isinstance(inc, dict) and isinstance(inc.get("tweets"), list):  # referenced tweets (retweeted, quoted)
            included = {str(x.get("id")): x for x in inc["tweets"] if isinstance(x, dict) and isinstance(x.get("id"), (str, int))}
        if isinstance(data, list):
            return [_v2_tweet(t, users, observed, included) for t in data] or [Skip("empty_page")]
        if isinstance(data, dict):
            return [_v2_tweet(data, users, observed, included)]
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
        # twarc-csv writes a tweet's newlines and tabs as the two characters \n and \t: decode them in
        # its files (recognised by its column names) so that words after a line break match
        self.decode_escapes = any(h.startswith("__twarc.") or h in ("author.username", "public_metrics.retweet_count") for h in self.header)

    def parse(self, row: list[str]) -> Post | Skip:
        if len(row) != len(self.header):
            return Skip("wrong_field_count")
        get = lambda f: row[self.cols[f]] if f in self.cols else None  # noqa: E731
        text = get("text")
        if self.decode_escapes and text:
            text = _TWARC_CSV_ESCAPES.sub(lambda m: _TWARC_CSV_CHARS[m.group(0)], text)
        return make_post(get("id"), text, get("time"), get("author"), get("lang"), self.source)

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
        non_tweet = None
        for l in lines:
            try:
                obj = json.loads(l)
            except (json.JSONDecodeError, RecursionError):
                continue
            kind = detect_json_kind(obj)
            if kind:
                return kind
            if isinstance(obj, dict):
                non_tweet = non_tweet or _non_tweet_kind(obj)
        if non_tweet:
            raise UnknownFormat(f"this is {NOT_TWEETS[non_tweet]}, not tweets: nothing to replay (give a file of tweets: twarc2, v2, v1.1 JSON lines, CSV or SemEval TSV)")
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
