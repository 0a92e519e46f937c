"""The served retrieval score, and its mix chosen by the pipeline on the user's own validation split.

    score(u, j) = cos(q_u, c_j) + gamma · τ · log p_j + alpha · cf(u, j) / max_j' cf(u, j')

cos: the two towers (unit vectors). log p_j: the item's share of training positives (`item_log_prob`), so
gamma = 1 puts back the popularity that the uncorrected in-batch softmax (`logq_beta` 0) leaves out — its
logits, cos / τ, estimate log p(j | u) − log p(j) (logit adjustment, Menon et al. 2021): one trained model
slides along the accuracy ↔ tail curve that `logq_beta` used to fix per catalog at training time. cf: the
item-item score of the user's history (`trainer.item_item`), with `method` and `recency`, scaled so the
user's best item scores 1. Cold items take their text neighbours' cf and popularity (`item_item.text_fill`).

`choose` tries every combination of `METHODS(catalog)` × `RECENCIES` × `ALPHAS` × `GAMMAS` on the validation
split (each user's last training positive, scored by a model that did not train on it) and keeps the one with
the best Recall@K + tail Recall@K (the tail term keeps the blend from trading the tail away for head hits;
where no validation target is a tail item it is 0 and accuracy alone decides).
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
from collections.abc import Mapping, Sequence

import numpy as np
import scipy.sparse as sp

from evaluation import metrics
from trainer import item_item

logger = logging.getLogger(__name__)

ALPHAS = (0.0, 0.05, 0.1, 0.2, 0.4, 0.8, 1.6, 100.0)  # 100: the item-item score first, the towers break ties
GAMMAS = (0.0, 0.25, 0.5, 0.75, 1.0)
RECENCIES = (1.0, 0.7, 0.4, 0.1)
# Validation users scored per trial (a seeded sample beyond this): bounds the choice's cost on big data.
MAX_VALIDATION_USERS = 5000
_EXCLUDED = -np.inf


@dataclasses.dataclass(frozen=True)
class Blend:
    """The mix of the served score; the default (alpha = gamma = 0) is the towers alone."""

    method: str = item_item.COSINE
    recency: float = 1.0
    alpha: float = 0.0
    gamma: float = 0.0


@dataclasses.dataclass(frozen=True)
class Validation:
    """Validation users as the choice sees them (row i = one user's validation example)."""

    model_scores: np.ndarray  # [V, N] cos(q_u, c_j) of the model that did not train on the targets
    history_rows: np.ndarray  # [V, H] catalog rows of the example's history, PAD = none, newest last
    targets: np.ndarray  # [V] catalog row of the validation positive
    exclude: sp.csr_matrix  # [V, N] nonzero = the user's training items (never recommended)

    def sample(self, max_users: int, seed: int) -> Validation:
        if len(self.targets) <= max_users:
            return self
        keep = np.sort(np.random.default_rng(seed).choice(len(self.targets), max_users, replace=False))
        return Validation(
            self.model_scores[keep], self.history_rows[keep], self.targets[keep], self.exclude[keep]
        )


@dataclasses.dataclass(frozen=True)
class Trial:
    blend: Blend
    recall: float
    tail_recall: float

    @property
    def objective(self) -> float:
        return self.recall + (0.0 if np.isnan(self.tail_recall) else self.tail_recall)


def log_prob(counts: np.ndarray) -> np.ndarray:
    """[N] log of each item's share of positives, an unseen item counting once (as `item_log_prob`)."""
    counts = np.asarray(counts, np.float64)
    return np.log(np.maximum(counts, 1.0) / max(counts.sum(), 1.0)).astype(np.float32)


def blended(
    model_scores: np.ndarray, scaled_cf: np.ndarray, log_prob: np.ndarray, blend: Blend, pop_scale: float
) -> np.ndarray:
    """The served score (module docstring) from its parts: [U, N] + [U, N] + [N] → [U, N]."""
    return model_scores + (blend.gamma * pop_scale) * log_prob[None, :] + blend.alpha * scaled_cf


def _top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """[U, N] → [U, k] rows of the k best scores (order within the list is irrelevant to recall)."""
    k = min(k, scores.shape[1])
    return np.argpartition(-scores, k - 1, axis=1)[:, :k]


def choose(
    validation: Validation,
    tables: Mapping[str, tuple[item_item.NeighbourTable, item_item.TextFill]],
    log_prob: np.ndarray,
    is_tail: np.ndarray,
    k: int,
    pop_scale: float,
    seed: int = 0,
    alphas: Sequence[float] = ALPHAS,
    gammas: Sequence[float] = GAMMAS,
    recencies: Sequence[float] = RECENCIES,
) -> tuple[Blend, list[Trial]]:
    """The best `Blend` on `validation` and every trial, best first.

    Args:
      tables: method → (its neighbour table, its text fill) built from the data the model trained on.
      log_prob: [N] log popularity (text-filled for cold items), as the served model holds it.
      is_tail: [N] tail flags. k: list length. pop_scale: τ (the model's temperature, 1 without one).
    """
    if len(validation.targets) == 0:
        raise ValueError("choose: the validation split has no users")
    validation = validation.sample(MAX_VALIDATION_USERS, seed)
    if not tables:  # no item-item score: only the popularity weight is chosen
        empty = item_item.NeighbourTable(np.zeros([len(log_prob), 0], np.int32), np.zeros([len(log_prob), 0]))
        no_fill = item_item.TextFill(np.zeros([0], np.int32), np.zeros([0, 0], np.int32), np.zeros([0, 0]))
        tables, alphas, recencies = {item_item.COSINE: (empty, no_fill)}, (0.0,), (1.0,)
    base = np.where(validation.exclude.toarray() > 0, _EXCLUDED, validation.model_scores).astype(np.float32)
    trials = []
    for method, recency in itertools.product(tables, recencies):
        table, fill = tables[method]
        cf = item_item.apply_fill(item_item.cf_scores(table, validation.history_rows, recency), fill)
        cf = item_item.scale_per_user(cf)
        for alpha, gamma in itertools.product(alphas, gammas):
            blend = Blend(method, recency, alpha, gamma)
            recs = _top_k(blended(base, cf, log_prob, blend, pop_scale), k)
            trials.append(
                Trial(
                    blend,
                    metrics.recall(recs, validation.targets),
                    metrics.tail_recall(recs, validation.targets, is_tail),
                )
            )
    trials.sort(key=lambda t: -t.objective)  # stable: among equals the earlier (simpler) setting wins
    best = trials[0]
    logger.info(
        "Blend chosen on %d validation users: %s (Recall@%d %.4f, tail %.4f; towers alone %s)",
        len(validation.targets),
        best.blend,
        k,
        best.recall,
        best.tail_recall,
        _towers_alone(trials),
    )
    return best.blend, trials


def _towers_alone(trials: Sequence[Trial]) -> str:
    alone = next((t for t in trials if t.blend.alpha == 0 and t.blend.gamma == 0), None)
    return "n/a" if alone is None else f"{alone.recall:.4f} / {alone.tail_recall:.4f}"


# ------------------------------------------------------------------------------------ what the model holds
TEXT_FILL_SIZE = 10  # text neighbours that lend a cold item their item-item score and popularity


@dataclasses.dataclass(frozen=True)
class ServedBlend:
    """Everything the serving graph needs for the score above, over the N catalog rows."""

    blend: Blend
    table: item_item.NeighbourTable  # empty (n = 0) when blend.alpha is 0
    fill: item_item.TextFill
    log_prob: np.ndarray  # [N] float32, text-filled for items without positives
    pop_scale: float  # τ

    def summary(self) -> dict:
        """The chosen mix and the table's size, as written beside the model (assets.extra/blend.json)."""
        return {
            **dataclasses.asdict(self.blend),
            "pop_scale": self.pop_scale,
            "neighbours": int(self.table.rows.shape[1]),
            "text_filled_items": int(len(self.fill.cold_rows)),
        }


def candidate_tables(
    x: sp.csr_matrix, vectors: np.ndarray, neighbours: int
) -> dict[str, tuple[item_item.NeighbourTable, item_item.TextFill]]:
    """Every item-item method this catalog allows (none when `neighbours` is 0), each with the text fill."""
    if neighbours <= 0:
        return {}
    has_interactions = np.asarray(x.sum(axis=0)).reshape(-1) > 0
    fill = item_item.text_fill(vectors, has_interactions, TEXT_FILL_SIZE)
    return {
        method: (item_item.neighbour_table(x, method, neighbours), fill)
        for method in item_item.methods(int(has_interactions.sum()))
    }


def served_blend(
    blend: Blend,
    x: sp.csr_matrix,
    counts: np.ndarray,
    vectors: np.ndarray,
    neighbours: int,
    pop_scale: float,
    history_only: int = 0,
) -> ServedBlend:
    """The tables of `blend` rebuilt from the final training data: `x` binary, `counts` positives per item.

    history_only: the last columns of `x` are items that are no longer candidates (a catalog refresh's
    removed items): the neighbour table is computed with them, as it was trained, then they are dropped from
    it, so the kept items keep their trained neighbours. `counts` and `vectors` cover the candidates only.
    """
    fill = item_item.text_fill(vectors, np.asarray(counts) > 0, TEXT_FILL_SIZE)
    if blend.alpha > 0 and neighbours > 0:
        table = item_item.neighbour_table(x, blend.method, neighbours)
        table = item_item.without_rows(table, x.shape[1] - history_only)
    else:
        table = item_item.NeighbourTable(
            np.zeros([len(counts), 0], np.int32), np.zeros([len(counts), 0], np.float32)
        )
    return ServedBlend(blend, table, fill, item_item.apply_fill(log_prob(counts), fill), pop_scale)
