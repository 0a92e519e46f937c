"""The serving SavedModel: transform graph + trained towers + the scored item catalog, three signatures.

  serving_default(examples [B] serialized raw tf.Examples, label optional) →
      score [B] (ranking head), top_k_ids [B, K], top_k_scores [B, K], top_k_is_tail [B, K],
      num_tail_items [B] (the catalog's tail size, for TailCoverage@K)
  transform_features(examples [B]) → the transformed features (TFMA slices on item_is_tail)
  recommend(user_id [B], history [B, H] right-padded with "", k scalar int32) →
      item_ids [B, k], scores [B, k], is_tail [B, k]

Retrieval is a brute-force matmul against the candidate vectors of every catalog item, computed once here,
followed by `tf.math.top_k`; the given history is excluded. Only TF core and tensorflow-text ops (the
tokenizer inside the transform graph) are in the graph, so stock TF Serving loads it, and every file it needs
(vocabularies as assets, catalog as variables) is inside the export folder.

Example:
  export_serving_model(model, tft.TFTransformOutput(transform_dir), catalog, "/tmp/serving", top_k=10)
  loaded = tf.saved_model.load("/tmp/serving")
  loaded.signatures["recommend"](user_id=tf.constant(["u1"]), history=tf.constant([["i3", ""]]),
                                 k=tf.constant(5))
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tensorflow_transform as tft  # noqa: E402

from trainer import features  # noqa: E402
from trainer.model import TailTowerModel  # noqa: E402

logger = logging.getLogger(__name__)

FeatureSpec = Mapping[str, tf.io.FixedLenFeature | tf.io.VarLenFeature | tf.io.RaggedFeature]
SCORE = features.SCORE
TOP_K_IDS = features.TOP_K_IDS
TOP_K_SCORES = features.TOP_K_SCORES
TOP_K_IS_TAIL = features.TOP_K_IS_TAIL
NUM_TAIL_ITEMS = features.NUM_TAIL_ITEMS
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
class ServingModule(tf.Module):
    """Holds what the signatures need; its tf.functions are the signatures.

    Args:
      model: the trained model.
      tft_layer: `tf_transform_output.transform_features_layer()`.
      raw_feature_spec: the transform's raw feature spec.
      catalog_ids: [N] unique item ids; candidate_vectors: [N, D]; catalog_is_tail: [N] 0/1.
      top_k: length of the `serving_default` top-K lists.
    """

    def __init__(self, model: TailTowerModel, tft_layer: tf.keras.Model, raw_feature_spec: FeatureSpec,
                 catalog_ids: np.ndarray, candidate_vectors: np.ndarray, catalog_is_tail: np.ndarray,
                 top_k: int):
        super().__init__()
        self.model = model
        self.tft_layer = tft_layer
        self._raw_spec = dict(raw_feature_spec)
        self._parse_spec = optional_raw_spec(raw_feature_spec)
        self._k = top_k
        self.num_tail_items = int(np.sum(catalog_is_tail))
        self.catalog_ids = tf.Variable(np.asarray(catalog_ids, dtype=object), trainable=False)
        self.candidate_vectors = tf.Variable(np.asarray(candidate_vectors, np.float32), trainable=False)
        self.catalog_is_tail = tf.Variable(np.asarray(catalog_is_tail, np.int64), trainable=False)
        self.catalog_rows = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(
                tf.constant(np.asarray(catalog_ids, dtype=object), tf.string),
                tf.range(len(catalog_ids), dtype=tf.int64),
            ),
            default_value=-1,
        )

    def _transform(self, examples: tf.Tensor) -> dict:
        raw = tf.io.parse_example(examples, self._parse_spec)
        return self.tft_layer(with_default_raw_features(raw, self._raw_spec))

    def _top_k(self, query: tf.Tensor, exclude_ids: tf.Tensor, k: tf.Tensor):
        """query [B, D], exclude_ids [B, H] → (ids, scores, is_tail), each [B, min(k, N)]."""
        scores = tf.matmul(query, self.candidate_vectors, transpose_b=True)  # [B, N]
        rows = self.catalog_rows.lookup(exclude_ids)  # [B, H], -1 = not in the catalog / padding
        batch_index = tf.broadcast_to(tf.range(tf.shape(rows, out_type=tf.int64)[0])[:, None], tf.shape(rows))
        hit = rows >= 0
        indices = tf.stack([tf.boolean_mask(batch_index, hit), tf.boolean_mask(rows, hit)], axis=1)
        excluded = tf.scatter_nd(indices, tf.ones([tf.shape(indices)[0]]), tf.shape(scores, tf.int64)) > 0
        scores = tf.where(excluded, _EXCLUDED_SCORE, scores)
        k = tf.minimum(tf.cast(k, tf.int32), tf.shape(scores)[1])
        top_scores, top_rows = tf.math.top_k(scores, k=k)
        return (tf.gather(self.catalog_ids, top_rows), top_scores, tf.gather(self.catalog_is_tail, top_rows))

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
    def serve_examples(self, examples: tf.Tensor) -> dict:
        transformed = self._transform(examples)
        query = self.model.query_embedding(transformed)
        candidate = self.model.candidate_embedding(transformed)
        score = tf.sigmoid(self.model.ranking_logits(query, candidate))
        ids, scores, is_tail = self._top_k(query, transformed[features.HISTORY], self._k)
        return {
            SCORE: score,
            TOP_K_IDS: ids,
            TOP_K_SCORES: scores,
            TOP_K_IS_TAIL: is_tail,
            NUM_TAIL_ITEMS: tf.fill(tf.shape(score), tf.constant(self.num_tail_items, tf.int64)),
        }

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
    def transform_features(self, examples: tf.Tensor) -> dict:
        return {name: _dense(value) for name, value in self._transform(examples).items()}

    @tf.function(input_signature=[
        tf.TensorSpec([None], tf.string, name="user_id"),
        tf.TensorSpec([None, None], tf.string, name="history"),
        tf.TensorSpec([], tf.int32, name="k"),
    ])
    def recommend(self, user_id: tf.Tensor, history: tf.Tensor, k: tf.Tensor) -> dict:
        raw = {
            features.USER_ID: _as_raw(user_id, self._raw_spec[features.USER_ID]),
            features.HISTORY: _as_raw(history, self._raw_spec[features.HISTORY]),
        }
        transformed = self.tft_layer(with_default_raw_features(raw, self._raw_spec))
        ids, scores, is_tail = self._top_k(self.model.query_embedding(transformed), history, k)
        return {"item_ids": ids, "scores": scores, "is_tail": is_tail}


# ------------------------------------------------------------------------------------ export
def candidate_vectors(model: TailTowerModel, catalog: Mapping[str, np.ndarray],
                      batch_size: int) -> np.ndarray:
    """Candidate embeddings [N, D] of the catalog's transformed features, in batches."""
    encode = tf.function(lambda batch: model.candidate_embedding(batch))
    n = len(catalog[features.ITEM_ID])
    chunks = [
        encode({key: tf.constant(value[lo:lo + batch_size]) for key, value in catalog.items()}).numpy()
        for lo in range(0, n, batch_size)
    ]
    return np.concatenate(chunks) if chunks else np.zeros([0, model.config.embedding_dim], np.float32)


def export_serving_model(model: TailTowerModel, tf_transform_output: tft.TFTransformOutput,
                         catalog: Mapping[str, np.ndarray], output_dir: str, top_k: int,
                         batch_size: int = 512) -> ServingModule:
    """Scores the catalog, builds the `ServingModule` and saves it with its three signatures.

    Args:
      catalog: transformed catalog features, [N, ...] arrays keyed by `trainer.features` names (ITEM_ID
        unique); ITEM_IS_TAIL gives the tail flags.
    """
    vectors = candidate_vectors(model, catalog, batch_size)
    module = ServingModule(
        model,
        tf_transform_output.transform_features_layer(),
        tf_transform_output.raw_feature_spec(),
        catalog[features.ITEM_ID],
        vectors,
        np.asarray(catalog[features.ITEM_IS_TAIL]).reshape(-1),
        top_k,
    )
    signatures = {
        "serving_default": module.serve_examples.get_concrete_function(),
        "transform_features": module.transform_features.get_concrete_function(),
        "recommend": module.recommend.get_concrete_function(),
    }
    tf.saved_model.save(module, output_dir, signatures=signatures)
    logger.info("Saved the serving model (%d catalog items, %d tail) to %s", len(vectors),
                module.num_tail_items, output_dir)
    return module
