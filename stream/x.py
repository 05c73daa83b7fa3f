"""Live X posts through the v2 filtered stream (tweepy ``StreamingClient``).

Rules are built from the tracked topics (one or more rules per topic, tagged ``sparsepulse:<topic>``,
each within the rule-length limit of the access level) and re-synced when topics change. The
bearer token comes from the environment (``X_BEARER_TOKEN``) or the dashboard's password field /
Streamlit secrets; it is never logged, stored or exported. tweepy reconnects with backoff.
"""
from __future__ import annotations

import datetime as dt
import logging
import os
import queue
import re
import threading
from typing import Iterable, Iterator

from .post import Post, Skip
from .formats import parse_json_line
from .tracker import Topic

__all__ = ["build_rules", "rule_term", "RULE_LENGTHS", "XSource", "XAccessError", "token_from_env", "TAG_PREFIX"]

log = logging.getLogger("sparsepulse.x")
TAG_PREFIX = "sparsepulse:"
#: rule length limits of X's access levels (filtered-stream docs): 1,024 characters (Pro and
#: pay-per-use), 2,048 (Enterprise); 512 is valid everywhere and the default
RULE_LENGTHS = (512, 1024, 2048)
DEFAULT_RULE_LENGTH = 512
_TOKEN_ENV = ("X_BEARER_TOKEN", "SPARSEPULSE_X_BEARER_TOKEN")
_ERRORS = {
    401: "X rejected the bearer token (401 Unauthorized): check the token",
    403: "X refused the filtered stream (403 Forbidden): it needs an access level that includes it (Pro or Enterprise); "
    "use a recorded file or Bluesky instead",
    429: "X rate limit or connection limit reached (429 Too Many Requests): another stream may be open on this app; "
    "tweepy backs off and retries",
}


class XAccessError(RuntimeError):
    """The X API refused access (bad token or access level)."""


def token_from_env() -> str | None:
    for name in _TOKEN_ENV:
        v = os.environ.get(name)
        if v:
            return v
    return None


def _quoted(text: str) -> str:
    """An exact-phrase operand: X's syntax escapes a literal double quote (and backslash) inside."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


_PLAIN_KEYWORD = re.compile(r"\w+")
_OPERATOR_WORDS = {"or", "and"}


def rule_term(term: str) -> str:
    """One tracker term as a valid filtered-stream operand.

    Phrases and every keyword that is not a plain run of letters/digits (punctuation, symbols,
    emoji, URLs, ``from:x``-style text that X would read as an operator, the words OR/AND) are
    exact-phrase quoted, as X's rule syntax requires; ``#tag``, ``$cash`` and ``@user`` are X's own
    operators and stay as they are."""
    t = term.strip()
    if len(t) >= 2 and t[0] == '"' and t[-1] == '"':
        return _quoted(" ".join(t[1:-1].split()))
    if len(t) >= 2 and t[0] in "#$@" and _PLAIN_KEYWORD.fullmatch(t[1:]):
        return t
    if _PLAIN_KEYWORD.fullmatch(t) and t.lower() not in _OPERATOR_WORDS:
        return t
    return _quoted(t)


def build_rules(topics: Iterable[Topic], max_len: int = DEFAULT_RULE_LENGTH) -> list[tuple[str, str]]:
    """(value, tag) filtered-stream rules: ``(t1 OR t2 ...) -e1 -e2``, split into several rules of
    the same tag when one would exceed ``max_len``. Raises ValueError if a single term cannot fit."""
    if max_len not in RULE_LENGTHS:
        raise ValueError(f"rule length {max_len}: X's limits are {', '.join(map(str, RULE_LENGTHS))} characters by access level")
    rules = []
    for tp in topics:
        tag = TAG_PREFIX + tp.name
        excl = "".join(f" -{rule_term(e)}" for e in tp.exclusions)
        terms = [rule_term(t) for t in tp.terms]
        chunk: list[str] = []

        def value(ts: list[str]) -> str:
            core = ts[0] if len(ts) == 1 else "(" + " OR ".join(ts) + ")"
            return core + excl

        for t in terms:
            if len(value([t])) > max_len:
                raise ValueError(f"topic {tp.name!r}: term {t[:30]!r} with its exclusions exceeds the {max_len}-character rule limit")
            if chunk and len(value(chunk + [t])) > max_len:
                rules.append((value(chunk), tag))
                chunk = []
            chunk.append(t)
        if chunk:
            rules.append((value(chunk), tag))
    return rules


def _tweet_item(raw: bytes | str) -> Post | Skip:
    """A filtered-stream payload (``data`` + ``includes`` + ``matching_rules``) -> Post."""
    observed = dt.datetime.now(dt.timezone.utc)  # the time X delivered it (stream.validate)
    items = parse_json_line(raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw, "twarc2", observed)
    return items[0] if items else Skip("malformed_record")


class XSource:
    """Filtered-stream posts for the topics returned by ``topics()`` (polled; rules re-synced on change)."""

    name = "x"
    key = "x:filtered-stream"

    def __init__(self, bearer_token: str, topics, *, max_rule_len: int = DEFAULT_RULE_LENGTH, client=None):
        if not bearer_token:
            raise XAccessError("no X bearer token: set X_BEARER_TOKEN or enter it in the dashboard")
        import tweepy

        self._topics = topics
        self._q: queue.Queue = queue.Queue(maxsize=10_000)
        self.max_rule_len = max_rule_len
        self.error: str | None = None
        self.fatal: str | None = None  # 401 / 403: retrying cannot help
        self.dropped = 0
        outer = self

        class _Client(tweepy.StreamingClient):
            def on_data(self, raw_data):
                outer.on_data(raw_data)

            def on_request_error(self, status_code):
                outer.on_request_error(status_code)

            def on_connection_error(self):
                log.warning("X stream connection error; tweepy reconnects with backoff")

        self.client = client or _Client(bearer_token, wait_on_rate_limit=True)
        self._synced: list[tuple[str, str]] | None = None  # rules X accepted
        self._wanted: list[tuple[str, str]] | None = None  # rules last sent (accepted or not)
        self.rule_errors: list[str] = []

    def on_data(self, raw_data: bytes | str) -> None:
        try:
            self._q.put_nowait(_tweet_item(raw_data))
        except queue.Full:
            self.dropped += 1  # shown in the runtime panel; the stream cannot be paused
            log.warning("X queue full: the pipeline is not keeping up; %d posts dropped", self.dropped)

    def on_request_error(self, status_code: int) -> None:
        msg = _ERRORS.get(status_code, f"X stream request failed with HTTP {status_code}")
        log.error(msg)
        self.error = msg
        if status_code in (401, 403):
            self.fatal = msg
            self.client.disconnect()

    def sync_rules(self) -> None:
        """Make the stream's sparsepulse-tagged rules equal to the current topics' rules.

        X answers an invalid rule with HTTP 200 and an ``errors`` list: those rules are not recorded
        as synced; their errors are kept in ``rule_errors`` (shown by the CLI and the dashboard) and
        the same set of rules is not sent again until the topics change."""
        want = build_rules(self._topics(), self.max_rule_len)
        if want == self._wanted:
            return
        resp = self.client.get_rules()
        have = [(r.value, r.tag, r.id) for r in (getattr(resp, "data", None) or [])]
        stale = [rid for v, tag, rid in have if (tag or "").startswith(TAG_PREFIX) and (v, tag) not in want]
        if stale:
            self.client.delete_rules(stale)
        present = {(v, tag) for v, tag, _ in have}
        import tweepy

        add = [tweepy.StreamRule(value=v, tag=t) for v, t in want if (v, t) not in present]
        errors: list[str] = []
        failed: set[str] = set()
        if add:
            resp = self.client.add_rules(add)
            for e in getattr(resp, "errors", None) or []:
                if not isinstance(e, dict):
                    continue
                value = str(e.get("value", ""))
                details = e.get("details") if isinstance(e.get("details"), list) else [e.get("title") or e.get("detail") or "rejected"]
                failed.add(value)
                errors.append(f"X rejected the rule {value!r}: {'; '.join(map(str, details))}")
        for msg in errors:
            log.error(msg)
        self.rule_errors = errors
        self._synced = [r for r in want if r[0] not in failed]
        self._wanted = want
    def items(self, start_after: int = 0, stop: threading.Event | None = None) -> Iterator[tuple[int, Post | Skip]]:
        stop = stop or threading.Event()
        self.sync_rules()
        # referenced tweets come as includes: retweets' full original text, quote posts' quoted text
        th = self.client.filter(
            threaded=True,
            expansions=["author_id", "referenced_tweets.id", "referenced_tweets.id.author_id"],
            tweet_fields=["created_at", "lang", "note_tweet", "referenced_tweets", "author_id"],
            user_fields=["username"],
        )
        seq = start_after
        try:
            while not stop.is_set():
                if self.fatal:
                    raise XAccessError(self.fatal)
                try:
                    item = self._q.get(timeout=0.5)
                except queue.Empty:
                    self.sync_rules()
                    continue
                seq += 1
                yield seq, item
        finally:
            self.client.disconnect()
            if th is not None:
                th.join(timeout=5)
