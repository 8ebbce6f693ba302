"""The float64 NumPy oracle of minibatch linear CKA with the unbiased estimator.

Written from the formulas (Song et al.'s unbiased HSIC1 by its trace form, and minibatch CKA:
sums of HSIC1 over the batches two streams share), not from ckad's U-centred fast form, so
that a shared mistake is unlikely.
"""

from typing import Dict, List, Sequence, Tuple

import numpy as np


def hsic_unbiased(k: np.ndarray, l: np.ndarray) -> float:
    """HSIC1(K, L) of two n x n kernels, n >= 4."""
    n = k.shape[0]
    assert n >= 4
    kt, lt = k.copy(), l.copy()
    np.fill_diagonal(kt, 0.0)
    np.fill_diagonal(lt, 0.0)
    one = np.ones(n)
    term1 = np.trace(kt @ lt)
    term2 = (one @ kt @ one) * (one @ lt @ one) / ((n - 1) * (n - 2))
    term3 = 2.0 / (n - 2) * (one @ kt @ lt @ one)
    return (term1 + term2 - term3) / (n * (n - 3))


def minibatch_cka(streams: Sequence[str],
                  batches: List[Dict[str, np.ndarray]]) -> Tuple[np.ndarray, np.ndarray]:
    """Returns (values, counts) over `streams` x `streams`.

    `batches` holds, per batch, each stream's activations (n x ..., any float dtype: the
    values as sent, widened to float64). Entry (s, t) is A_st / sqrt(A_ss A_tt), all three
    sums over the batches both streams have; NaN without a common batch.
    """
    grams = []
    for batch in batches:
        g = {}
        for name, x in batch.items():
            x64 = np.asarray(x, dtype=np.float64).reshape(x.shape[0], -1)
            g[name] = x64 @ x64.T
        grams.append(g)
    m = len(streams)
    values = np.full((m, m), np.nan)
    counts = np.zeros((m, m), dtype=np.int64)
    for i, s in enumerate(streams):
        for j, t in enumerate(streams):
            common = [g for g in grams if s in g and t in g]
            counts[i, j] = len(common)
            if not common:
                continue
            a_st = sum(hsic_unbiased(g[s], g[t]) for g in common)
            a_ss = sum(hsic_unbiased(g[s], g[s]) for g in common)
            a_tt = sum(hsic_unbiased(g[t], g[t]) for g in common)
            if a_ss > 0 and a_tt > 0:
                values[i, j] = a_st / np.sqrt(a_ss * a_tt)
    return values, counts


def minibatch_cka_standard_error(s: str, t: str,
                                 batches: List[Dict[str, np.ndarray]]) -> float:
    """Returns the delta-method standard error of minibatch CKA(s, t) (core/MATH.md, "Standard
    error of a minibatch CKA entry"): with (a_b, u_b, v_b) the unbiased HSIC1 of each batch both
    streams have, the gradient of mean(a) / sqrt(mean(u) mean(v)) against numpy.cov (divisor
    m - 1) of those vectors, divided by m. NaN for fewer than 2 common batches."""
    per_batch = []
    for batch in batches:
        if s not in batch or t not in batch:
            continue
        x, y = (np.asarray(batch[n], dtype=np.float64).reshape(batch[n].shape[0], -1)
                for n in (s, t))
        k, l = x @ x.T, y @ y.T
        per_batch.append((hsic_unbiased(k, l), hsic_unbiased(k, k), hsic_unbiased(l, l)))
    if len(per_batch) < 2:
        return float("nan")
    a, u, v = np.array(per_batch).T
    root = np.sqrt(u.mean() * v.mean())
    grad = np.array([1.0 / root, -a.mean() / (2 * u.mean() * root),
                     -a.mean() / (2 * v.mean() * root)])
    sigma = np.cov(np.vstack([a, u, v]))
    return float(np.sqrt(max(grad @ sigma @ grad, 0.0) / len(per_batch)))
