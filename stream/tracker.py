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
import functools
import re
import threading
import unicodedata
from typing import Iterable, Sequence

__all__ = ["Topic", "Tracker", "parse_terms", "TopicError", "DEFAULT_TOPICS", "STOP_WORDS"]

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
    """Matching form: NFKC (full-width letters, ligatures), case-folded; the dot that folding leaves
    on a Turkish dotted capital I (``İ`` -> ``i̇``) is dropped, so "istanbul" matches "İstanbul"."""
    return unicodedata.normalize("NFKC", s).casefold().replace("i\u0307", "i")


#: scripts written without spaces between words (Han, kana, Thai, Lao, Khmer, Myanmar, Hangul, whose
#: particles attach to the word): a term in them matches inside longer runs of text
_SPACELESS = re.compile("[\u0e00-\u0eff\u1000-\u109f\u1780-\u17ff\u3040-\u30ff\u31f0-\u31ff\u3400-\u4dbf\u4e00-\u9fff"
                        "\uac00-\ud7af\uf900-\ufaff\uff66-\uff9f\U00020000-\U0002fa1f]")
#: a topic whose every term is one of these would match almost every post
STOP_WORDS = frozenset(
    "a an and are as at be but by for from i in is it me my not of on or rt so that the this to was we with you".split()
)


def parse_terms(spec: str | Sequence[str]) -> list[str]:
    """``'bitcoin, "crypto winter", #btc'`` or a list -> cleaned terms (quotes kept for phrases).

    Commas inside double quotes belong to the phrase: ``'"hello, world", -"scam, alert"'`` is two
    terms. An unbalanced quote is an error."""
    if not isinstance(spec, str):
        return [t.strip() for t in spec if t and t.strip()]
    out, cur, in_quote = [], [], False
    for ch in spec:
        if ch == '"':
            in_quote = not in_quote
        if ch == "," and not in_quote:
            out.append("".join(cur).strip())
            cur = []
        else:
            cur.append(ch)
    if in_quote:
        raise TopicError(f"unbalanced double quote in {spec!r}")
    out.append("".join(cur).strip())
    return [t for t in out if t]


def _bounded(body: str, first: str, last: str, lead: str = r"(?<!\w)") -> str:
    """``body`` with word boundaries, except on a side whose character is from a spaceless script."""
    return ("" if _SPACELESS.match(first) else lead) + body + ("" if _SPACELESS.match(last) else r"(?!\w)")


def _term_literal(term: str) -> str:
    """A substring of every text that ``_term_regex(term)`` matches (its first word, # $ @ kept)."""
    t = _norm(term.strip())
    return t[1:-1].split()[0] if t.startswith('"') else t


def _term_regex(term: str) -> str:
    t = _norm(term.strip())
    if not t:
        raise TopicError("empty term")
    if len(t) >= 2 and t[0] == '"' and t[-1] == '"':
        words = t[1:-1].split()
        if not words:
            raise TopicError(f"empty phrase {term!r}")
        return _bounded(r"\s+".join(re.escape(w) for w in words), words[0][0], words[-1][-1])
    if '"' in t:
        raise TopicError(f"term {term!r}: a double quote belongs around a whole phrase")
    if t[0] in "#$@":
        body = t[1:]
        if not body or not re.fullmatch(r"\w+", body):
            raise TopicError(f"invalid {t[0]}-term {term!r}")
        return r"(?<![\w#$@])" + re.escape(t[0] + body) + r"(?!\w)"
    if re.search(r"\s", t):
        raise TopicError(f"term {term!r} has spaces: quote it to make a phrase")
    return _bounded(re.escape(t), t[0], t[-1])


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
        if all(_norm(t.strip('"')).strip() in STOP_WORDS for t in self.terms):
            raise TopicError(f"topic {self.name!r}: its terms ({', '.join(self.terms)}) are all stop words and would match almost every post; add a specific term")
        self._include, self._exclude, self._literals  # compile now: a bad term fails at creation, not at the first match

    @functools.cached_property
    def _include(self) -> re.Pattern:
        return re.compile("|".join(_term_regex(t) for t in self.terms))

    @functools.cached_property
    def _exclude(self) -> re.Pattern | None:
        return re.compile("|".join(_term_regex(t) for t in self.exclusions)) if self.exclusions else None

    @classmethod
    def parse(cls, name: str, spec: str | Sequence[str], exclusions: str | Sequence[str] = ()) -> "Topic":
        """Terms like ``'bitcoin, "crypto winter", #btc, -scam'``: a leading ``-`` marks an exclusion."""
        terms, excl = [], list(parse_terms(exclusions))
        for t in parse_terms(spec):
            (excl.append(t[1:].strip()) if t.startswith("-") else terms.append(t))
        return cls(name.strip(), tuple(terms), tuple(e for e in excl if e))

    @functools.cached_property
    def _literals(self) -> tuple[str, ...]:
        return tuple(_term_literal(t) for t in self.terms)

    def matches(self, normalized_text: str) -> bool:
        # a substring test first (C speed): the regexes' look-arounds cost ~4 us a topic on every post
        if not any(lit in normalized_text for lit in self._literals) or not self._include.search(normalized_text):
            return False
        return not (self._exclude is not None and self._exclude.search(normalized_text))

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
