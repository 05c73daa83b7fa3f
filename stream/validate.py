"""The validation boundary: every source turns its raw fields into a ``Post`` here, or into a ``Skip``.

Nothing else constructs a ``Post`` from outside data. The rules, applied to every source alike:

- **ids**: a non-empty string (at most ``MAX_ID_CHARS``) or an integer; anything else (objects,
  booleans, floats, lists) is ``bad_id`` -- never a Python repr stored as a key.
- **text**: a string, not blank, at most ``MAX_TEXT_CHARS``; made valid UTF-8 (lone surrogates
  and NUL characters become U+FFFD), so no store or driver can fail on it later.
- **creation time** within [``EARLIEST``, ingest time + ``FUTURE_SLACK``]. Recorded files skip a
  post outside it as ``bad_time``. Live sources pass ``observed`` (the server's own time:
  Jetstream's ``time_us``, the time X delivered the post): a claimed time outside the window (or
  unparseable) is replaced by it, and the claim is kept in ``Post.claimed_ms``.
- **author / lang**: strings (ids as integers allowed for authors), cut to ``MAX_FIELD_CHARS``;
  language tags are reduced to their primary subtag (BCP 47 ``en-US`` -> ``en``).
- **quoted text** (a quote post's quoted post): cleaned like text, kept apart from it.
"""
from __future__ import annotations

import datetime as dt
import re
from typing import Any

from .post import MAX_TEXT_CHARS, Post, Skip, parse_time, snowflake_time

__all__ = [
    "EARLIEST",
    "FUTURE_SLACK",
    "MAX_ID_CHARS",
    "MAX_FIELD_CHARS",
    "clean_text",
    "normalize_id",
    "normalize_lang",
    "time_ok",
    "make_post",
]

#: the first post on Twitter (2006-03-21): nothing a source delivers can be older
EARLIEST = dt.datetime(2006, 3, 21, tzinfo=dt.timezone.utc)
#: clock skew tolerated for claimed creation times
FUTURE_SLACK = dt.timedelta(days=1)
MAX_ID_CHARS = 512
MAX_FIELD_CHARS = 256
# lone surrogates (json.loads accepts "\ud800") and NUL (PostgreSQL text cannot hold it)
_BAD_CHARS = re.compile("[\x00\ud800-\udfff]")
_LANG = re.compile(r"[A-Za-z]{2,8}")
#: the prefix of stored ids per source (ids are keys: they never change once stored)
_ID_PREFIX = {"bluesky": "bsky"}


def clean_text(s: str) -> str:
    """``s`` as valid UTF-8 text: lone surrogates and NUL replaced by U+FFFD."""
    return _BAD_CHARS.sub("\ufffd", s)


def normalize_id(value: Any) -> str | None:
    """A source id as text, or None when it is not a usable id (only str and int are)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        v = value.strip()
        if v and len(v) <= MAX_ID_CHARS:
            return clean_text(v)
    return None


def normalize_lang(value: Any) -> str | None:
    """BCP 47 tag -> lower-case primary subtag (``en-US`` -> ``en``); None for anything else.
    X's ``und`` (undetermined) and ``qme``-style codes are kept as they are (3 letters)."""
    if not isinstance(value, str):
        return None
    primary = value.strip().replace("_", "-").split("-", 1)[0]
    return primary.lower() if _LANG.fullmatch(primary) else None


def _field(value: Any) -> str | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        value = str(value)
    if not isinstance(value, str) or not value.strip():
        return None
    return clean_text(value.strip()[:MAX_FIELD_CHARS])


def time_ok(t: dt.datetime, now: dt.datetime) -> bool:
    """Within [EARLIEST, now + FUTURE_SLACK]."""
    return EARLIEST <= t <= now + FUTURE_SLACK


def _claimed_time(created: Any, pid: str, source: str) -> dt.datetime | None:
    if created is None or created == "":
        if source == "x" and pid.isdigit() and len(pid) <= 20:
            return snowflake_time(int(pid))
        return None
    try:
        return parse_time(created)
    except (ValueError, TypeError, OverflowError, OSError):
        return None


def make_post(
    pid: Any,
    text: Any,
    created: Any,
    author: Any = None,
    lang: Any = None,
    source: str = "x",
    *,
    observed: dt.datetime | None = None,
    now: dt.datetime | None = None,
    quoted_text: Any = None,
    is_retweet: bool = False,
) -> Post | Skip:
    """Raw fields -> ``Post`` or ``Skip(reason)``; see the module docstring for the rules.

    ``created``: the claimed creation time (ISO 8601, v1.1, Unix s/ms, or None: then an X id's
    snowflake time); ``observed``: the live server's time for this post (None for recorded files).
    """
    now = now or dt.datetime.now(dt.timezone.utc)
    if pid is None or (isinstance(pid, str) and not pid.strip()):
        return Skip("missing_id")
    sid = normalize_id(pid)
    if sid is None:
        return Skip("bad_id")
    if not isinstance(text, str):
        return Skip("missing_text")
    if not text.strip():
        return Skip("empty_text")
    if len(text) > MAX_TEXT_CHARS:
        return Skip("text_too_long")
    claimed = _claimed_time(created, sid, source)
    claimed_ms = None
    if claimed is not None and time_ok(claimed, now):
        created_at = claimed
    elif observed is not None and time_ok(observed, now):
        created_at = observed
        claimed_ms = _safe_ms(claimed)
    elif claimed is None and (created is None or created == ""):
        return Skip("missing_time")
    else:
        return Skip("bad_time")
    quoted = clean_text(quoted_text[:MAX_TEXT_CHARS]) if isinstance(quoted_text, str) and quoted_text.strip() else None
    return Post(f"{_ID_PREFIX.get(source, source)}:{sid}", created_at, clean_text(text), _field(author), normalize_lang(lang), source, claimed_ms, quoted, bool(is_retweet))


def _safe_ms(t: dt.datetime | None) -> int | None:
    if t is None:
        return None
    ms = int(t.timestamp() * 1000)
    return ms if -(2**62) < ms < 2**62 else None
