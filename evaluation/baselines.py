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
import scipy.sparse as sp

# One definition of the item-item weights, shared with the served model's collaborative term.
from trainer.item_item import EASE_LAMBDAS, ease_weights, item_knn_similarity

Scorer = Callable[[sp.csr_matrix], np.ndarray]
__all__ = ["EASE_LAMBDAS", "ease_weights", "fit_ease", "fit_item_knn", "fit_most_pop", "item_knn_similarity"]


def fit_most_pop(x: sp.csr_matrix) -> Scorer:
    counts = np.asarray(x.sum(axis=0), np.float64).reshape(-1)
    return lambda rows: np.broadcast_to(counts, (rows.shape[0], len(counts))).copy()


def fit_item_knn(x: sp.csr_matrix) -> Scorer:
    similarity = item_knn_similarity(x)
    return lambda rows: np.asarray(rows @ similarity)


def fit_ease(x: sp.csr_matrix, lam: float) -> Scorer:
    active, weights = ease_weights(x, lam)

    def score(rows: sp.csr_matrix) -> np.ndarray:
        scores = np.zeros(rows.shape, np.float64)
        scores[:, active] = np.asarray(rows[:, active] @ weights)
        return scores

    return score
