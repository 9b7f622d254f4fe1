"""The paper's published numbers, for the tables' "paper" columns. PAPER-SCALE: BERT-base, seq 128, 7038 LAMB
steps of global batch 65,536 on BookCorpus + Wikipedia, GLUE dev sets; never comparable to a tiny run on proxy tasks.

Source: Shi et al., "SparseBERT: Rethinking the Importance Analysis in Self-attention", ICML 2021
(arXiv 2102.12871), GLUE dev results as listed in the README of the official code (github han-shi/SparseBERT).
Keys are our variant names; scores in percent, sparsity ratio in percent.
The paper lists no GLUE row for dense BERT or BERT without the diagonal, and no per-variant SQuAD/SWAG numbers
in that table: those cells stay empty rather than being guessed.
"""

from __future__ import annotations

CITATION = "Shi et al., ICML 2021 (arXiv 2102.12871), GLUE dev, README of github.com/han-shi/SparseBERT"
SCALE = "paper-scale: BERT-base, seq 128, LAMB global batch 65,536 x 7038 steps, BookCorpus+Wikipedia, real GLUE dev"

# Column order of the paper's table; MNLI has matched (m) and mismatched (mm) dev sets.
GLUE_COLUMNS = ("mnli_m", "mnli_mm", "qqp", "qnli", "sst2", "cola", "stsb", "mrpc", "rte")


def _row(kind, sparsity, mnli, qqp, qnli, sst2, cola, stsb, mrpc, rte, avg):
    """One row; `kind` is the mask's family as in sparsebert/variants.py: fixed, dam_s or dam_u."""
    m, mm = mnli
    return {"kind": kind, "sparsity": sparsity, "mnli_m": m, "mnli_mm": mm, "qqp": qqp, "qnli": qnli, "sst2": sst2,
            "cola": cola, "stsb": stsb, "mrpc": mrpc, "rte": rte, "avg": avg}  # fmt: skip


GLUE = {
    "strided": _row("fixed", 70.4, (81.9, 81.9), 87.1, 89.0, 91.7, 58.4, 86.6, 86.1, 52.7, 79.5),
    "fixed": _row("fixed", 72.7, (81.4, 81.8), 86.4, 88.1, 91.3, 54.2, 85.9, 88.7, 59.2, 79.7),
    "longformer": _row("fixed", 88.7, (80.5, 81.0), 86.8, 88.4, 91.8, 57.9, 86.9, 81.7, 65.3, 80.1),
    "logsparse": _row("fixed", 89.8, (77.9, 78.2), 85.9, 84.6, 92.0, 58.5, 83.2, 82.0, 58.8, 77.9),
    "bigbird": _row("fixed", 93.2, (80.2, 80.1), 86.4, 87.6, 91.6, 54.3, 84.7, 84.1, 66.0, 79.4),
    "star": _row("fixed", 96.1, (79.1, 79.0), 86.2, 86.4, 91.2, 59.6, 84.7, 83.9, 60.3, 78.9),
    "dam_u_0.0001": _row("dam_u", 78.9, (82.2, 82.6), 87.3, 89.7, 92.4, 57.3, 86.5, 89.2, 70.8, 82.0),
    "dam_u_0.001": _row("dam_u", 79.2, (82.2, 82.4), 87.1, 89.5, 92.3, 57.2, 86.2, 89.1, 67.9, 81.6),
    "dam_u_0.01": _row("dam_u", 79.8, (81.7, 82.3), 86.8, 89.4, 92.1, 57.2, 86.1, 89.0, 67.1, 81.3),
    "dam_u_0.1": _row("dam_u", 85.8, (81.4, 82.2), 86.5, 89.1, 92.1, 56.6, 84.4, 88.3, 66.8, 80.8),
    "dam_s_0.0001": _row("dam_s", 91.2, (81.7, 81.7), 87.0, 88.3, 92.5, 59.4, 86.7, 88.4, 63.2, 80.9),
    "dam_s_0.001": _row("dam_s", 91.6, (81.0, 81.2), 86.9, 88.0, 92.4, 58.6, 86.2, 85.7, 62.8, 80.3),
    "dam_s_0.01": _row("dam_s", 91.7, (81.1, 80.9), 86.9, 87.9, 92.3, 57.9, 84.8, 85.4, 61.0, 79.8),
    "dam_s_0.1": _row("dam_s", 93.5, (80.9, 81.0), 86.7, 87.7, 92.2, 57.7, 84.8, 85.2, 59.9, 79.6),
}
