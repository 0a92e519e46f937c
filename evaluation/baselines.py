"""Classic baselines on a binary user × item matrix X (numpy/scipy): MostPop, ItemKNN (cosine), EASE.

Each `fit_*` returns a scorer: scorer(X_rows) → dense [rows, N] scores for those users' fit rows.

  MostPop:  score(u, i) = number of users with i in their fit data.
  ItemKNN:  S = cosine(Xᵀ) with a zero diagonal (full neighbourhood, no shrinkage); score = X S.
  EASE:     B = I − P · diagMat(1 / diag(P)) with P = (XᵀX + λI)⁻¹ (Steck 2019), so diag(B) = 0; score = X B.
            Items without fit interactions have an all-zero column in B, so only the others are solved for.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import scipy.linalg
import scipy.sparse as sp

Scorer = Callable[[sp.csr_matrix], np.ndarray]
EASE_LAMBDAS = (50.0, 200.0, 500.0)


def fit_most_pop(x: sp.csr_matrix) -> Scorer:
    counts = np.asarray(x.sum(axis=0), np.float64).reshape(-1)
    return lambda rows: np.broadcast_to(counts, (rows.shape[0], len(counts))).copy()


def item_knn_similarity(x: sp.csr_matrix) -> np.ndarray:
    """[N, N] cosine similarity between item columns, diagonal 0; items never seen have all-zero rows."""
    co = np.asarray((x.T @ x).todense(), np.float64)
    norms = np.sqrt(np.diag(co))
    inverse = np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0)
    similarity = co * inverse[:, None] * inverse[None, :]
    np.fill_diagonal(similarity, 0.0)
    return similarity


def fit_item_knn(x: sp.csr_matrix) -> Scorer:
    similarity = item_knn_similarity(x)
    return lambda rows: np.asarray(rows @ similarity)


def ease_weights(x: sp.csr_matrix, lam: float) -> tuple[np.ndarray, np.ndarray]:
    """(active item indices [A], EASE weights [A, A] among them with a zero diagonal)."""
    active = np.flatnonzero(np.asarray(x.sum(axis=0)).reshape(-1) > 0)
    sub = x[:, active]
    gram = np.asarray((sub.T @ sub).todense(), np.float64)
    gram[np.diag_indices_from(gram)] += lam
    p = scipy.linalg.inv(gram, overwrite_a=True, check_finite=False)
    weights = -p / np.diag(p)[None, :]
    np.fill_diagonal(weights, 0.0)
    return active, weights


def fit_ease(x: sp.csr_matrix, lam: float) -> Scorer:
    active, weights = ease_weights(x, lam)

    def score(rows: sp.csr_matrix) -> np.ndarray:
        scores = np.zeros(rows.shape, np.float64)
        scores[:, active] = np.asarray(rows[:, active] @ weights)
        return scores

    return score
