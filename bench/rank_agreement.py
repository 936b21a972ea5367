"""How much a configuration changes rankings: per query, Spearman's rho and top-k overlap
of its scores against a reference configuration's scores for the same documents.

    python -m bench.rank_agreement OUT/scores-qwen3-4b.json OUT/scores-qwen3-4b-fp8.json

A reranker's output is an order, so this, not the largest score difference, is the number
that says whether a cheaper precision is safe. Scores of random-weight models sit close
together (a random model has no notion of relevance), so small numeric errors swap
neighbours that a trained model would keep far apart: agreement measured on random weights
is a pessimistic bound, not an estimate of what the real checkpoint loses.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

TOP_K = 10


def _ranks(values: Sequence[float]) -> list[float]:
    """1-based ranks, ties sharing their average rank."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def spearman(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman's rho: Pearson's correlation of the ranks (1.0 when either side is constant and equal)."""
    if len(a) != len(b) or len(a) < 2:
        raise ValueError("need two equally long lists of at least 2 scores")
    ra, rb = _ranks(a), _ranks(b)
    ma, mb = statistics.fmean(ra), statistics.fmean(rb)
    cov = sum((x - ma) * (y - mb) for x, y in zip(ra, rb, strict=True))
    var_a = sum((x - ma) ** 2 for x in ra)
    var_b = sum((y - mb) ** 2 for y in rb)
    if var_a == 0 or var_b == 0:
        return 1.0 if var_a == var_b else 0.0
    return float(cov / (var_a * var_b) ** 0.5)


def top_k_overlap(a: Sequence[float], b: Sequence[float], k: int = TOP_K) -> float:
    """Share of the reference's k best documents that are also among the other's k best."""
    k = min(k, len(a))
    best_a = set(sorted(range(len(a)), key=lambda i: -a[i])[:k])
    best_b = set(sorted(range(len(b)), key=lambda i: -b[i])[:k])
    return len(best_a & best_b) / k


def agreement(reference: Sequence[Sequence[float]], other: Sequence[Sequence[float]], k: int = TOP_K) -> dict[str, Any]:
    """Per-query Spearman and top-k overlap, summarised over the queries."""
    if len(reference) != len(other) or not reference:
        raise ValueError(f"{len(reference)} reference queries against {len(other)}")
    rhos = [spearman(r, o) for r, o in zip(reference, other, strict=True)]
    overlaps = [top_k_overlap(r, o, k) for r, o in zip(reference, other, strict=True)]
    diffs = [abs(x - y) for r, o in zip(reference, other, strict=True) for x, y in zip(r, o, strict=True)]
    spread = statistics.median(statistics.pstdev(r) for r in reference)
    return {
        "queries": len(rhos),
        "docs_per_query": len(reference[0]),
        "spearman_mean": round(statistics.fmean(rhos), 4),
        "spearman_min": round(min(rhos), 4),
        f"top{k}_overlap_mean": round(statistics.fmean(overlaps), 3),
        f"top{k}_overlap_min": round(min(overlaps), 3),
        "max_abs_diff": round(max(diffs), 4),
        "reference_score_spread": round(spread, 4),
    }


def compare_files(reference: Path, other: Path, k: int = TOP_K) -> dict[str, dict[str, Any]]:
    """Both files map a set name ("single", "agreement") to per-query score lists."""
    ref, oth = json.loads(reference.read_text()), json.loads(other.read_text())
    return {name: agreement(ref[name], oth[name], k) for name in ref if name in oth}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("reference", type=Path)
    parser.add_argument("others", type=Path, nargs="+")
    parser.add_argument("--k", type=int, default=TOP_K)
    args = parser.parse_args(argv)
    for other in args.others:
        print(
            json.dumps(
                {"reference": args.reference.name, "other": other.name, **compare_files(args.reference, other, args.k)}
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
