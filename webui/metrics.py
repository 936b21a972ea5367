"""nDCG@10, MRR@10 and Recall@k of one ordering of the documents against judgments.

Computed by ir-measures over trec_eval's own C code (pytrec-eval-terrier), the definitions
IR papers report: nDCG with the grade as gain and log2(rank + 1) discount, normalised by the
ideal ordering of every judged document (Järvelin and Kekäläinen, as trec_eval implements
it); reciprocal rank of the first document graded 1 or more, 0 when none is in the top 10;
recall = relevant documents in the top k / relevant documents judged. Documents the analyst
did not judge count as not relevant.

An ordering is given as 0-based document positions, best first; it is handed to trec_eval as
descending scores, so trec_eval's own tie-breaking never reorders it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import ir_measures
from ir_measures import Qrel, ScoredDoc

CUTOFF = 10
"""nDCG and MRR look at the top 10, as MTEB and MS MARCO report them."""


def measure_names(k: int) -> tuple[str, str, str]:
    return (f"nDCG@{CUTOFF}", f"MRR@{CUTOFF}", f"Recall@{k}")


def measure(grades: Mapping[int, int], order: Sequence[int], k: int) -> dict[str, float]:
    """{measure name: value} of `order` (positions best first) against `grades` (position -> grade)."""
    if k < 1:
        raise ValueError("k must be at least 1")
    qrels = [Qrel("q", str(position), grade) for position, grade in grades.items()]
    run = [ScoredDoc("q", str(position), float(len(order) - rank)) for rank, position in enumerate(order)]
    ndcg, rr, recall = ir_measures.nDCG @ CUTOFF, ir_measures.RR @ CUTOFF, ir_measures.R @ k
    values = ir_measures.calc_aggregate([ndcg, rr, recall], qrels, run)
    names = measure_names(k)
    return {names[0]: float(values[ndcg]), names[1]: float(values[rr]), names[2]: float(values[recall])}
