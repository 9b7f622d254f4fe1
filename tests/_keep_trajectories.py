"""Synthetic DAM keep-probability snapshots whose claim-1 answer is known by construction (issue 22), shared by
tests/test_stats.py and tests/test_findings.py. Shapes as snapshots.npz holds them: DAM_s (T, H, L) per offset
|i - j| (0 = the diagonal), DAM_u (T, H, L, L) per entry.

- "early": every position falls below 0.5 before the first snapshot after step 0 (the first-crossing statistic
  sees one tie), then decays towards its own end value; the diagonal falls fastest (time constant 60 steps vs
  100-300) to the lowest end (0.002 vs 0.13-0.45 for offsets 1-8 and 0.01-0.21 beyond, the H200 run's ranges):
  the diagonal is the most dropped position -> supported.
- "noise": every probability stays within 0.5 +- 0.005, the diagonal no different from the rest -> inconclusive.
  With `diagonal_dips_first`, the noise happens to put the diagonal below 0.5 at the first snapshot while every
  other position first crosses later: what the first-crossing statistic reads as "dropped first".
- "walk": no position is learned, but each logit takes Adam-sized random steps (about dam_lr per step in a random
  direction, dam_lr 0.05 as the configs search), so after 1,000 steps many positions wander below 0.25 too: the
  noise of a real search, which the 0.25 threshold alone does not exclude. With `diagonal_drift` the diagonal's
  logit also drifts down by that much per step (a learned drop under the same noise).
- "highest": every other position falls as in "early" to an end in 0.01-0.21, the diagonal rises to 0.9
  -> contradicted. (A position that never goes below 0.25 ties with an undropped diagonal, so "contradicted"
  needs most positions dropped and the diagonal not.)
"""

from __future__ import annotations

import numpy as np

STEPS = np.arange(0, 1001, 50)  # snapshots every 50 steps, as in the H200 run at dam_lr 0.05


def decay(end: np.ndarray, tau: np.ndarray) -> np.ndarray:
    """(T, ...) keep probabilities from 0.5 at step 0 towards `end`, time constant `tau` steps."""
    t = STEPS.reshape((-1,) + (1,) * end.ndim)
    return end + (0.5 - end) * np.exp(-t / tau)


def dam_s(case: str, rng: np.random.Generator, heads: int = 4, L: int = 16, diagonal_dips_first: bool = False):
    """(T, H, L) keep probabilities per offset."""
    if case == "noise":
        keep = 0.5 + rng.uniform(-0.0045, 0.0045, size=(len(STEPS), heads, L))  # DAM_u adds +-0.0005
        keep[0] = 0.5 + rng.uniform(-0.00025, 0.00025, size=(heads, L))  # the initial 1e-3 * randn logits
        if diagonal_dips_first:
            keep[1:, :, 1:] = 0.5 + rng.uniform(0.001, 0.004, size=(len(STEPS) - 1, heads, L - 1))
            keep[1, :, 0] = 0.5 - rng.uniform(0.001, 0.004, size=heads)  # the diagonal's noise dips first
            keep[3, :, 1:] = 0.5 - rng.uniform(0.001, 0.004, size=(heads, L - 1))  # the rest dip 100 steps later
        return keep
    # Offsets 1-8; "highest": every other position dropped (below 0.25 at the end) while the diagonal is kept.
    near = rng.uniform(0.01, 0.21, size=(heads, 8)) if case == "highest" else rng.uniform(0.13, 0.45, size=(heads, 8))
    far = rng.uniform(0.01, 0.21, size=(heads, L - 9))  # offsets 9 and beyond
    diagonal = np.full((heads, 1), 0.9 if case == "highest" else 0.002)
    end = np.concatenate([diagonal, near, far], axis=1)  # (H, L)
    tau = np.concatenate([np.full((heads, 1), 60.0), rng.uniform(100, 300, size=(heads, L - 1))], axis=1)
    keep = decay(end, tau) + rng.uniform(-0.002, 0.002, size=(len(STEPS), heads, L))
    keep[0] = 0.5
    return np.clip(keep, 0.0, 1.0)


def walk(rng: np.random.Generator, heads: int = 4, L: int = 16, dam_lr: float = 0.05, diagonal_drift: float = 0.0):
    """(T, H, L) keep probabilities per offset from random-walk logits (case "walk"): keep = sigmoid(l0 - l1),
    each of l0, l1 moving by N(0, dam_lr^2) per step from the initial 1e-3 * randn."""
    steps = STEPS[-1]
    logit = 1e-3 * rng.standard_normal((heads, L)) + np.cumsum(
        rng.normal(0.0, np.sqrt(2) * dam_lr, size=(steps, heads, L)), axis=0)  # (steps, H, L) after each step
    logit[:, :, 0] -= diagonal_drift * np.arange(1, steps + 1)[:, None]
    at = np.concatenate([1e-3 * rng.standard_normal((1, heads, L)), logit[STEPS[1:] - 1]])  # step 0, then snapshots
    return 1.0 / (1.0 + np.exp(-at))


def dam_u(case: str, rng: np.random.Generator, heads: int = 4, L: int = 12, diagonal_dips_first: bool = False):
    """(T, H, L, L): entry (i, j) follows offset |i - j| of a DAM_s trajectory, plus its own symmetric noise."""
    per_offset = dam_s(case, rng, heads, L, diagonal_dips_first)  # (T, H, L)
    i, j = np.indices((L, L))
    keep = per_offset[:, :, np.abs(i - j)]  # (T, H, L, L)
    jitter = rng.uniform(-0.0005, 0.0005, size=keep.shape)
    keep = keep + (jitter + jitter.swapaxes(-1, -2)) / 2 * (STEPS > 0).reshape(-1, 1, 1, 1)
    return np.clip(keep, 0.0, 1.0)


def first_below_half_rank(steps: np.ndarray, keep: np.ndarray, kind: str) -> np.ndarray:
    """The statistic issue 22 replaced, written out here as a reference: per position the first snapshot after
    step 0 below 0.5 (inf: never), and per head the fraction of the other positions that crossed strictly
    before the diagonal, ties half (DAM_u: per query row, rows averaged)."""
    trained = steps > 0
    below = keep[trained] < 0.5
    first = np.where(below.any(axis=0), steps[trained][below.argmax(axis=0)], np.inf)  # (H, L) or (H, L, L)
    if kind == "dam_s":
        diag, other = first[:, :1], first[:, 1:]
        return (other < diag).mean(axis=1) + 0.5 * (other == diag).mean(axis=1)
    L = first.shape[-1]
    ranks = []
    for head in first:
        rows = [np.mean([(head[r, c] < head[r, r]) + 0.5 * (head[r, c] == head[r, r]) for c in range(L) if c != r])
                for r in range(L)]
        ranks.append(np.mean(rows))
    return np.array(ranks)
