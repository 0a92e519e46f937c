"""The serving SavedModel: transform graph + trained towers + the scored item catalog, five signatures.

  serving_default(examples [B] serialized raw tf.Examples, label optional) →
      score [B] (ranking head), top_k_ids [B, K], top_k_scores [B, K], top_k_is_tail [B, K],
      num_tail_items [B] (the catalog's tail size, for TailCoverage@K)
  transform_features(examples [B]) → the transformed features (TFMA slices on item_is_tail)
  recommend(user_id [B], history [B, H] ("" padding), k scalar int32, mmr_lambda, xquad_lambda scalar float,
            keep_history scalar int32 0 | 1, new_item_boost scalar float >= 0, exclude_ids [B, E],
            allowed_ids [B, A], categories [B, C], brands [B, R] (string filters, "" padding))
      → item_ids [B, k'], scores [B, k'] (served score of each item, boost included), is_tail [B, k'] int64,
        because [B, k'] and reason [B, k'] string (why each item, `explain`)
  rank(user_id [B], history [B, H], item_ids [B, C] ("" padding)) → scores [B, C] ranking-head probability
      (0 for padding)
  item_embeddings(item_ids [N]) → embeddings [N, D] candidate-tower vectors, found [N] bool

The [B, ...] inputs of `recommend` and `rank` must have the same B, else the call fails with
INVALID_ARGUMENT "user_id has 2 rows but history has 1 ..." (`same_rows`).

`recommend`'s filters (`features.FILTER_MAX_WIDTH`: their names and widest rows, beyond which a call is
INVALID_ARGUMENT naming the input and the limit) mask the catalog like the history exclusion, before the base
top-k and the re-ranking pool: exclude_ids are never returned; allowed_ids (include-only) let only those items
pass; categories and brands (include-only, any-of, the catalog's raw strings, held in the SavedModel) let an
item pass when it has one of the row's categories / its brand is one of the row's brands. A row of only ""
(or width 0) restricts nothing, so empty filters give exactly the unfiltered lists; unknown ids are ignored,
and an include-only row of only unknown values lets nothing pass (that user's list is all padding).
exclude_ids hold even with keep_history 1.

Retrieval is a brute-force matmul against the candidate vectors of every catalog item, computed once here,
followed by `tf.math.top_k`; the given history is excluded, except by `recommend` with keep_history 1,
where history items are scored like any other (RecBole's full-catalog protocol, which text-based sequential
recommenders report; keep_history other than 0 or 1 is INVALID_ARGUMENT). `recommend` then re-ranks the top
max(rerank_pool, k) of that base ranking with `trainer.rerank.greedy_rerank` (MMR over the items' cached BERT
text vectors, xQuAD over head/tail with the user's tail share from history, else the catalog's tail share of
train interactions); both λ = 0 give exactly the base ranking. new_item_boost is added to the base score
of every new item (`features.IS_NEW`, as catalog.jsonl flags it) before the top-k: a launch's soft push, on
top of the cold offset the Trainer chose (0 = the trained score; < 0 or non-finite is INVALID_ARGUMENT).
k' = min(k, catalog size); a user with fewer than k' eligible items gets "" ids, the lowest float32 score
and is_tail 0 in the remaining slots. An unknown user embeds to the zero user vector, so history (and the
model's learned popularity) decides.

Each recommended item comes with `because` (the history item that supports it most) and a `reason` code
(`features.REASONS`: new_item > tail_discovery > similar_to > popular), computed on the final list, so they
follow item_ids slot by slot ("" in padding slots); see `explain` and `features.BECAUSE`.

Items outside the catalog (in `rank` / `item_embeddings`) all get one shared vector: the candidate tower on
the OOV item id, no text, no brand or categories, price_z 0. Catalog items that are OOV to the item
vocabulary (cold) keep their own text vector and features. Only TF core and tensorflow-text ops (the
tokenizer inside the transform graph) are in the graph, so stock TF Serving loads it, and every file it needs
(vocabularies as assets, catalog as variables) is inside the export folder.

Next to the SavedModel, assets.extra/catalog.jsonl (`features.CATALOG_METADATA_FIELDS`, TF Serving ignores
it) holds each catalog item's title, brand, categories, is_tail and is_new (no positive train interaction,
and not rated below the threshold either),
so a service shows the titles of the model version that answered; the Pusher copies it with the model.

Example:
  catalog, item_metadata = train.load_catalog(catalog_files, tft.TFTransformOutput(transform_dir))
  vectors = candidate_vectors(model, catalog, batch_size=512)
  served = blend.served_blend(chosen, x, counts, vectors, neighbours=50, pop_scale=0.1)  # train.run_fn's
  export_serving_model(model, tft.TFTransformOutput(transform_dir), catalog, item_metadata, "/tmp/serving",
                       top_k=10, served=served, rerank_pool=100, vectors=vectors)
  loaded = tf.saved_model.load("/tmp/serving")
  loaded.signatures["recommend"](user_id=tf.constant(["u1"]), history=tf.constant([["i3", ""]]),
                                 k=tf.constant(5), mmr_lambda=tf.constant(0.0), xquad_lambda=tf.constant(0.3),
                                 keep_history=tf.constant(0), new_item_boost=tf.constant(0.0),
                                 exclude_ids=tf.constant([["i7"]]),
                                 allowed_ids=tf.constant([[""]]), categories=tf.constant([["pens"]]),
                                 brands=tf.constant([[""]]))
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import tensorflow as tf
import tensorflow_transform as tft
from tf_keras.src.saving.legacy.saved_model import utils as keras_saved_model_utils

from trainer import blend, features, item_item, rerank
from trainer.model import CANDIDATE_KEYS, TailTowerModel, fill_misses

logger = logging.getLogger(__name__)

FeatureSpec = Mapping[str, tf.io.FixedLenFeature | tf.io.VarLenFeature | tf.io.RaggedFeature]
# Excluded (history) items score this, not -inf, so that REST/JSON clients can parse every output.
_EXCLUDED_SCORE = np.finfo(np.float32).min


# ------------------------------------------------------------------------------------ raw features
def _neutral(dtype: tf.DType) -> str | int | float:
    return "" if dtype == tf.string else 0


def optional_raw_spec(raw_feature_spec: FeatureSpec) -> dict:
    """The raw spec with a neutral default ("" / 0) on every FixedLenFeature that has none.

    Parsing with it accepts examples that lack some features: serving examples without a label, catalog
    examples without the user-side features.
    """
    spec = {}
    for name, feature in raw_feature_spec.items():
        if isinstance(feature, tf.io.FixedLenFeature) and feature.default_value is None:
            default = np.full(feature.shape, _neutral(feature.dtype)).tolist()
            feature = tf.io.FixedLenFeature(feature.shape, feature.dtype, default_value=default)
        spec[name] = feature
    return spec


def _batch_size(raw: Mapping[str, tf.Tensor]) -> tf.Tensor:
    value = next(iter(raw.values()))
    if isinstance(value, tf.SparseTensor):
        return value.dense_shape[0]
    if isinstance(value, tf.RaggedTensor):
        return value.nrows()
    return tf.shape(value, out_type=tf.int64)[0]


def _neutral_value(feature, batch_size: tf.Tensor):
    """An all-default value of `feature` for `batch_size` examples, as `tf.io.parse_example` returns it."""
    empty = tf.zeros([0], feature.dtype)
    if isinstance(feature, tf.io.FixedLenFeature):
        default = feature.default_value
        if default is None:
            default = _neutral(feature.dtype)
        shape = tf.concat([[batch_size], tf.constant(feature.shape, tf.int64)], axis=0)
        return tf.broadcast_to(tf.constant(default, feature.dtype), shape)
    if isinstance(feature, tf.io.VarLenFeature):
        return tf.SparseTensor(tf.zeros([0, 2], tf.int64), empty, tf.stack([batch_size, 0]))
    if isinstance(feature, tf.io.RaggedFeature):
        return tf.RaggedTensor.from_row_lengths(empty, tf.zeros([batch_size], tf.int64))
    raise TypeError(f"no neutral value for feature spec {feature!r}")


def with_default_raw_features(raw: Mapping[str, tf.Tensor], raw_feature_spec: FeatureSpec) -> dict:
    """`raw` plus a neutral value (""/0/empty) for every feature of `raw_feature_spec` that it lacks.

    The transform graph needs all raw inputs; catalog examples have no user side and `recommend` has no item
    side. Batch size is taken from the first value of `raw` (which must not be empty).
    """
    if not raw:
        raise ValueError("with_default_raw_features needs at least one raw feature")
    batch_size = _batch_size(raw)
    filled = dict(raw)
    for name, feature in raw_feature_spec.items():
        if name not in filled:
            filled[name] = _neutral_value(feature, batch_size)
    return filled


def _as_raw(value: tf.Tensor, feature) -> tf.Tensor:
    """A dense [B] or right-padded [B, H] signature input → the form `feature` parses to."""
    if isinstance(feature, tf.io.FixedLenFeature):
        return tf.reshape(value, [-1, *feature.shape])
    sparse = tf.sparse.from_dense(value)  # drops the "" padding
    if isinstance(feature, tf.io.VarLenFeature):
        return sparse
    if isinstance(feature, tf.io.RaggedFeature):
        return tf.RaggedTensor.from_sparse(sparse)
    raise TypeError(f"cannot feed a dense input to feature spec {feature!r}")


def _dense(value) -> tf.Tensor:
    if isinstance(value, tf.SparseTensor):
        return tf.sparse.to_dense(value)
    if isinstance(value, tf.RaggedTensor):
        return value.to_tensor()
    return value


# ------------------------------------------------------------------------------------ serving module
def same_rows(inputs: Mapping[str, tf.Tensor]) -> dict[str, tf.Tensor]:
    """`inputs` (name → [B, ...]) once they are checked to have the same number of rows, else an
    INVALID_ARGUMENT naming two of them and their sizes (TF Serving answers it as a 400).

    Without it, a `recommend` with 2 user ids and 1 history answered one list: the second request vanished.
    Every op that reads these inputs waits for the check, so a mismatch gets this error and no other.
    """
    (first, first_value), *others = inputs.items()
    rows = tf.shape(first_value)[0]
    checks = []
    for name, value in others:
        other_rows = tf.shape(value)[0]
        template = f"{first} has {{}} rows but {name} has {{}} (every input needs one row per user)"
        message = tf.strings.format(template, (rows, other_rows))
        checks.append(tf.debugging.Assert(tf.equal(rows, other_rows), [message]))
    with tf.control_dependencies(checks):
        return {name: tf.identity(value) for name, value in inputs.items()}


def at_most_wide(inputs: Mapping[str, tf.Tensor], max_width: Mapping[str, int]) -> dict[str, tf.Tensor]:
    """`inputs` (name → [B, X]) once each is checked to be at most `max_width[name]` wide, else an
    INVALID_ARGUMENT naming the input, its width and the limit (like `same_rows`)."""
    checks = []
    for name, value in inputs.items():
        width, limit = tf.shape(value)[1], max_width[name]
        template = f"{name} has {{}} values per row (padding included); at most {limit} are accepted"
        checks.append(tf.debugging.Assert(width <= limit, [tf.strings.format(template, (width,))]))
    with tf.control_dependencies(checks):
        return {name: tf.identity(value) for name, value in inputs.items()}


def row_hits(rows: tf.Tensor, width: int) -> tf.Tensor:
    """rows [B, X] int64 (-1: none) → [B, width] bool, true at each row's listed positions."""
    batch_index = tf.broadcast_to(tf.range(tf.shape(rows, out_type=tf.int64)[0])[:, None], tf.shape(rows))
    hit = rows >= 0
    indices = tf.stack([tf.boolean_mask(batch_index, hit), tf.boolean_mask(rows, hit)], axis=1)
    shape = tf.stack([tf.shape(rows, out_type=tf.int64)[0], tf.constant(width, tf.int64)])
    return tf.scatter_nd(indices, tf.ones([tf.shape(indices)[0]]), shape) > 0


def unrestricted(values: tf.Tensor) -> tf.Tensor:
    """values [B, X] string filter → [B, 1] bool: the row lists nothing (only "" padding, or width 0)."""
    return tf.logical_not(tf.reduce_any(values != "", axis=1, keepdims=True))


def facet_rows(values_per_item: Sequence[Sequence[str]]) -> tuple[list[str], np.ndarray]:
    """Each catalog item's brand ([s]) or categories → (vocabulary ["", values sorted...], rows [N, M] int64:
    each item's values as vocabulary positions, padded with 0, the "" a request never sets)."""
    vocabulary = ["", *sorted({value for values in values_per_item for value in values} - {""})]
    position = {value: i for i, value in enumerate(vocabulary)}
    width = max([1, *(len(values) for values in values_per_item)])
    rows = np.zeros([len(values_per_item), width], np.int64)
    for item, values in enumerate(values_per_item):
        rows[item, : len(values)] = [position[value] for value in values]
    return vocabulary, rows


def _string_table(keys: Sequence[str]) -> tf.lookup.StaticHashTable:
    """key → its position in `keys` (int64), -1 for any other string."""
    return tf.lookup.StaticHashTable(
        tf.lookup.KeyValueTensorInitializer(
            tf.constant(np.asarray(keys, dtype=object), tf.string), tf.range(len(keys), dtype=tf.int64)
        ),
        default_value=-1,
    )


class Facet(tf.Module):
    """One include-only any-of filter (brands, categories) over the catalog's raw values.

    Args:
      values_per_item: per catalog row, the item's values ([brand], or its categories; "" = none).
    """

    def __init__(self, values_per_item: Sequence[Sequence[str]]):
        super().__init__()
        vocabulary, rows = facet_rows(values_per_item)
        self._size = len(vocabulary)
        self._items = len(rows)
        self.table = _string_table(vocabulary)
        self.item_rows = tf.Variable(rows, trainable=False)

    def passes(self, requested: tf.Tensor) -> tf.Tensor:
        """requested [B, X] string ("" padding) → [B, N] bool: the item has one of the row's values (every
        item for a row without values)."""
        free = unrestricted(requested)
        # Skipped when no row filters (every unfiltered call): the gather is [B, N, M].
        return tf.cond(
            tf.reduce_all(free),
            lambda: tf.ones(tf.stack([tf.shape(requested)[0], self._items]), tf.bool),
            lambda: tf.logical_or(self._has_one_of(requested), free),
        )

    def _has_one_of(self, requested: tf.Tensor) -> tf.Tensor:
        rows = self.table.lookup(requested)
        none = -tf.ones_like(rows)
        wanted = row_hits(tf.where(rows > 0, rows, none), self._size)  # [B, V]; "" (position 0) is padding
        return tf.reduce_any(tf.gather(wanted, self.item_rows, axis=1), axis=-1)  # [B, N, M] → [B, N]


def item_item_scores(
    sources: tf.Tensor,
    slot_weights: tf.Tensor,
    neighbour_rows: tf.Tensor,
    neighbour_weights: tf.Tensor,
    fill_cold_rows: tf.Tensor,
    fill_rows: tf.Tensor,
    fill_weights: tf.Tensor,
    num_items: int | None = None,
) -> tf.Tensor:
    """The graph's `item_item.cf_scores` → `apply_fill` → `scale_per_user`, in TF core ops.

    Args:
      sources: [B, H] int64 table rows of the history (-1: padding or outside the table), newest last.
      slot_weights: [H] recency^age per history slot. neighbour_rows / neighbour_weights: [N (+ G), n]
        table; rows after the first `num_items` (default all) are history sources only.
      fill_cold_rows [C], fill_rows [C, m], fill_weights [C, m]: the text fill of items without neighbours.

    Returns:
      [B, num_items] float32, each row divided by its maximum.
    """
    if num_items is None:
        size = tf.shape(neighbour_rows, out_type=tf.int64)[0]
    else:
        size = tf.constant(num_items, tf.int64)
    weights_per_slot = slot_weights[tf.newaxis, :] * tf.cast(sources >= 0, tf.float32)  # [B, H]
    targets = tf.gather(neighbour_rows, tf.maximum(sources, 0))  # [B, H, n]
    weights = tf.gather(neighbour_weights, tf.maximum(sources, 0)) * weights_per_slot[..., tf.newaxis]
    users = tf.shape(sources, out_type=tf.int64)[0]
    user = tf.broadcast_to(tf.range(users)[:, tf.newaxis, tf.newaxis], tf.shape(targets, out_type=tf.int64))
    valid = (targets >= 0) & (targets < size)  # a neighbour past the candidates would score another user
    segments = tf.boolean_mask(user * size + targets, valid)
    flat = tf.math.unsorted_segment_sum(tf.boolean_mask(weights, valid), segments, users * size)
    cf = tf.reshape(flat, tf.stack([users, size]))  # [B, N]
    filled = tf.reduce_sum(tf.gather(cf, fill_rows, axis=1) * fill_weights, axis=-1)  # [B, C]
    cf = tf.transpose(
        tf.tensor_scatter_nd_update(tf.transpose(cf), fill_cold_rows[:, tf.newaxis], tf.transpose(filled))
    )
    return cf / tf.maximum(tf.reduce_max(cf, axis=1, keepdims=True), item_item.FLOOR)


def supporting_slots(
    items: tf.Tensor, history: tf.Tensor, usable: tf.Tensor, slot_weights: tf.Tensor
) -> tf.Tensor:
    """The history slot that supports each item most: the usable slot with the largest weight × cosine.

    Args:
      items: [B, k, D] vectors of the recommended items; history: [B, H, D] vectors of the history slots.
      usable: [B, H] bool, the slots that may be chosen; slot_weights: [H] positive.

    Returns:
      [B, k] int64 slot indices (0 in a row without a usable slot).
    """
    unit_items, unit_history = tf.math.l2_normalize(items, axis=-1), tf.math.l2_normalize(history, axis=-1)
    cosine = tf.matmul(unit_items, unit_history, transpose_b=True)  # [B, k, H]
    return tf.argmax(tf.where(usable[:, tf.newaxis, :], cosine * slot_weights, -np.inf), axis=-1)


def explain(
    history: tf.Tensor,
    slots: tf.Tensor,
    usable: tf.Tensor,
    valid: tf.Tensor,
    is_new: tf.Tensor,
    is_tail: tf.Tensor,
) -> dict[str, tf.Tensor]:
    """`features.BECAUSE` and `features.REASON` [B, k] of a list.

    Args:
      history: [B, H] ids; slots: [B, k] each item's supporting slot (`supporting_slots`); usable: [B, H].
      valid: [B, k] false in padding slots (both outputs ""); is_new, is_tail: [B, k] bool per item.
    """
    explained = valid & tf.reduce_any(usable, axis=1, keepdims=True)
    reason = tf.where(
        explained,
        tf.where(is_tail, features.REASON_TAIL_DISCOVERY, features.REASON_SIMILAR_TO),
        features.REASON_POPULAR,
    )
    return {
        features.BECAUSE: tf.where(explained, tf.gather(history, slots, batch_dims=1), ""),
        features.REASON: tf.where(valid, tf.where(is_new, features.REASON_NEW_ITEM, reason), ""),
    }


class ServingModule(tf.Module):
    """Holds what the signatures need; its tf.functions are the signatures.

    Args:
      model: the trained model.
      tft_layer: `tf_transform_output.transform_features_layer()`.
      raw_feature_spec: the transform's raw feature spec.
      catalog_ids: [N] unique item ids; candidate_vectors: [N, D]; catalog_is_tail: [N] 0/1;
      catalog_is_new: [N] bool (`new_items`).
      unknown_vector: [D], the candidate vector of any item outside the catalog.
      tail_prior: P(tail | u) for a user without known history (xQuAD).
      served: the served score's popularity and item-item terms (`trainer.blend`).
      top_k: length of the `serving_default` top-K lists.
      rerank_pool: base-ranking candidates `recommend` re-ranks (at least k).
      item_metadata: BRAND (str) and CATEGORIES (list of str) per catalog row, for `recommend`'s filters.
    """

    def __init__(
        self,
        model: TailTowerModel,
        tft_layer: tf.keras.Model,
        raw_feature_spec: FeatureSpec,
        catalog_ids: np.ndarray,
        candidate_vectors: np.ndarray,
        catalog_is_tail: np.ndarray,
        catalog_is_new: np.ndarray,
        unknown_vector: np.ndarray,
        tail_prior: float,
        served: blend.ServedBlend,
        top_k: int,
        rerank_pool: int,
        item_metadata: Mapping[str, Sequence],
    ):
        super().__init__()
        sizes = {name: len(item_metadata[name]) for name in (features.BRAND, features.CATEGORIES)}
        if set(sizes.values()) != {len(catalog_ids)}:
            raise ValueError(f"item_metadata has {sizes} rows for {len(catalog_ids)} catalog items")
        table_rows = len(catalog_ids) + len(served.history_only_ids)
        if len(candidate_vectors) != len(catalog_ids) or len(served.table.rows) != table_rows:
            raise ValueError(
                f"{len(candidate_vectors)} candidate vectors and {len(served.table.rows)} item-item rows "
                f"for {len(catalog_ids)} catalog items and {len(served.history_only_ids)} history-only ones"
            )
        self.model = model
        self.tft_layer = tft_layer
        self._raw_spec = dict(raw_feature_spec)
        self._parse_spec = optional_raw_spec(raw_feature_spec)
        self._k = top_k
        self._pool = rerank_pool
        self._size = len(catalog_ids)
        self.num_tail_items = int(np.sum(catalog_is_tail))
        self.tail_prior = tf.Variable(float(tail_prior), trainable=False, dtype=tf.float32)
        self.catalog_ids = tf.Variable(np.asarray(catalog_ids, dtype=object), trainable=False)
        self.candidate_vectors = tf.Variable(np.asarray(candidate_vectors, np.float32), trainable=False)
        self.unknown_vector = tf.Variable(np.asarray(unknown_vector, np.float32), trainable=False)
        self.catalog_is_tail = tf.Variable(np.asarray(catalog_is_tail, np.int64), trainable=False)
        self.catalog_is_new = tf.Variable(np.asarray(catalog_is_new, bool), trainable=False)
        self._blend = served.blend
        self._pop_weight = served.blend.gamma * served.pop_scale
        self.item_log_prob = tf.Variable(np.asarray(served.log_prob, np.float32), trainable=False)
        self.neighbour_rows = tf.Variable(np.asarray(served.table.rows, np.int64), trainable=False)
        self.neighbour_weights = tf.Variable(np.asarray(served.table.weights, np.float32), trainable=False)
        self.fill_cold_rows = tf.Variable(np.asarray(served.fill.cold_rows, np.int64), trainable=False)
        self.fill_rows = tf.Variable(np.asarray(served.fill.rows, np.int64), trainable=False)
        self.fill_weights = tf.Variable(np.asarray(served.fill.weights, np.float32), trainable=False)
        self.item_offset = tf.Variable(served.item_offset(), trainable=False)  # cold_offset on cold items
        self.history_slot_weights = tf.constant(
            item_item.position_weights(features.HISTORY_LENGTH, served.blend.recency)
        )
        self.catalog_rows = _string_table(catalog_ids)
        # The item-item table's rows: the catalog, then the items only histories still hold (blend.py).
        history_only = served.history_only_ids
        self.history_sources = (
            _string_table([*catalog_ids, *history_only]) if len(history_only) else self.catalog_rows
        )
        self.brands = Facet([[brand] for brand in item_metadata[features.BRAND]])
        self.categories = Facet(item_metadata[features.CATEGORIES])

    def _transform(self, examples: tf.Tensor) -> dict:
        raw = tf.io.parse_example(examples, self._parse_spec)
        return self.tft_layer(with_default_raw_features(raw, self._raw_spec))

    def _query(self, user_id: tf.Tensor, history: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """user_id [B], history [B, H] ("" padding) → (query embeddings [B, D], the history the model reads:
        its last HISTORY_LENGTH ids, left-padded with "")."""
        raw = {
            features.USER_ID: _as_raw(user_id, self._raw_spec[features.USER_ID]),
            features.HISTORY: _as_raw(history, self._raw_spec[features.HISTORY]),
        }
        transformed = self.tft_layer(with_default_raw_features(raw, self._raw_spec))
        return self.model.query_embedding(transformed), transformed[features.HISTORY]

    def _scores(self, query: tf.Tensor, history: tf.Tensor) -> tf.Tensor:
        """query [B, D], history [B, HISTORY_LENGTH] (left-padded ids) → served scores [B, N] (blend.py)."""
        scores = tf.matmul(query, self.candidate_vectors, transpose_b=True)
        if self._pop_weight:
            scores += self._pop_weight * self.item_log_prob[tf.newaxis, :]
        if self._blend.alpha and self.neighbour_rows.shape[1]:
            scores += self._blend.alpha * self._item_item_scores(history)
        if self._blend.cold_offset:
            scores += self.item_offset[tf.newaxis, :]
        return scores

    def _item_item_scores(self, history: tf.Tensor) -> tf.Tensor:
        """history [B, HISTORY_LENGTH] → per-user scaled item-item scores [B, N]."""
        return item_item_scores(
            self.history_sources.lookup(history),
            self.history_slot_weights,
            self.neighbour_rows,
            self.neighbour_weights,
            self.fill_cold_rows,
            self.fill_rows,
            self.fill_weights,
            self._size,
        )

    def _listed(self, item_ids: tf.Tensor) -> tf.Tensor:
        """item_ids [B, H] → [B, N] bool, true at the catalog rows of those ids (others are ignored)."""
        return row_hits(self.catalog_rows.lookup(item_ids), self._size)  # -1: outside the catalog / padding

    def _passes_filters(self, filters: Mapping[str, tf.Tensor]) -> tf.Tensor:
        """`recommend`'s filters (name → [B, X] string) → [B, N] bool, the catalog items they let through."""
        allowed = filters[features.ALLOWED_IDS]
        return (
            ~self._listed(filters[features.EXCLUDE_IDS])
            & (self._listed(allowed) | unrestricted(allowed))
            & self.categories.passes(filters[features.CATEGORIES])
            & self.brands.passes(filters[features.BRANDS])
        )

    def _top_k(self, query: tf.Tensor, history: tf.Tensor, k: tf.Tensor):
        """query [B, D], history [B, HISTORY_LENGTH] (excluded) → ids, scores, is_tail [B, min(k, N)]."""
        scores = self._scores(query, history)  # [B, N]
        excluded = self._listed(history)
        scores = tf.where(excluded, _EXCLUDED_SCORE, scores)
        k = tf.minimum(tf.cast(k, tf.int32), tf.shape(scores)[1])
        top_scores, top_rows = tf.math.top_k(scores, k=k)
        return (tf.gather(self.catalog_ids, top_rows), top_scores, tf.gather(self.catalog_is_tail, top_rows))

    def _pooling_weights(self) -> tf.Tensor:
        """[HISTORY_LENGTH] the query tower's weight of each history slot, up to a common factor: its
        softmax weights with position pooling, else equal (attention has no per-slot weight)."""
        pooling = self.model.query_tower.position_pooling
        if pooling is None:
            return tf.ones([features.HISTORY_LENGTH])
        logits = tf.cast(pooling.position_logits, tf.float32)
        return tf.exp(logits - tf.reduce_max(logits))  # a row's softmax denominator changes no argmax

    def _explain(self, history: tf.Tensor, rows: tf.Tensor, valid: tf.Tensor) -> dict[str, tf.Tensor]:
        """history [B, HISTORY_LENGTH] (the ids the query tower read), rows [B, k] catalog rows of the list,
        valid [B, k] → `explain`'s BECAUSE and REASON, from candidate vectors (history outside the catalog
        is not usable)."""
        history_rows = self.catalog_rows.lookup(history)
        usable = history_rows >= 0
        slots = supporting_slots(
            tf.gather(self.candidate_vectors, rows),
            tf.gather(self.candidate_vectors, tf.maximum(history_rows, 0)),
            usable,
            self._pooling_weights(),
        )
        is_new, is_tail = tf.gather(self.catalog_is_new, rows), tf.gather(self.catalog_is_tail, rows) > 0
        return explain(history, slots, usable, valid, is_new, is_tail)

    def _tail_prob(self, history: tf.Tensor) -> tf.Tensor:
        """history [B, H] → P(tail | u) [B] from the catalog items among it (else the prior)."""
        rows = self.catalog_rows.lookup(history)
        is_tail = tf.gather(self.catalog_is_tail, tf.maximum(rows, 0))
        return rerank.tail_share(is_tail, rows >= 0, self.tail_prior)

    def _item_vectors(self, item_ids: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """item_ids [...] → (candidate vectors [..., D], found [...] bool); unfound → the OOV vector."""
        rows = self.catalog_rows.lookup(item_ids)
        found = rows >= 0
        vectors = tf.gather(self.candidate_vectors, tf.maximum(rows, 0))
        return tf.where(found[..., tf.newaxis], vectors, self.unknown_vector), found

    def _example_candidates(self, transformed: Mapping[str, tf.Tensor]) -> tf.Tensor:
        """[B, D] candidate vectors of the examples' items: the index's for catalog items (as `rank` scores
        them, whatever text the example brings: train examples bring none), the candidate tower over the
        example's own features, text included, for the others."""
        vectors, found = self._item_vectors(transformed[features.ITEM_ID])
        own = {key: transformed[key] for key in CANDIDATE_KEYS}
        return fill_misses(vectors, found, self.model.candidate_embedding, own)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=features.EXAMPLES)])
    def serve_examples(self, examples: tf.Tensor) -> dict:
        transformed = self._transform(examples)
        query = self.model.query_embedding(transformed)
        candidate = self._example_candidates(transformed)
        score = tf.sigmoid(self.model.ranking_logits(query, candidate))
        ids, scores, is_tail = self._top_k(query, transformed[features.HISTORY], self._k)
        return {
            features.SCORE: score,
            features.TOP_K_IDS: ids,
            features.TOP_K_SCORES: scores,
            features.TOP_K_IS_TAIL: is_tail,
            features.NUM_TAIL_ITEMS: tf.fill(tf.shape(score), tf.constant(self.num_tail_items, tf.int64)),
        }

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=features.EXAMPLES)])
    def transform_features(self, examples: tf.Tensor) -> dict:
        return {name: _dense(value) for name, value in self._transform(examples).items()}

    @tf.function(
        input_signature=[
            tf.TensorSpec([None], tf.string, name=features.USER_ID),
            tf.TensorSpec([None, None], tf.string, name=features.HISTORY),
            tf.TensorSpec([], tf.int32, name=features.K),
            tf.TensorSpec([], tf.float32, name=features.MMR_LAMBDA),
            tf.TensorSpec([], tf.float32, name=features.XQUAD_LAMBDA),
            tf.TensorSpec([], tf.int32, name=features.KEEP_HISTORY),
            tf.TensorSpec([], tf.float32, name=features.NEW_ITEM_BOOST),
            tf.TensorSpec([None, None], tf.string, name=features.EXCLUDE_IDS),
            tf.TensorSpec([None, None], tf.string, name=features.ALLOWED_IDS),
            tf.TensorSpec([None, None], tf.string, name=features.CATEGORIES),
            tf.TensorSpec([None, None], tf.string, name=features.BRANDS),
        ]
    )
    def recommend(
        self,
        user_id: tf.Tensor,
        history: tf.Tensor,
        k: tf.Tensor,
        mmr_lambda: tf.Tensor,
        xquad_lambda: tf.Tensor,
        keep_history: tf.Tensor,
        new_item_boost: tf.Tensor,
        exclude_ids: tf.Tensor,
        allowed_ids: tf.Tensor,
        categories: tf.Tensor,
        brands: tf.Tensor,
    ) -> dict:
        filters = {
            features.EXCLUDE_IDS: exclude_ids,
            features.ALLOWED_IDS: allowed_ids,
            features.CATEGORIES: categories,
            features.BRANDS: brands,
        }
        checked = same_rows(
            {
                features.USER_ID: user_id,
                features.HISTORY: history,
                **at_most_wide(filters, features.FILTER_MAX_WIDTH),
            }
        )
        user_id, history = checked.pop(features.USER_ID), checked.pop(features.HISTORY)
        query, recent = self._query(user_id, history)
        # Checked rather than read as "nonzero = keep": a client sending 2 or -1 meant something else.
        bad_keep = "keep_history must be 0 or 1"
        bad_boost = "new_item_boost must be a finite number >= 0"
        checks = [
            tf.debugging.assert_greater_equal(keep_history, 0, message=bad_keep),
            tf.debugging.assert_less_equal(keep_history, 1, message=bad_keep),
            tf.debugging.assert_greater_equal(new_item_boost, 0.0, message=bad_boost),
            tf.debugging.assert_equal(tf.math.is_finite(new_item_boost), True, message=bad_boost),
        ]
        with tf.control_dependencies(checks):
            keep = tf.equal(keep_history, 1)
            new_items = new_item_boost * tf.cast(self.catalog_is_new, tf.float32)  # [N]
        scores = self._scores(query, recent) + new_items[tf.newaxis, :]  # [B, N]
        kept = keep | ~self._listed(history)  # keep_history 1: every catalog item
        eligible = kept & self._passes_filters(checked)  # the filters hold whatever keep_history says
        k = tf.minimum(k, self._size)  # k > catalog: clamp; k < 1 is rejected by greedy_rerank
        pool = tf.minimum(tf.maximum(k, self._pool), self._size)
        pool_scores, pool_rows = tf.math.top_k(tf.where(eligible, scores, _EXCLUDED_SCORE), k=pool)
        pool_ids = tf.gather(self.catalog_ids, pool_rows)
        pool_text, _ = self.model.text_cache.lookup(pool_ids)  # [B, P, T]
        positions, chosen_valid = rerank.greedy_rerank(
            pool_scores,
            tf.gather(eligible, pool_rows, batch_dims=1),
            pool_text,
            tf.gather(self.catalog_is_tail, pool_rows),
            self._tail_prob(history),
            k,
            mmr_lambda,
            xquad_lambda,
        )
        rows = tf.gather(pool_rows, positions, batch_dims=1)  # [B, k]
        return {
            features.ITEM_IDS: tf.where(chosen_valid, tf.gather(self.catalog_ids, rows), ""),
            features.SCORES: tf.where(
                chosen_valid, tf.gather(pool_scores, positions, batch_dims=1), _EXCLUDED_SCORE
            ),
            features.IS_TAIL: tf.where(
                chosen_valid, tf.gather(self.catalog_is_tail, rows), tf.constant(0, tf.int64)
            ),
            **self._explain(recent, rows, chosen_valid),
        }

    @tf.function(
        input_signature=[
            tf.TensorSpec([None], tf.string, name=features.USER_ID),
            tf.TensorSpec([None, None], tf.string, name=features.HISTORY),
            tf.TensorSpec([None, None], tf.string, name=features.ITEM_IDS),
        ]
    )
    def rank(self, user_id: tf.Tensor, history: tf.Tensor, item_ids: tf.Tensor) -> dict:
        user_id, history, item_ids = same_rows(
            {features.USER_ID: user_id, features.HISTORY: history, features.ITEM_IDS: item_ids}
        ).values()
        query, _ = self._query(user_id, history)  # [B, D]
        candidates, _ = self._item_vectors(item_ids)  # [B, C, D]
        width = tf.shape(candidates)[1]
        flat_query = tf.repeat(query, width, axis=0)  # [B * C, D], row-major like the reshape below
        flat_candidates = tf.reshape(candidates, [-1, tf.shape(candidates)[2]])
        logits = tf.reshape(self.model.ranking_logits(flat_query, flat_candidates), tf.shape(item_ids))
        return {features.SCORES: tf.where(item_ids == "", tf.zeros_like(logits), tf.sigmoid(logits))}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=features.ITEM_IDS)])
    def item_embeddings(self, item_ids: tf.Tensor) -> dict:
        vectors, found = self._item_vectors(item_ids)
        return {features.EMBEDDINGS: vectors, features.FOUND: found}


# ------------------------------------------------------------------------------------ export
def candidate_vectors(
    model: TailTowerModel, catalog: Mapping[str, np.ndarray], batch_size: int
) -> np.ndarray:
    """Candidate embeddings [N, D] of the catalog's transformed features, in batches."""
    return in_batches(model.candidate_embedding, catalog, batch_size, model.config.embedding_dim)


def in_batches(
    embed: Callable[[dict], tf.Tensor], inputs: Mapping[str, np.ndarray], batch_size: int, dim: int
) -> np.ndarray:
    """[R, dim]: `embed` (one traced function) over the rows of `inputs` ({key: [R, ...]}), in batches."""
    encode = tf.function(lambda batch: embed(batch))
    rows = len(next(iter(inputs.values()))) if inputs else 0
    chunks = [
        encode({key: tf.constant(value[lo : lo + batch_size]) for key, value in inputs.items()}).numpy()
        for lo in range(0, rows, batch_size)
    ]
    return np.concatenate(chunks) if chunks else np.zeros([0, dim], np.float32)


def unknown_item_vector(model: TailTowerModel) -> np.ndarray:
    """[D]: the candidate tower on the OOV item id, zero text, no brand/categories (-1), price_z 0."""
    inputs = {
        features.ITEM_INDEX: tf.constant([model.item_vectors.num_items], tf.int64),
        features.BRAND_INDEX: tf.constant([-1], tf.int64),
        features.CATEGORY_INDEX: tf.fill([1, features.MAX_CATEGORIES], tf.constant(-1, tf.int64)),
        features.PRICE_Z: tf.zeros([1]),
    }
    vector = model.candidate_tower(inputs, tf.zeros([1, model.text_cache.dim]))
    return model.normalize_embedding(vector).numpy()[0]


def tail_interaction_share(catalog: Mapping[str, np.ndarray]) -> float:
    """The tail items' share of the catalog's popularity mass, sum exp(ITEM_LOG_PROB) over tail / over all."""
    mass = np.exp(np.asarray(catalog[features.ITEM_LOG_PROB], np.float64).reshape(-1))
    tail = np.asarray(catalog[features.ITEM_IS_TAIL]).reshape(-1) > 0
    return float(mass[tail].sum() / mass.sum())


def new_items(
    catalog: Mapping[str, np.ndarray], num_items: int, seen: np.ndarray | None = None
) -> np.ndarray:
    """[N] bool, `features.IS_NEW` of each catalog item: its ITEM_INDEX is the OOV bucket `num_items`, and
    the data has not `seen` it ([N] bool, `blend.ServedBlend.seen`; None: not known) rated below the
    threshold either: such an item is known and not liked, not new."""
    oov = np.asarray(catalog[features.ITEM_INDEX]).reshape(-1) >= num_items
    return oov if seen is None else oov & ~np.asarray(seen, bool)


def catalog_metadata(
    catalog: Mapping[str, np.ndarray],
    item_metadata: Mapping[str, Sequence],
    num_items: int,
    seen: np.ndarray | None = None,
) -> list[dict]:
    """One `features.CATALOG_METADATA_FIELDS` row per catalog item, in catalog order.

    Args:
      catalog: transformed catalog features (ITEM_ID, ITEM_INDEX, ITEM_IS_TAIL are read).
      item_metadata: TITLE, BRAND (str) and CATEGORIES (list of str) per catalog row (`train.load_catalog`).
      num_items, seen: an item is new (`features.IS_NEW`) as `new_items` says.
    """
    columns = {
        features.ITEM_ID: [item_id.decode() for item_id in np.asarray(catalog[features.ITEM_ID]).reshape(-1)],
        features.TITLE: item_metadata[features.TITLE],
        features.BRAND: item_metadata[features.BRAND],
        features.CATEGORIES: item_metadata[features.CATEGORIES],
        features.IS_TAIL: (np.asarray(catalog[features.ITEM_IS_TAIL]).reshape(-1) > 0).tolist(),
        features.IS_NEW: new_items(catalog, num_items, seen).tolist(),
    }
    sizes = {name: len(values) for name, values in columns.items()}
    if len(set(sizes.values())) != 1:
        raise ValueError(f"catalog metadata columns differ in length: {sizes}")
    return [dict(zip(columns, row, strict=True)) for row in zip(*columns.values(), strict=True)]


def write_blend_summary(served: blend.ServedBlend, model_dir: str) -> str:
    """Writes the served score's chosen mix to <model_dir>/assets.extra/blend.json (for people, reports)."""
    path = os.path.join(model_dir, features.ASSETS_EXTRA_DIR, features.BLEND_SUMMARY_FILE)
    tf.io.gfile.makedirs(os.path.dirname(path))
    with tf.io.gfile.GFile(path, "w") as f:
        f.write(json.dumps(served.summary(), sort_keys=True) + "\n")
    return path


def write_catalog_metadata(rows: Sequence[Mapping], model_dir: str) -> str:
    """Writes `rows` as JSON lines to <model_dir>/assets.extra/catalog.jsonl (aside, then renamed).

    Call it after `tf.saved_model.save`, which owns the rest of the folder. Returns the file's path.
    """
    folder = os.path.join(model_dir, features.ASSETS_EXTRA_DIR)
    tf.io.gfile.makedirs(folder)
    path = os.path.join(folder, features.CATALOG_METADATA_FILE)
    partial = path + ".partial"
    with tf.io.gfile.GFile(partial, "w") as f:
        f.write("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
    tf.io.gfile.rename(partial, path, overwrite=True)
    return path


def read_catalog_ids(model_dir: str) -> list[str]:
    """The item ids of a model folder's catalog metadata (`write_catalog_metadata`), in catalog order."""
    path = os.path.join(model_dir, features.ASSETS_EXTRA_DIR, features.CATALOG_METADATA_FILE)
    with tf.io.gfile.GFile(path) as f:
        return [json.loads(line)[features.ITEM_ID] for line in f if line.strip()]


def serving_signatures(module: ServingModule) -> dict:
    """The five signatures a served tailtower model has, by name."""
    return {
        features.SERVING_DEFAULT_SIGNATURE: module.serve_examples.get_concrete_function(),
        features.TRANSFORM_FEATURES_SIGNATURE: module.transform_features.get_concrete_function(),
        features.RECOMMEND_SIGNATURE: module.recommend.get_concrete_function(),
        features.RANK_SIGNATURE: module.rank.get_concrete_function(),
        features.ITEM_EMBEDDINGS_SIGNATURE: module.item_embeddings.get_concrete_function(),
    }


def save_serving_model(module: ServingModule, output_dir: str) -> None:
    """`tf.saved_model.save` with the five signatures and nothing else traced.

    Keras would also trace every layer's call (each BERT sublayer, several times) into the SavedModel for
    Keras' own loader; no signature uses those functions and TF Serving never reads them, so they are
    skipped as `model.save(save_traces=False)` skips them (tf_keras has no public switch for
    `tf.saved_model.save`). The variables are saved either way.
    """
    start = time.perf_counter()
    signatures = serving_signatures(module)
    traced = time.perf_counter()
    with keras_saved_model_utils.keras_option_scope(save_traces=False, in_tf_saved_model_scope=False):
        tf.saved_model.save(module, output_dir, signatures=signatures)
    logger.info(
        "Traced the serving signatures in %.1f s, saved the SavedModel in %.1f s",
        traced - start,
        time.perf_counter() - traced,
    )


def export_serving_model(
    model: TailTowerModel,
    tf_transform_output: tft.TFTransformOutput,
    catalog: Mapping[str, np.ndarray],
    item_metadata: Mapping[str, Sequence],
    output_dir: str,
    top_k: int,
    served: blend.ServedBlend,
    rerank_pool: int,
    vectors: np.ndarray,
) -> ServingModule:
    """Builds the `ServingModule` and saves it with its five signatures, then the catalog metadata file
    (`catalog_metadata`) into its assets.extra/.

    Args:
      catalog: transformed catalog features, [N, ...] arrays keyed by `trainer.features` names (ITEM_ID
        unique); ITEM_IS_TAIL gives the tail flags, ITEM_INDEX the new ones, ITEM_LOG_PROB the xQuAD prior.
      item_metadata: the raw TITLE, BRAND, CATEGORIES of the same N rows, as `train.load_catalog` returns.
      vectors: [N, D] `candidate_vectors(model, catalog, …)`, the index (`served` was built from them).
    """
    module = ServingModule(
        model,
        tf_transform_output.transform_features_layer(),
        tf_transform_output.raw_feature_spec(),
        catalog[features.ITEM_ID],
        vectors,
        np.asarray(catalog[features.ITEM_IS_TAIL]).reshape(-1),
        new_items(catalog, model.item_vectors.num_items, served.seen),
        unknown_item_vector(model),
        tail_interaction_share(catalog),
        served,
        top_k,
        rerank_pool,
        item_metadata,
    )
    # Checked before saving.
    rows = catalog_metadata(catalog, item_metadata, model.item_vectors.num_items, served.seen)
    save_serving_model(module, output_dir)
    write_catalog_metadata(rows, output_dir)
    write_blend_summary(served, output_dir)
    logger.info(
        "Saved the serving model (%d catalog items, %d tail, %d new, xQuAD tail prior %.3f) to %s",
        len(vectors),
        module.num_tail_items,
        sum(row[features.IS_NEW] for row in rows),
        float(module.tail_prior.numpy()),
        output_dir,
    )
    return module
