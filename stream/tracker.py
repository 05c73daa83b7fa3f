"""Keyword tracking: topics of words, "quoted phrases", #hashtags, $cashtags, @mentions, -exclusions.

Matching is case-insensitive, Unicode-aware (NFC, casefold) and on word boundaries:
    word        ``bitcoin`` matches "Bitcoin", "#bitcoin" and "$bitcoin"-free text "bitcoin's", not "bitcoins"
    phrase      ``"climate change"`` matches the words in order, any whitespace between them
    #hashtag    ``#ai`` matches the hashtag only (not the word "ai")
    $cashtag    ``$btc`` matches the cashtag only
    @mention    ``@nasa`` matches the mention only
A post matches a topic when any term matches and no exclusion does. Topics can be replaced at
any time (``Tracker.set_topics``); matching uses an immutable snapshot, so it is thread-safe.
"""
from __future__ import annotations

import dataclasses
import re
import shlex
import threading
import unicodedata
from typing import Iterable, Sequence

__all__ = ["Topic", "Tracker", "parse_terms", "TopicError", "DEFAULT_TOPICS"]

#: frequent subjects of the SemEval-2017 test tweets (Nov-Dec 2016): the dashboard's default replay topics
DEFAULT_TOPICS = {
    "Trump": "trump, @realdonaldtrump, #trump",
    "Obama": "obama, @barackobama",
    "Clinton": "clinton, hillary",
    "Thanksgiving": "thanksgiving, #thanksgiving",
    "Putin": "putin, russia",
}
_MAX_TERMS = 100
_MAX_TERM_LEN = 128


class TopicError(ValueError):
    """An invalid topic definition."""


def _norm(s: str) -> str:
    return unicodedata.normalize("NFC", s).casefold()


def parse_terms(spec: str | Sequence[str]) -> list[str]:
    """``'bitcoin, "crypto winter", #btc'`` or a list -> cleaned terms (quotes kept for phrases)."""
    if isinstance(spec, str):
        out = []
        for part in spec.split(","):
            part = part.strip()
            if part:
                out.append(part)
        return out
    return [t.strip() for t in spec if t and t.strip()]


def _term_regex(term: str) -> str:
    t = _norm(term.strip())
    if len(t) >= 2 and t[0] == '"' and t[-1] == '"':
        words = t[1:-1].split()
        if not words:
            raise TopicError(f"empty phrase {term!r}")
        return r"(?<!\w)" + r"\s+".join(re.escape(w) for w in words) + r"(?!\w)"
    if t[0] in "#$@":
        body = t[1:]
        if not body or not re.fullmatch(r"\w+", body):
            raise TopicError(f"invalid {t[0]}-term {term!r}")
        return r"(?<![\w#$@])" + re.escape(t[0] + body) + r"(?!\w)"
    if re.search(r"\s", t):
        raise TopicError(f"term {term!r} has spaces: quote it to make a phrase")
    return r"(?<!\w)" + re.escape(t) + r"(?!\w)"


@dataclasses.dataclass(frozen=True)
class Topic:
    name: str
    terms: tuple[str, ...]
    exclusions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.name or not self.name.strip() or len(self.name) > 64:
            raise TopicError("a topic needs a name of 1-64 characters")
        if not self.terms:
            raise TopicError(f"topic {self.name!r} has no terms")
        if len(self.terms) + len(self.exclusions) > _MAX_TERMS:
            raise TopicError(f"topic {self.name!r}: at most {_MAX_TERMS} terms")
        for t in (*self.terms, *self.exclusions):
            if len(t) > _MAX_TERM_LEN:
                raise TopicError(f"term too long: {t[:20]}...")
        object.__setattr__(self, "_include", re.compile("|".join(_term_regex(t) for t in self.terms)))
        object.__setattr__(self, "_exclude", re.compile("|".join(_term_regex(t) for t in self.exclusions)) if self.exclusions else None)

    @classmethod
    def parse(cls, name: str, spec: str | Sequence[str], exclusions: str | Sequence[str] = ()) -> "Topic":
        """Terms like ``'bitcoin, "crypto winter", #btc, -scam'``: a leading ``-`` marks an exclusion."""
        terms, excl = [], list(parse_terms(exclusions))
        for t in parse_terms(spec):
            (excl.append(t[1:].strip()) if t.startswith("-") else terms.append(t))
        return cls(name.strip(), tuple(terms), tuple(e for e in excl if e))

    def matches(self, normalized_text: str) -> bool:
        if not self._include.search(normalized_text):  # type: ignore[attr-defined]
            return False
        return not (self._exclude is not None and self._exclude.search(normalized_text))  # type: ignore[attr-defined]

    def spec(self) -> str:
        return ", ".join([*self.terms, *("-" + e for e in self.exclusions)])


class Tracker:
    """Matches texts against the current topics."""

    def __init__(self, topics: Iterable[Topic] = ()):
        self._lock = threading.Lock()
        self._topics: tuple[Topic, ...] = ()
        self.set_topics(topics)

    def set_topics(self, topics: Iterable[Topic]) -> None:
        topics = tuple(topics)
        names = [t.name for t in topics]
        if len(set(names)) != len(names):
            raise TopicError("topic names must be unique")
        with self._lock:
            self._topics = topics

    @property
    def topics(self) -> tuple[Topic, ...]:
        return self._topics

    def match(self, text: str) -> list[str]:
        """Names of the topics that ``text`` matches."""
        topics = self._topics  # snapshot
        t = _norm(text)
        return [tp.name for tp in topics if tp.matches(t)]
