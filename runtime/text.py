"""Text normalisation shared by training (``compression``) and serving (``runtime``).

Both sides must call :func:`normalize` so that a tweet is seen identically at training
time and at scoring time.  The version string is recorded in every model directory; the
runtime refuses a model whose normalisation version it does not implement.
"""
from __future__ import annotations

import html
import re
import unicodedata

__all__ = ["NORMALIZATION_VERSION", "normalize"]

#: Bumped whenever :func:`normalize` changes behaviour.  Format: ``name/version``.
NORMALIZATION_VERSION = "tweet-norm/1"

_URL_RE = re.compile(r"(?:https?://|www\.)\S+", re.IGNORECASE)
# @mention: Twitter handles are 1-15 word characters; do not touch e-mail addresses.
_MENTION_RE = re.compile(r"(?<![\w@])@\w{1,15}\b")
_WS_RE = re.compile(r"\s+")
_REPEAT_RE = re.compile(r"(.)\1{3,}")  # "soooooo" -> "sooo"

try:  # emoji is a declared dependency; degrade to "no emoji handling" only if absent.
    import emoji as _emoji
except ImportError:  # pragma: no cover - exercised only in broken installs
    _emoji = None


def _emoji_to_words(_char: str, data: dict) -> str:
    # data["en"] == ":face_with_tears_of_joy:" -> " face with tears of joy "
    name = data.get("en", "")
    return " " + name.strip(":").replace("_", " ").replace("-", " ") + " "


def normalize(text: str, *, demojize: bool = True) -> str:
    """Normalise one tweet.

    - HTML entities unescaped (``&amp;`` -> ``&``), done twice for double-escaped text;
    - URLs -> ``http``; user mentions -> ``@user``;
    - emoji -> their English names (the uncased WordPiece vocabulary has no emoji, so
      they would all become ``[UNK]``), when ``demojize`` is true;
    - Unicode NFC, control characters removed, runs of 4+ identical characters cut to 3,
      whitespace collapsed.
    """
    if not isinstance(text, str):
        raise TypeError(f"normalize() expects str, got {type(text).__name__}")
    text = html.unescape(html.unescape(text))
    text = unicodedata.normalize("NFC", text)
    text = _URL_RE.sub(" http ", text)
    text = _MENTION_RE.sub("@user", text)
    if demojize and _emoji is not None:
        text = _emoji.replace_emoji(text, replace=_emoji_to_words)
    text = "".join(ch if unicodedata.category(ch)[0] != "C" else " " for ch in text)
    text = _REPEAT_RE.sub(r"\1\1\1", text)
    return _WS_RE.sub(" ", text).strip()
