"""``Post``: the unit that flows from sources through the tracker and scorer into the store."""
from __future__ import annotations

import dataclasses
import datetime as dt
import re

__all__ = ["Post", "Skip", "parse_time", "snowflake_time", "MAX_TEXT_CHARS"]

#: longer texts are skipped ("text_too_long"): X allows 25,000 characters in a long post.
MAX_TEXT_CHARS = 30_000
_TWITTER_EPOCH_MS = 1288834974657


@dataclasses.dataclass(frozen=True, slots=True)
class Post:
    id: str  # source-scoped, e.g. "x:1234" or "bsky:at://did:plc:.../app.bsky.feed.post/3k..."
    created_at: dt.datetime  # timezone-aware UTC
    text: str
    author: str | None = None
    lang: str | None = None
    source: str = "x"
    #: the source's own creation time when it was implausible and ``created_at`` is the time the
    #: live server observed the post instead (see stream.validate); None otherwise
    claimed_ms: int | None = None
    #: the text of the post this one quotes (matched by topics, as X does; never scored: sentiment is
    #: the post's own words)
    quoted_text: str | None = None
    #: a native retweet / repost: ``text`` is the original's full text, prefixed "RT @author: "
    is_retweet: bool = False

    @property
    def created_ms(self) -> int:
        return int(self.created_at.timestamp() * 1000)

    def with_lang(self, lang: str | None) -> "Post":
        """This post with ``lang`` set (what dataclasses.replace does, at a third of its cost: the pipeline's
        reader calls it for every post whose source gave no language)."""
        return Post(self.id, self.created_at, self.text, self.author, lang, self.source, self.claimed_ms, self.quoted_text, self.is_retweet)


@dataclasses.dataclass(frozen=True, slots=True)
class Skip:
    """An input item that could not become a Post, with the reason (counted, never fatal)."""

    reason: str


def snowflake_time(tweet_id: int) -> dt.datetime:
    """Creation time encoded in a Twitter/X snowflake id (ids after November 2010)."""
    return dt.datetime.fromtimestamp(((int(tweet_id) >> 22) + _TWITTER_EPOCH_MS) / 1000, dt.timezone.utc)


_V1_FORMAT = "%a %b %d %H:%M:%S %z %Y"  # Wed Oct 10 20:19:24 +0000 2018
_NUM_RE = re.compile(r"^\d{9,13}(\.\d+)?$")


def parse_time(value) -> dt.datetime:
    """Parse the creation times found in tweet archives into aware UTC datetimes.

    ISO 8601 (``2018-10-10T20:19:24.000Z``), v1.1 (``Wed Oct 10 20:19:24 +0000 2018``),
    ``2015-02-24 11:35:52 -0800``, Unix seconds or milliseconds. Naive times are taken as UTC.
    Raises ValueError otherwise.
    """
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        v = float(value)
        return dt.datetime.fromtimestamp(v / 1000 if v > 1e11 else v, dt.timezone.utc)
    if not isinstance(value, str) or not value.strip():
        raise ValueError("empty time")
    s = value.strip()
    if _NUM_RE.match(s):
        return parse_time(float(s))
    try:
        t = dt.datetime.strptime(s, _V1_FORMAT)
    except ValueError:
        iso = s.replace("Z", "+00:00")
        if re.search(r" [+-]\d{4}$", iso):  # "2015-02-24 11:35:52 -0800"
            iso = iso[:-5].rstrip() + iso[-5:-2] + ":" + iso[-2:]
        t = dt.datetime.fromisoformat(iso)
    if t.tzinfo is None:
        t = t.replace(tzinfo=dt.timezone.utc)
    return t.astimezone(dt.timezone.utc)
