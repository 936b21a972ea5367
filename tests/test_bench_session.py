"""bench/session.py's arithmetic: how long the server was busy when the page's calls overlap."""

from __future__ import annotations

from bench.session import busy_s


def test_overlapping_calls_count_once_and_gaps_not_at_all() -> None:
    # 0-2 and 1-3 overlap (3 s busy), 5-6 stands alone (1 s): 4 s, where the sum would say 5.
    assert busy_s([(1.0, 3.0), (0.0, 2.0), (5.0, 6.0)]) == 4.0
    assert busy_s([(0.0, 5.0), (1.0, 2.0)]) == 5.0  # one call inside another
    assert busy_s([]) == 0.0
