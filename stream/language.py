"""Language of posts whose source gives none (recorded SemEval / CSV files, some Bluesky posts).

The sentiment model reads English only; the dashboard keeps posts in other languages out of the
sentiment figures by default (and counts them). Sources that carry a language (X's ``lang``,
Bluesky's ``langs``) are trusted; for the others py3langid (langid.py's model, numpy only) decides,
restricted to the 23 languages most used on X and Bluesky and only when it is at least
``MIN_CONFIDENCE`` sure: a short or mixed post stays "unknown" and counts as English. Measured on the
12,284 (English) SemEval-2017 test tweets: 0 flagged as another language at 0.99 (248 at no
threshold), while plain sentences in French, German, Portuguese, Turkish or Japanese score >= 0.998;
about 9,000 texts/s on one core, several times the scorer's rate (BENCHMARKS.md).

A fast path goes first: CLD2 (``pycld2``) calls a text English, reliably and for at least 90% of its
bytes, in ~14 us; only the rest (12,066 of the 12,284 test tweets are decided by CLD2) reaches
langid, which keeps every decision that names another language.
"""
from __future__ import annotations

import threading

__all__ = ["LanguageDetector", "LANGUAGES", "MIN_CONFIDENCE"]

LANGUAGES = ("en", "es", "pt", "fr", "de", "it", "nl", "ja", "ko", "zh", "ar", "ru", "tr", "hi", "id", "pl", "sv", "th", "fa", "uk", "vi", "tl", "ms")
MIN_CONFIDENCE = 0.99


try:  # CLD2 (C++, its tables inside the wheel): ~14 us per tweet against langid's ~80 us
    import pycld2 as _cld2
except ImportError:  # pragma: no cover - a dependency of the default install; langid alone still works
    _cld2 = None

#: CLD2 must call a text reliably English with at least this share of its bytes to skip langid
#: (a tweet half in Chinese is 50% English to CLD2 and goes on to langid)
FAST_ENGLISH_PERCENT = 90

_MODEL_LOCK = threading.Lock()
_MODEL = None  # the identifier, loaded once per process (~0.5-0.9 s) and shared: classify is read-only


def _model():
    global _MODEL
    with _MODEL_LOCK:
        if _MODEL is None:
            from py3langid.langid import MODEL_FILE, LanguageIdentifier

            ident = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
            ident.set_languages(list(LANGUAGES))
            _MODEL = ident
    return _MODEL


class LanguageDetector:
    """``detect(text) -> "en" | "fr" | ... | None`` (None: not sure). The model loads on first use,
    once per process (every pipeline of the process shares it)."""

    def __init__(self, min_confidence: float = MIN_CONFIDENCE):
        self.min_confidence = min_confidence
        self._ident = None

    def warm_up(self) -> None:
        """Load the model now (a pipeline does this before its first batch, not during it)."""
        self._ident = self._ident or _model()

    def detect(self, text: str) -> str | None:
        if sum(map(str.isalpha, text[:400])) < 12:  # too little text to tell (map: no Python frame per character)
            return None
        if _cld2 is not None:  # fast path: plainly English text (most of an English stream) skips langid
            try:
                reliable, _, details = _cld2.detect(text[:2000], bestEffort=False)[:3]
            except _cld2.error:
                pass
            else:
                if reliable and details[0][1] == "en" and details[0][2] >= FAST_ENGLISH_PERCENT:
                    return "en"
        if self._ident is None:
            self._ident = _model()
        lang, conf = self._ident.classify(text[:2000])
        return lang if conf >= self.min_confidence else None
