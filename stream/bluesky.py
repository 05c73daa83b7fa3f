"""Live Bluesky posts through Jetstream (JSON over websockets), resumable by cursor.

Jetstream (github.com/bluesky-social/jetstream) streams repository commits as JSON:
``{"did", "time_us", "kind": "commit", "commit": {"operation": "create", "collection":
"app.bsky.feed.post", "rkey", "record": {"text", "createdAt", "langs"}}}``. We subscribe with
``wantedCollections=app.bsky.feed.post``; keyword matching is client-side (the Tracker). The
offset of each item is its ``time_us``: a restart resumes from the stored cursor minus a few
seconds (re-delivered posts are de-duplicated by id in the store).
"""
from __future__ import annotations

import datetime as dt
import json
import logging
import threading
import urllib.parse
from typing import Iterator

from .post import Post, Skip
from .validate import make_post, time_ok

__all__ = ["BlueskySource", "parse_jetstream", "DEFAULT_JETSTREAM"]

log = logging.getLogger("sparsepulse.bluesky")
DEFAULT_JETSTREAM = "wss://jetstream2.us-east.bsky.network/subscribe"
_REWIND_US = 5_000_000  # resume 5 s early: at-least-once, duplicates dropped by the store


def parse_jetstream(raw: str | bytes) -> tuple[int | None, Post | Skip | None]:
    """One Jetstream message -> (time_us, Post | Skip | None). None: an event that is not a post
    creation (identity, account, delete, ...), ignored without counting."""
    try:
        msg = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
        return None, Skip("malformed_json")
    if not isinstance(msg, dict):
        return None, Skip("malformed_record")
    t_us = msg.get("time_us")
    t_us = int(t_us) if isinstance(t_us, int) and not isinstance(t_us, bool) else None
    if t_us is not None and _observed(t_us) is None:
        t_us = None  # an implausible server time never becomes the resume cursor
    commit = msg.get("commit")
    if msg.get("kind") != "commit" or not isinstance(commit, dict):
        return t_us, None
    if commit.get("operation") != "create" or commit.get("collection") != "app.bsky.feed.post":
        return t_us, None
    rec = commit.get("record")
    did, rkey = msg.get("did"), commit.get("rkey")
    if not isinstance(rec, dict) or not isinstance(did, str) or not isinstance(rkey, str) or not did or not rkey:
        return t_us, Skip("malformed_record")
    observed = _observed(t_us)
    langs = rec.get("langs")
    lang = langs[0] if isinstance(langs, list) and langs else None
    post = make_post(f"at://{did}/app.bsky.feed.post/{rkey}", rec.get("text"), rec.get("createdAt") or None, did, lang, "bluesky", observed=observed)
    return t_us, post


def _observed(t_us: int | None) -> dt.datetime | None:
    """Jetstream's server time of an event (``time_us``), when it is a usable time."""
    if t_us is None:
        return None
    try:
        t = dt.datetime.fromtimestamp(t_us / 1e6, dt.timezone.utc)
    except (OverflowError, OSError, ValueError):
        return None
    return t if time_ok(t, dt.datetime.now(dt.timezone.utc)) else None


class BlueskySource:
    """``items(start_after=cursor_us)`` yields ``(time_us, Post | Skip)`` until ``stop`` is set.

    Reconnects with exponential backoff (``backoff_s`` doubling up to ``max_backoff_s``), resuming
    from the last cursor it saw."""

    name = "bluesky"

    def __init__(self, url: str = DEFAULT_JETSTREAM, *, backoff_s: float = 1.0, max_backoff_s: float = 60.0, open_timeout: float = 10.0):
        self.url = url
        self.key = f"bluesky:{urllib.parse.urlsplit(url).netloc}"
        self.backoff_s, self.max_backoff_s, self.open_timeout = backoff_s, max_backoff_s, open_timeout
        self.connects = 0
        self.last_error: str | None = None

    def _uri(self, cursor: int | None) -> str:
        q = [("wantedCollections", "app.bsky.feed.post")]
        if cursor:
            q.append(("cursor", str(max(0, cursor - _REWIND_US))))
        sep = "&" if "?" in self.url else "?"
        return self.url + sep + urllib.parse.urlencode(q)

    def items(self, start_after: int = 0, stop: threading.Event | None = None) -> Iterator[tuple[int, Post | Skip]]:
        from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI
        from websockets.sync.client import connect

        stop = stop or threading.Event()
        cursor = start_after or None
        delay = self.backoff_s
        seq_fallback = start_after
        while not stop.is_set():
            try:
                with connect(self._uri(cursor), open_timeout=self.open_timeout, close_timeout=2, max_size=2**22) as ws:
                    self.connects += 1
                    self.last_error = None
                    delay = self.backoff_s
                    while not stop.is_set():
                        try:
                            raw = ws.recv(timeout=0.5)
                        except TimeoutError:
                            continue
                        t_us, item = parse_jetstream(raw)
                        if t_us is not None:
                            cursor = max(cursor or 0, t_us)
                            seq_fallback = cursor
                        if item is not None:
                            yield seq_fallback, item
            except InvalidURI as e:
                raise ValueError(f"bad Jetstream URL {self.url!r}: {e}") from None
            except (OSError, ConnectionClosed, InvalidHandshake, TimeoutError) as e:
                self.last_error = f"{type(e).__name__}: {e}"
                log.warning("Jetstream connection lost (%s); reconnecting in %.0f s", self.last_error, delay)
            if stop.wait(delay):
                return
            delay = min(delay * 2, self.max_backoff_s)
