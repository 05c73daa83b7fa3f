"""Aggregates for the dashboard (pure functions over Store rows) and the sentiment-shift detector.

Shift detector: on each topic's bucketed mean polarity, smoothed with a rolling mean of ``smooth``
buckets, a bucket is an alert when its smoothed polarity lies more than ``z`` standard deviations
from the mean of the ``window`` buckets before it (a z-score against a trailing window), and the
bucket has at least ``min_volume`` posts. Consecutive alert buckets of the same sign are merged.
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

__all__ = ["Alert", "detect_shifts", "series_by_topic", "bucket_grid", "fill_gaps", "headline", "Z95"]

#: two-sided 95% normal quantile, for the polarity bands
Z95 = 1.959964


@dataclasses.dataclass(frozen=True)
class Alert:
    topic: str
    bucket_ms: int
    polarity: float  # smoothed
    baseline: float
    z: float

    @property
    def direction(self) -> str:
        return "up" if self.z > 0 else "down"


def bucket_grid(start_ms: int, end_ms: int, bucket_ms: int) -> list[int]:
    """Every bucket start (aligned to ``bucket_ms`` since the epoch) that overlaps [start_ms, end_ms)."""
    first = (int(start_ms) // bucket_ms) * bucket_ms
    return list(range(first, int(end_ms), bucket_ms))


def fill_gaps(rows: Sequence[dict], topics: Sequence[str], grid: Sequence[int]) -> dict[str, list[dict]]:
    """Per topic, one row per bucket of ``grid``: a bucket without posts has volume 0 and polarity
    None, so that charts draw a gap there instead of a line across it."""
    by = {(r["topic"], r["bucket_ms"]): r for r in rows}
    empty = {"volume": 0, "retweets": 0, "foreign": 0, "n": 0, "negative": 0, "neutral": 0, "positive": 0, "polarity": None, "polarity_se": None}
    return {t: [by.get((t, b)) or {"topic": t, "bucket_ms": b, **empty} for b in grid] for t in topics}


def headline(series: dict[str, list[dict]], window: int) -> list[dict]:
    """Per topic, over the last ``window`` buckets of its series against the ``window`` before:
    net sentiment (mean polarity over the opinions), its change, the volume and the share of voice
    (the topic's volume over all shown topics' volume in the latest window)."""
    def net(rows):
        n = sum(r["n"] for r in rows)
        return (sum(r["polarity"] * r["n"] for r in rows if r["n"]) / n) if n else None, n

    total = sum(r["volume"] for rows in series.values() for r in rows[-window:]) or 0
    out = []
    for t, rows in series.items():
        cur, prev = rows[-window:], rows[-2 * window : -window]
        (p_cur, n_cur), (p_prev, n_prev) = net(cur), net(prev)
        vol = sum(r["volume"] for r in cur)
        out.append({
            "topic": t, "net": p_cur, "opinions": n_cur, "previous": p_prev, "previous_opinions": n_prev,
            "change": (p_cur - p_prev) if p_cur is not None and p_prev is not None else None,
            "volume": vol, "share_of_voice": vol / total if total else None,
        })
    return out


def series_by_topic(rows: Sequence[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for r in rows:
        out.setdefault(r["topic"], []).append(r)
    for v in out.values():
        v.sort(key=lambda r: r["bucket_ms"])
    return out


def detect_shifts(rows: Sequence[dict], *, smooth: int = 3, window: int = 12, z: float = 3.0, min_volume: int = 5, min_std: float = 0.02, closed_before_ms: int | None = None) -> list[Alert]:
    """Alerts from ``Store.aggregates`` rows (any number of topics). ``closed_before_ms``: only
    buckets that start before it count (the bucket still filling up would make alerts flicker
    as its posts arrive); buckets without opinions are left out. Vectorised per topic (a month of
    15-minute buckets is 2,880 per topic, scored on every 2-s rerun)."""
    if smooth < 1 or window < 2 or z <= 0:
        raise ValueError("smooth >= 1, window >= 2 and z > 0 are required")
    alerts: list[Alert] = []
    rows = [r for r in rows if r.get("polarity") is not None and (closed_before_ms is None or r["bucket_ms"] < closed_before_ms)]
    for topic, series in series_by_topic(rows).items():
        if len(series) <= window:
            continue
        raw = np.array([r["polarity"] for r in series], dtype=np.float64)
        csum = np.concatenate(([0.0], np.cumsum(raw)))
        idx = np.arange(len(raw))
        lo = np.maximum(idx + 1 - smooth, 0)
        pol = (csum[idx + 1] - csum[lo]) / (idx + 1 - lo)  # trailing mean over up to ``smooth`` buckets
        prev = np.lib.stride_tricks.sliding_window_view(pol, window)[:-1]  # the ``window`` buckets before each i >= window
        mu = prev.mean(axis=1)
        sd = np.maximum(prev.std(axis=1, ddof=1), min_std)
        score = (pol[window:] - mu) / sd
        vol = np.array([r.get("n", r["volume"]) for r in series[window:]])
        hit = (np.abs(score) >= z) & (vol >= min_volume)
        sign = np.where(score > 0, 1, -1)
        # a run of alert buckets of one sign is one alert (at its first bucket)
        before = np.concatenate(([False], hit[:-1]))
        sign_before = np.concatenate(([0], sign[:-1]))
        for j in np.flatnonzero(hit & ~(before & (sign == sign_before))):
            i = window + int(j)
            alerts.append(Alert(topic, series[i]["bucket_ms"], float(pol[i]), float(mu[j]), float(score[j])))
    return sorted(alerts, key=lambda a: a.bucket_ms)
