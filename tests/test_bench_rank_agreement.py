"""bench/rank_agreement.py: Spearman and top-k overlap on lists worked out by hand."""

from __future__ import annotations

import pytest

from bench.rank_agreement import agreement, spearman, top_k_overlap


def test_spearman_of_identical_reversed_and_one_swap() -> None:
    a = [0.1, 0.2, 0.3, 0.4, 0.5]
    assert spearman(a, a) == pytest.approx(1.0)
    assert spearman(a, list(reversed(a))) == pytest.approx(-1.0)
    # One adjacent swap of 5: d^2 sums to 2, rho = 1 - 6*2 / (5*24) = 0.9.
    assert spearman(a, [0.1, 0.2, 0.4, 0.3, 0.5]) == pytest.approx(0.9)


def test_spearman_gives_ties_their_average_rank() -> None:
    # Ranks (1, 2.5, 2.5, 4) against (1, 2, 3, 4): rho = 0.9487 (Pearson of the ranks).
    assert spearman([1.0, 2.0, 2.0, 3.0], [1.0, 2.0, 3.0, 4.0]) == pytest.approx(0.9486833, abs=1e-6)


def test_top_k_overlap_counts_shared_best_documents() -> None:
    ref = [0.9, 0.8, 0.7, 0.1, 0.2]
    assert top_k_overlap(ref, ref, k=2) == 1.0
    assert top_k_overlap(ref, [0.9, 0.1, 0.7, 0.8, 0.2], k=2) == 0.5


def test_agreement_summarises_per_query_figures() -> None:
    ref = [[0.1, 0.2, 0.3, 0.4, 0.5], [0.5, 0.4, 0.3, 0.2, 0.1]]
    other = [[0.1, 0.2, 0.4, 0.3, 0.5], [0.5, 0.4, 0.3, 0.2, 0.1]]
    result = agreement(ref, other, k=2)
    assert result["queries"] == 2
    assert result["spearman_mean"] == pytest.approx(0.95)
    assert result["spearman_min"] == pytest.approx(0.9)
    # Query 1's best two are documents 4 and 3; the other puts 4 and 2 there: half shared.
    assert result["top2_overlap_mean"] == 0.75
    assert result["top2_overlap_min"] == 0.5
    assert result["max_abs_diff"] == pytest.approx(0.1)
