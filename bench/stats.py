"""The few statistics the benchmarks report: medians, percentiles and a trend over time."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any


def percentile(values: Sequence[float], q: int) -> float | None:
    """The q-th percentile, interpolated between observed values (inclusive); None for none."""
    if not values:
        return None
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def nearest_rank(values: Sequence[float], fraction: float) -> float:
    """An observed value, never an interpolation: the nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


@dataclass
class Timings:
    samples_s: list[float] = field(default_factory=list)

    @property
    def median_s(self) -> float:
        return statistics.median(self.samples_s)

    @property
    def p95_s(self) -> float:
        return nearest_rank(self.samples_s, 0.95)

    def summary(self) -> dict[str, Any]:
        return {"median_s": self.median_s, "p95_s": self.p95_s, "samples_s": self.samples_s}


def trend(samples: Sequence[tuple[float, float]], skip_s: float) -> dict[str, float]:
    """(time, value) samples after the first `skip_s`: the means of the first and last fifth,
    their difference, the highest value, and the least-squares slope per minute."""
    steady = [(t, v) for t, v in samples if t >= skip_s] or list(samples)
    fifth = max(1, len(steady) // 5)
    early = statistics.fmean(v for _, v in steady[:fifth])
    late = statistics.fmean(v for _, v in steady[-fifth:])
    times = [t for t, _ in steady]
    slope = statistics.linear_regression(times, [v for _, v in steady]).slope * 60 if len(steady) > 1 else 0.0
    return {
        "early": early,
        "late": late,
        "growth": late - early,
        "max": max(v for _, v in steady),
        "slope_per_min": slope,
    }
