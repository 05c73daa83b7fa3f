"""``Scorer``: texts in, sentiment probabilities out (negative, neutral, positive)."""
from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from .errors import InputError, ModelFormatError
from .format import LABELS, load_model
from .native import NativeModel
from .text import normalize

__all__ = ["Scorer", "ScorerStats"]

_TOKENIZER_FILES = ("tokenizer.json", "vocab.txt")
#: texts are cut at max_len × this many characters before normalising and tokenising, so a hostile
#: text (3M characters) costs no more than a long tweet. WordPiece turns a word of over 100
#: characters into one [UNK], so a cut this late changes the first max_len tokens only for texts
#: made of such words; it counts as truncated.
CHARS_PER_TOKEN_CAP = 100


class ScorerStats:
    """Counters since the scorer was created (read them with :meth:`Scorer.stats`)."""

    __slots__ = ("texts", "batches", "truncated", "tokens", "tokenize_s", "native_s")

    def __init__(self) -> None:
        self.texts = self.batches = self.truncated = self.tokens = 0
        self.tokenize_s = self.native_s = 0.0

    def as_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__slots__}


class Scorer:
    """Scores texts with a ``sparsepulse-sparse-int8`` model directory on the CPU.

    ``Scorer(model_dir, threads=N)``; ``score(texts) -> (labels, probs)`` with ``probs`` float32
    ``(n, 3)`` in the order negative, neutral, positive (``self.labels``, whatever order the model's
    classifier rows have) and ``labels`` the argmax indices (int64). Texts are truncated at the
    model's ``max_len`` tokens; before tokenising, at ``max_len × CHARS_PER_TOKEN_CAP`` characters.
    Thread-safe: tokenisation is serialised, the C forward pass runs with the GIL released, so
    several threads can score at once. Any batch size (split into chunks of ``chunk_size``); any
    text length (truncated at the model's ``max_len``, counted in ``stats()['truncated']``).
    """

    def __init__(self, model_dir: str | os.PathLike, threads: int = 0, *, kernel: str = "auto", chunk_size: int = 256):
        self.model_dir = Path(model_dir)
        data = load_model(self.model_dir)
        for f in _TOKENIZER_FILES:
            if not (self.model_dir / f).is_file():
                raise ModelFormatError(f"{self.model_dir}: tokenizer file {f} missing")
        from tokenizers import Tokenizer

        try:  # the base model's fast tokenizer file itself (what transformers' BertTokenizerFast wraps:
            # identical ids on the 62,628 SemEval texts, checked when the serving install dropped transformers)
            self._tok = Tokenizer.from_file(str(self.model_dir / "tokenizer.json"))
        except Exception as e:  # the tokenizers library raises its own (untyped) exception on a bad file
            raise ModelFormatError(f"{self.model_dir}: cannot load the tokenizer: {str(e)[:200]}") from None
        self._tok.no_truncation()
        self._tok.no_padding()
        n_tok = self._tok.get_vocab_size()
        if n_tok > data.config["vocab_size"]:
            raise ModelFormatError(f"{self.model_dir}: the tokenizer has {n_tok} ids, the model's vocabulary {data.config['vocab_size']}")
        self._model = NativeModel(data, kernel=kernel)
        self.labels: tuple[str, ...] = LABELS
        self._order = data.label_order  # file's classifier rows -> LABELS
        self._identity_order = bool((self._order == np.arange(len(LABELS))).all())
        self.max_len: int = data.meta["max_len"]
        self.demojize: bool = data.meta["demojize"]
        self.sparsity = data.encoder_sparsity()
        self.config = data.config
        self.threads = int(threads)
        self.chunk_size = int(chunk_size)
        if self.chunk_size <= 0:
            raise ValueError("chunk_size must be positive")
        self._tok_lock = threading.Lock()
        self._stats_lock = threading.Lock()
        self._stats = ScorerStats()
        self._cls, self._sep = self._tok.token_to_id("[CLS]"), self._tok.token_to_id("[SEP]")
        if self._cls is None or self._sep is None:
            raise ModelFormatError(f"{self.model_dir}: the tokenizer has no [CLS] / [SEP] token")
        self._executor = None  # tokenisation helper thread for multi-chunk calls (created on first use)

    @property
    def kernel_name(self) -> str:
        """The C kernel in use: scalar, avx2 or avx512vnni."""
        return self._model.isa_name

    @property
    def model_bytes(self) -> int:
        return (self.model_dir / "model.safetensors").stat().st_size

    def stats(self) -> dict:
        with self._stats_lock:
            return self._stats.as_dict()

    def encode(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray, int]:
        """Normalise + tokenise: (ids concatenated int32, lengths int32, number truncated)."""
        cap = self.max_len * CHARS_PER_TOKEN_CAP
        norm = [normalize(t[:cap], demojize=self.demojize) for t in texts]
        with self._tok_lock:
            enc = [e.ids for e in self._tok.encode_batch(norm, add_special_tokens=False)]
        body = self.max_len - 2
        truncated = sum(1 for e, t in zip(enc, texts) if len(e) > body or len(t) > cap)
        lengths = np.fromiter((min(len(e), body) + 2 for e in enc), np.int32, len(enc))
        ids = np.empty(int(lengths.sum()), np.int32)
        pos = 0
        for e, n in zip(enc, lengths):
            ids[pos] = self._cls
            ids[pos + 1 : pos + n - 1] = e[: n - 2]
            ids[pos + n - 1] = self._sep
            pos += n
        return ids, lengths, truncated

    def _encode_timed(self, chunk: Sequence[str]):
        t0 = time.perf_counter()
        ids, lengths, truncated = self.encode(chunk)
        return ids, lengths, truncated, time.perf_counter() - t0

    def score(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """(label indices, probabilities) for any number of texts. Beyond one chunk, the next chunk is
        normalised and tokenised on a helper thread while C scores the current one (the C call
        releases the GIL), which keeps most of the tokenisation off the critical path."""
        if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
            raise InputError("score() expects a sequence of str")
        n = len(texts)
        probs = np.empty((n, len(self.labels)), np.float32)
        starts = list(range(0, n, self.chunk_size))
        pending = None
        for k, s in enumerate(starts):
            chunk = texts[s : s + self.chunk_size]
            ids, lengths, truncated, tok_s = pending.result() if pending is not None else self._encode_timed(chunk)
            pending = self._pool().submit(self._encode_timed, texts[starts[k + 1] : starts[k + 1] + self.chunk_size]) if k + 1 < len(starts) else None
            t1 = time.perf_counter()
            out = self._model.forward(ids, lengths, self.threads)
            probs[s : s + len(chunk)] = out if self._identity_order else out[:, self._order]
            t2 = time.perf_counter()
            with self._stats_lock:
                st = self._stats
                st.texts += len(chunk)
                st.batches += 1
                st.truncated += truncated
                st.tokens += int(lengths.sum())
                st.tokenize_s += tok_s
                st.native_s += t2 - t1
        return probs.argmax(1), probs

    def _pool(self):
        with self._stats_lock:
            if self._executor is None:
                from concurrent.futures import ThreadPoolExecutor

                self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sparsepulse-tokenize")
            return self._executor
