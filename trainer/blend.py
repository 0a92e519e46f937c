"""The served retrieval score, and its mix chosen by the pipeline on the user's own validation split.

    score(u, j) = cos(q_u, c_j) + gamma · τ · log p_j + alpha · cf(u, j) / max_j' cf(u, j')
                  [+ cold_offset, for a cold item: no training positive, not seen (below)]

cos: the two towers (unit vectors). log p_j: the item's share of training positives (`item_log_prob`), so
gamma = 1 puts back the popularity that the uncorrected in-batch softmax (`logq_beta` 0) leaves out — its
logits, cos / τ, estimate log p(j | u) − log p(j) (logit adjustment, Menon et al. 2021): one trained model
slides along the accuracy ↔ tail curve that `logq_beta` used to fix per catalog at training time. cf: the
item-item score of the user's history (`trainer.item_item`), with `method` and `recency`, scaled so the
user's best item scores 1. Cold items (no training positives: new, or never bought) take their text
neighbours' cf, multiplied by `cold_gain`, and popularity (`item_item.text_fill`), and `cold_offset`. An item
the data has seen without a positive (rated below ExampleGen's threshold: `features.NEGATIVE_RATINGS`) is
not cold: it keeps its own cf (none) and popularity (the floor), since it was seen and not liked.

`choose` tries every combination of `METHODS(catalog)` × `RECENCIES` × `ALPHAS` × `GAMMAS` on the validation
split (each user's last training positive, scored by a model that did not train on it) and keeps the one with
the most hits in the top K, a hit on a tail target counting twice: Recall@K + tail share × tail Recall@K (the
tail term keeps the blend from trading the tail away for head hits; where no validation target is a tail item
it is 0 and accuracy alone decides). A tail hit's worth does not depend on how few targets are tail: with
Recall@K + tail Recall@K, one tail hit outweighed nine other hits on ml-latest-small (68 tail targets among
608), so one validation hit could swing the mix to a 10% lower Recall@K.

The validation split holds no cold item, so nothing above sees what the item-item term does to them: a
warm item's cf is its own, a cold item's a mean of its neighbours', so a large alpha buries cold items.
`choose_cold` then plays the cold-item protocol on the same users: a seeded `PSEUDO_COLD_SHARE` of the items
with positives lose them (their id vector, their cf rows and their popularity, all text-filled as a new
item's would be), in `PSEUDO_COLD_DRAWS` disjoint draws whose users are pooled, and, with the mix above
fixed, `COLD_GAINS` × `COLD_OFFSETS` are tried for the best Recall@K + tail share × tail Recall@K + cold
Recall@K (recall over the users whose target is one of those items) among those that lose at most
`COLD_MAX_RECALL_LOSS` of the Recall@K without them. Items without positives are of two kinds the data
cannot tell apart one by one:
the tail nobody happened to like, and new arrivals; `likely_new_items` counts the second from the popularity
profile (or, where the data rates items below the threshold, takes the items it never saw) and leaves them out
of the replays' lists, since no validation user could have wanted them.
That count also sets the Recall@K the bound reads: the replays make a tenth of the catalog cold whatever the
catalog, so their pooled recall lets cold hits pay for what the terms cost every other list even where
nothing is new. The bound weights the replay's cold- and warm-target users' recalls by the catalog's own new
share instead (`Trial.expected_recall`): a catalog without new items bounds its warm users' recall alone.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
from collections.abc import Mapping, Sequence

import numpy as np
import scipy.sparse as sp

from evaluation import metrics
from trainer import item_item, weighted_top_k

logger = logging.getLogger(__name__)

ALPHAS = (0.0, 0.05, 0.1, 0.2, 0.4, 0.8, 1.6, 100.0)  # 100: the item-item score first, the towers break ties
GAMMAS = (0.0, 0.25, 0.5, 0.75, 1.0)
RECENCIES = (1.0, 0.7, 0.4, 0.1)
COLD_GAINS = (1.0, 2.0, 4.0)
COLD_OFFSETS = (0.0, 0.02, 0.05, 0.1, 0.2, 0.3)  # in units of the towers' cosine
# The cold terms may cost at most this share of the Recall@K without them (weighted as the catalog's new share
# says): cold hits are wanted, not at any price in the warm lists every user sees.
COLD_MAX_RECALL_LOSS = 0.02
# Items made cold when the cold terms are chosen: the share `make eval`'s cold-item protocol uses, in
# disjoint draws whose users are pooled (one draw leaves few users with a cold target on a small catalog).
PSEUDO_COLD_SHARE = 0.1
PSEUDO_COLD_DRAWS = 3
# Validation users scored per trial (a seeded sample beyond this): bounds the choice's cost on big data.
MAX_VALIDATION_USERS = 5000
EXCLUDED = -np.inf  # the score of an item no list may hold


@dataclasses.dataclass(frozen=True)
class Blend:
    """The mix of the served score; the default (alpha = gamma = 0) is the towers alone."""

    method: str = item_item.COSINE
    recency: float = 1.0
    alpha: float = 0.0
    gamma: float = 0.0
    cold_gain: float = 1.0
    cold_offset: float = 0.0


@dataclasses.dataclass(frozen=True)
class Validation:
    """Validation users as the choice sees them (row i = one user's validation example)."""

    model_scores: np.ndarray  # [V, N] cos(q_u, c_j) of the model that did not train on the targets
    history_rows: np.ndarray  # [V, H] catalog rows of the example's history, PAD = none, newest last
    targets: np.ndarray  # [V] catalog row of the validation positive
    exclude: sp.csr_matrix  # [V, N] nonzero = the user's training items (never recommended)
    # The query tower's transformed inputs behind model_scores ({key: [V, ...]}), for the cold replays.
    query_inputs: Mapping[str, np.ndarray] | None = None

    def sample(self, max_users: int, seed: int) -> Validation:
        if len(self.targets) <= max_users:
            return self
        keep = np.sort(np.random.default_rng(seed).choice(len(self.targets), max_users, replace=False))
        return Validation(
            self.model_scores[keep],
            self.history_rows[keep],
            self.targets[keep],
            self.exclude[keep],
            None if self.query_inputs is None else {k: v[keep] for k, v in self.query_inputs.items()},
        )


@dataclasses.dataclass(frozen=True)
class Trial:
    blend: Blend
    recall: float
    tail_recall: float
    cold_recall: float = np.nan  # only in `choose_cold`'s trials
    warm_recall: float = np.nan  # only in `choose_cold`'s trials: over the users whose target is not cold
    tail_share: float = 1.0  # the share of the users whose target is a tail item

    def expected_recall(self, new_share: float) -> float:
        """The recall of a catalog where `new_share` of the targets are new (cold) items: the replay's cold-
        and warm-target users weighted by it (`choose`'s trials: their recall)."""
        if np.isnan(self.warm_recall):
            return self.recall
        if np.isnan(self.cold_recall):
            return self.warm_recall
        return new_share * self.cold_recall + (1.0 - new_share) * self.warm_recall

    @property
    def objective(self) -> float:
        """Recall, a tail hit counting twice (module docstring), plus the cold recall of the cold trials."""
        tail = 0.0 if np.isnan(self.tail_recall) else self.tail_share * self.tail_recall
        return self.recall + tail + (0.0 if np.isnan(self.cold_recall) else self.cold_recall)


def log_prob(counts: np.ndarray) -> np.ndarray:
    """[N] log of each item's share of positives, an unseen item counting once (as `item_log_prob`)."""
    counts = np.asarray(counts, np.float64)
    return np.log(np.maximum(counts, 1.0) / max(counts.sum(), 1.0)).astype(np.float32)


def user_cf(
    table: item_item.NeighbourTable, fill: item_item.TextFill, history_rows: np.ndarray, blend: Blend
) -> np.ndarray:
    """[U, N] the cf term as served: raw scores, text fill (times `cold_gain`), scaled per user."""
    raw = item_item.cf_scores(table, history_rows, blend.recency)
    return item_item.scale_per_user(item_item.apply_fill(raw, gained(fill, blend.cold_gain)))


def gained(fill: item_item.TextFill, gain: float) -> item_item.TextFill:
    """The fill of the cf term: its weights (summing to 1) times `gain`."""
    if gain == 1.0:
        return fill
    return dataclasses.replace(fill, weights=(fill.weights * gain).astype(np.float32))


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
    base = np.where(validation.exclude.toarray() > 0, EXCLUDED, validation.model_scores).astype(np.float32)
    tail_share = float(np.mean(np.asarray(is_tail)[validation.targets]))
    trials = []
    for method, recency in itertools.product(tables, recencies):
        table, fill = tables[method]
        cf = user_cf(table, fill, validation.history_rows, Blend(method, recency))
        candidates = weighted_top_k.pool((base, cf, log_prob), max(weighted_top_k.POOL_SIZE, k))
        for alpha, gamma in itertools.product(alphas, gammas):
            blend = Blend(method, recency, alpha, gamma)
            recs = weighted_top_k.top_k(candidates, (1.0, alpha, gamma * pop_scale), k)
            trials.append(
                Trial(
                    blend,
                    metrics.recall(recs, validation.targets),
                    metrics.tail_recall(recs, validation.targets, is_tail),
                    tail_share=tail_share,
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


@dataclasses.dataclass(frozen=True)
class ColdReplay:
    """Validation users in a catalog where the `is_cold` items have no positives (one pseudo-cold draw)."""

    validation: Validation  # the made-cold columns scored with their text-only (OOV id) candidate vectors
    table: item_item.NeighbourTable  # the warm method's table without the made-cold items' positives
    fill: item_item.TextFill  # the text fill of that catalog's cold items
    log_prob: np.ndarray  # [N] its popularity, text-filled
    is_tail: np.ndarray  # [N] bool
    is_cold: np.ndarray  # [N] bool: unseen in this catalog (made cold, or never seen): what the offset lifts


def choose_cold(
    replays: Sequence[ColdReplay],
    warm: Blend,
    k: int,
    pop_scale: float,
    gains: Sequence[float] = COLD_GAINS,
    offsets: Sequence[float] = COLD_OFFSETS,
    new_share: float = 0.0,
) -> tuple[Blend, list[Trial]]:
    """`warm` with the best `cold_gain` and `cold_offset` (module docstring) and every trial, best first.
    Each trial's recalls pool the users of every replay (cold recall: those whose target is cold there).
    new_share: the share of the catalog's items that are new (`likely_new_items`), which weights the cold-
    and warm-target users' recalls in the bound."""
    bases = [
        np.where(r.validation.exclude.toarray() > 0, EXCLUDED, r.validation.model_scores).astype(np.float32)
        for r in replays
    ]
    targets = np.concatenate([r.validation.targets for r in replays])
    tail_users = np.concatenate([r.is_tail[r.validation.targets] for r in replays])
    cold_users = np.concatenate([r.is_cold[r.validation.targets] for r in replays])
    colds = [np.asarray(r.is_cold, np.float32) for r in replays]  # the part the offset weights
    trials = []
    for gain in gains if warm.alpha else gains[:1]:  # the gain scales the cf term only
        with_gain = dataclasses.replace(warm, cold_gain=gain)
        cfs = [user_cf(r.table, r.fill, r.validation.history_rows, with_gain) for r in replays]
        pools = [
            weighted_top_k.pool((base, cf, r.log_prob, cold), max(weighted_top_k.POOL_SIZE, k))
            for base, cf, cold, r in zip(bases, cfs, colds, replays, strict=True)
        ]
        for offset in offsets:
            blend = dataclasses.replace(with_gain, cold_offset=offset)
            weights = (1.0, blend.alpha, blend.gamma * pop_scale, offset)
            recs = np.concatenate([weighted_top_k.top_k(candidates, weights, k) for candidates in pools])
            trials.append(
                Trial(
                    blend,
                    metrics.recall(recs, targets),
                    metrics.recall(recs, targets, tail_users),
                    metrics.recall(recs, targets, cold_users),
                    metrics.recall(recs, targets, ~cold_users),
                    float(np.mean(tail_users)),
                )
            )
    plain = next((t for t in trials if t.blend == warm), None)
    reference = plain.expected_recall(new_share) if plain else np.nan
    floor = -np.inf if np.isnan(reference) else (1.0 - COLD_MAX_RECALL_LOSS) * reference
    # Stable: among equals gain 1, offset 0 first.
    trials.sort(key=lambda t: (t.expected_recall(new_share) < floor, -t.objective))
    best, plain = trials[0], plain or trials[0]
    logger.info(
        "Cold terms chosen on %d validation users × %d pseudo-cold draws (%d with a cold target), bound on "
        "a %.1f%% new catalog: gain %g, offset %g (Recall@%d %.4f, tail %.4f, cold %.4f, warm %.4f; without "
        "them %.4f / %.4f / %.4f / %.4f)",
        len(replays[0].validation.targets) if replays else 0,
        len(replays),
        int(cold_users.sum()),
        100 * new_share,
        best.blend.cold_gain,
        best.blend.cold_offset,
        k,
        best.recall,
        best.tail_recall,
        best.cold_recall,
        best.warm_recall,
        plain.recall,
        plain.tail_recall,
        plain.cold_recall,
        plain.warm_recall,
    )
    return best.blend, trials


def pseudo_cold_draws(counts: np.ndarray, share: float, draws: int, seed: int) -> list[np.ndarray]:
    """`draws` disjoint [N] bool masks, each round(share × items with positives) of them (seeded): more
    users with a cold target than one draw gives, for the same share of cold items in each catalog."""
    warm = np.random.default_rng(seed).permutation(np.flatnonzero(np.asarray(counts) > 0))
    size = int(round(share * len(warm)))
    masks = []
    for index in range(draws):
        chosen = warm[index * size : (index + 1) * size]
        if len(chosen) == 0:
            break
        made_cold = np.zeros(len(counts), bool)
        made_cold[chosen] = True
        masks.append(made_cold)
    return masks


def unseen_expected(counts: np.ndarray) -> float:
    """How many items the catalog's popularity profile alone leaves without a positive: the bias-corrected
    Chao1 estimate f1·(f1 − 1) / (2·(f2 + 1)) from the items with one and two positives (Chao 1984, 2005)."""
    per_item = np.bincount(np.asarray(counts, np.int64), minlength=3)
    f1, f2 = float(per_item[1]), float(per_item[2])
    return f1 * (f1 - 1) / (2 * (f2 + 1))


def likely_new_items(
    counts: np.ndarray, targets: np.ndarray, seed: int, seen: np.ndarray | None = None
) -> np.ndarray:
    """[N] bool: a seeded draw, among the items without positives that no validation user wants, of as many
    as there are items without positives beyond `unseen_expected` — the new arrivals (or `make eval`'s cold
    items) that the popularity profile does not explain, as opposed to the tail nobody happened to like.
    seen: [N] bool, items the data knows without a positive too (rated below the threshold); when there are
    any, the data tells the two kinds apart itself: the new items are those it never saw.

    Nothing tells whether anyone wants a new item, so the cold replays leave these out of the lists; the
    rest stay in, counted as not wanted, which is what the profile says they are."""
    counts = np.asarray(counts)
    untaken = counts == 0
    targets = np.asarray(targets)
    untaken[targets[targets >= 0]] = False
    if seen is not None and np.any(np.asarray(seen, bool) & (counts == 0)):
        return untaken & ~np.asarray(seen, bool)
    excess = int(round(np.sum(counts == 0) - unseen_expected(counts)))
    candidates = np.flatnonzero(untaken)
    chosen = np.random.default_rng(seed).permutation(candidates)[: max(0, min(excess, len(candidates)))]
    new = np.zeros(len(counts), bool)
    new[chosen] = True
    return new


def without_items(x: sp.csr_matrix, made_cold: np.ndarray) -> sp.csr_matrix:
    """`x` with the `made_cold` item columns emptied."""
    kept = x @ sp.diags((~np.asarray(made_cold, bool)).astype(x.dtype))
    kept = sp.csr_matrix(kept)
    kept.eliminate_zeros()
    return kept


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
    fill: item_item.TextFill  # of the cf term: weights times blend.cold_gain; fill.cold_rows = the cold items
    log_prob: np.ndarray  # [N] float32, text-filled for the cold items (fill.cold_rows)
    pop_scale: float  # τ
    # Ids of the table's rows after the N candidates: items no longer listed (a refresh's removed items)
    # that users' histories still hold, so they still add their neighbours' scores.
    history_only_ids: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0, object))
    # [N] bool: the candidates the data knows (a positive, or a rating below the threshold); None = unknown
    seen: np.ndarray | None = None

    def item_offset(self) -> np.ndarray:
        """[N] float32: blend.cold_offset at the cold items, 0 elsewhere."""
        offset = np.zeros(len(self.log_prob), np.float32)
        offset[self.fill.cold_rows] = self.blend.cold_offset
        return offset

    def summary(self) -> dict:
        """The chosen mix and the table's size, as written beside the model (assets.extra/blend.json)."""
        return {
            **dataclasses.asdict(self.blend),
            "pop_scale": self.pop_scale,
            "neighbours": int(self.table.rows.shape[1]),
            "text_filled_items": int(len(self.fill.cold_rows)),
            "history_only_items": int(len(self.history_only_ids)),
        }


def candidate_tables(
    x: sp.csr_matrix, vectors: np.ndarray, neighbours: int, seen: np.ndarray | None = None
) -> dict[str, tuple[item_item.NeighbourTable, item_item.TextFill]]:
    """Every item-item method this catalog allows (none when `neighbours` is 0), each with the text fill
    (seen: as `item_item.text_fill`'s)."""
    if neighbours <= 0:
        return {}
    has_interactions = np.asarray(x.sum(axis=0)).reshape(-1) > 0
    fill = item_item.text_fill(vectors, has_interactions, TEXT_FILL_SIZE, seen=seen)
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
    history_only: Sequence[bytes] = (),
    seen: np.ndarray | None = None,
) -> ServedBlend:
    """The tables of `blend` rebuilt from the final training data: `x` binary, `counts` positives per item,
    `seen` the items the data knows without a positive too (`item_item.text_fill`), candidates only.

    history_only: the ids of the last columns of `x`, items that are no longer candidates (a catalog
    refresh's removed items): the neighbour table is computed with them, as it was trained, so the kept items
    keep their trained neighbours; they stop being anyone's neighbour but keep their own row, since users'
    histories still hold them. `counts` and `vectors` cover the candidates only.
    """
    has_positives = np.asarray(counts) > 0
    seen = has_positives if seen is None else has_positives | np.asarray(seen, bool)
    fill = item_item.text_fill(vectors, has_positives, TEXT_FILL_SIZE, seen=seen)
    if blend.alpha > 0 and neighbours > 0:
        table = item_item.neighbour_table(x, blend.method, neighbours)
        table = item_item.without_targets(table, x.shape[1] - len(history_only))
    else:
        rows = x.shape[1]
        table = item_item.NeighbourTable(np.zeros([rows, 0], np.int32), np.zeros([rows, 0], np.float32))
    filled_log_prob = item_item.apply_fill(log_prob(counts), fill)
    history_only_ids = np.asarray(list(history_only), object)
    gained_fill = gained(fill, blend.cold_gain)
    return ServedBlend(blend, table, gained_fill, filled_log_prob, pop_scale, history_only_ids, seen)
