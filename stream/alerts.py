"""Aggregates for the dashboard (pure functions over Store rows) and the sentiment-shift detector.

Shift detector: on each topic's bucketed mean polarity, smoothed with a rolling mean of ``smooth``
buckets, a bucket is an alert when its smoothed polarity lies more than ``z`` standard deviations
from the mean of the ``window`` buckets before it (a z-score against a trailing window), and the
bucket has at least ``min_volume`` posts. Consecutive alert buckets of the same sign are merged.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Sequence

__all__ = ["Alert", "rolling_mean", "detect_shifts", "series_by_topic"]


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


def rolling_mean(xs: Sequence[float], k: int) -> list[float]:
    """Trailing mean over up to ``k`` values (the first values use what exists)."""
    out, acc = [], 0.0
    for i, x in enumerate(xs):
        acc += x
        if i >= k:
            acc -= xs[i - k]
        out.append(acc / min(i + 1, k))
    return out


def series_by_topic(rows: Sequence[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for r in rows:
        out.setdefault(r["topic"], []).append(r)
    for v in out.values():
        v.sort(key=lambda r: r["bucket_ms"])
    return out


def detect_shifts(rows: Sequence[dict], *, smooth: int = 3, window: int = 12, z: float = 3.0, min_volume: int = 5, min_std: float = 0.02) -> list[Alert]:
    """Alerts from ``Store.aggregates`` rows (any number of topics)."""
    if smooth < 1 or window < 2 or z <= 0:
        raise ValueError("smooth >= 1, window >= 2 and z > 0 are required")
    alerts: list[Alert] = []
    for topic, series in series_by_topic(rows).items():
        pol = rolling_mean([r["polarity"] for r in series], smooth)
        last_sign = 0
        for i in range(window, len(series)):
            prev = pol[i - window : i]
            mu = sum(prev) / window
            sd = max(math.sqrt(sum((p - mu) ** 2 for p in prev) / (window - 1)), min_std)
            score = (pol[i] - mu) / sd
            sign = 1 if score > 0 else -1
            if abs(score) >= z and series[i]["volume"] >= min_volume:
                if sign != last_sign:
                    alerts.append(Alert(topic, series[i]["bucket_ms"], pol[i], mu, score))
                last_sign = sign
            else:
                last_sign = 0
    return sorted(alerts, key=lambda a: a.bucket_ms)
